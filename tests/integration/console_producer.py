"""Kafka's own console producer (`org.apache.kafka:kafka-tools`), resolved from Maven Central
like the broker and run with the machine's Java: a client no one here wrote."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

POM = Path(__file__).with_name("kafka-tools-pom.xml")
CACHE = Path.home() / ".cache" / "labelstream" / "kafka-tools"


def ensure_tools(version: str) -> Path:
    """The kafka-tools jars of `version`, resolved once into a cache outside the clone."""
    libs = CACHE / version
    if any(libs.glob("kafka-tools-*.jar")):
        return libs
    tmp = libs.with_name(f"{version}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(
        [
            shutil.which("mvn") or "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ],
        check=True,
        capture_output=True,
    )
    libs.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(libs)
    except OSError:  # another run finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return libs


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
