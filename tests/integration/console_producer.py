"""Kafka's own console producer (`org.apache.kafka:kafka-tools`), resolved from Maven Central
like the broker and run with the machine's Java: a client no one here wrote."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from devstack.kafka import resolve_jars
from devstack.settings import StackSettings

POM = Path(__file__).with_name("kafka-tools-pom.xml")


def ensure_tools(settings: StackSettings | None = None) -> Path:
    """The kafka-tools jars of the broker's version, resolved once with mvn (as the broker's
    are, `devstack/kafka.py`) into the same cache: KAFKA_LIBS_CACHE/<version>/tools."""
    settings = settings or StackSettings()
    version = settings.kafka_version
    libs = Path(settings.kafka_libs_cache).expanduser() / version / "tools"
    if any(libs.glob("kafka-tools-*.jar")):
        return libs
    return resolve_jars(POM, version, libs, "kafka-tools-*.jar")


def console_produce(
    libs: Path,
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes, bytes]],
    *,
    codec: str = "none",
) -> None:
    """Send (key, value) pairs, one per line, with `--compression-codec codec`; values must
    not contain a newline or a tab (JSON from orjson has neither raw)."""
    lines = b"".join(key + b"\t" + value + b"\n" for key, value in messages)
    subprocess.run(
        [
            shutil.which("java") or "java",
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",  # a short-lived client: C1 only, less start-up CPU
            "-cp",
            f"{libs}/*",
            "org.apache.kafka.tools.ConsoleProducer",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--compression-codec",
            codec,
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=\t",
            "--producer-property",
            "acks=all",
        ],
        input=lines,
        check=True,
        capture_output=True,
        timeout=120,
    )
