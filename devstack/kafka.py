"""A single-node Apache Kafka broker (KRaft, no ZooKeeper) run straight from Maven jars.

No Docker on the dev machines: the broker jars are resolved once with mvn into a cache outside
the clone, and the broker runs as a plain `java` child process with its data in the state dir.

With `KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT` the client listener requires SASL (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512) with `KAFKA_SASL_USERNAME` / `KAFKA_SASL_PASSWORD` as the one user;
the SCRAM credentials are stored when the storage is formatted. The default stays PLAINTEXT.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient

from devstack.process import Command, ManagedProcess
from devstack.settings import StackSettings
from devstack.state import HOST, StackError, StateFile, free_ports, port_free, port_open
from worker.security import kafka_client_kwargs
from worker.settings import WorkerSettings

log = structlog.get_logger(__name__)

POM = Path(__file__).with_name("kafka-pom.xml")
NODE_ID = 1
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")

LOG4J2_YAML = """\
Configuration:
  name: labelstream-local-kafka
  shutdownHook: disable
  Appenders:
    Console:
      name: STDOUT
      target: SYSTEM_OUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: state.change.logger
        level: WARN
      - name: org.apache.kafka.clients
        level: WARN
"""


class LocalKafka(ManagedProcess):
    """One broker+controller node on loopback; ports and pid live in the shared state file."""

    name = "kafka"
    title = "Kafka"
    # SIGTERM is a controlled shutdown that flushes the logs (the ManagedProcess default).
    start_timeout = 90.0
    stop_timeout = 60.0
    poll_interval = 0.2

    def __init__(
        self, settings: WorkerSettings, state: StateFile, stack: StackSettings | None = None
    ) -> None:
        self.stack_settings = stack or StackSettings()
        super().__init__(settings, state)

    def _restore(self, saved: Mapping[str, Any]) -> None:
        self.data_dir = self.dir / "data"
        self.port: int | None = saved.get("port")
        self.controller_port: int | None = saved.get("controller_port")

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise StackError("Kafka has no port yet: start it first")
        return f"{HOST}:{self.port}"

    @property
    def libs_dir(self) -> Path:
        cache = Path(self.stack_settings.kafka_libs_cache).expanduser()
        return cache / self.stack_settings.kafka_version / "libs"

    async def start(self, timeout: float = start_timeout) -> str:
        """Start the broker (no-op if ours already runs) and wait until clients can use it."""
        await self._ensure_running(timeout)
        return self.bootstrap_servers

    async def _prepare(self) -> tuple[Command, None]:
        java = _require("java", "Java 17+, e.g. `apt-get install openjdk-17-jre-headless`")
        libs = await asyncio.to_thread(self.ensure_libs)
        self._choose_ports()
        self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            await asyncio.to_thread(self._format, java, libs)
        cmd: list[str | os.PathLike[str]] = [
            java,
            f"-Xmx{self.stack_settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.yaml'}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            self.dir / "server.properties",
        ]
        return cmd, None

    def _ready_fields(self) -> dict[str, Any]:
        return {"bootstrap": self.bootstrap_servers, "pid": self.pid}

    async def healthy(self) -> bool:
        """True when the broker answers a metadata request and lists itself."""
        if self.port is None or not port_open(self.port):
            return False
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            request_timeout_ms=5000,
            **kafka_client_kwargs(self.settings),
        )
        try:
            with _quiet_aiokafka():
                await admin.start()
                cluster = await admin.describe_cluster()
            return any(b["node_id"] == NODE_ID for b in cluster["brokers"])
        except Exception:
            return False
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    def ensure_libs(self) -> Path:
        """Resolve the broker jars once; a half-finished download is never used."""
        libs = self.libs_dir
        if libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")):
            return libs
        log.info(
            "resolving kafka jars with mvn",
            version=self.stack_settings.kafka_version,
            into=str(libs),
        )
        return resolve_jars(POM, self.stack_settings.kafka_version, libs, "kafka_2.13-*.jar")

    def _choose_ports(self) -> None:
        """Keep the recorded ports (the formatted controller quorum remembers its endpoint)."""
        if self.port is None or self.controller_port is None:
            self.port, self.controller_port = free_ports(2)
            self._save()
        for port in (self.port, self.controller_port):
            if not port_free(port):
                raise StackError(
                    f"Kafka port {port} is in use by another process; stop it or "
                    f"delete {self.state.path} and {self.dir} for a fresh broker"
                )

    @property
    def sasl(self) -> bool:
        """Whether the client listener requires SASL (the settings' protocol says so)."""
        protocol = self.settings.kafka_security_protocol
        if protocol not in ("PLAINTEXT", "SASL_PLAINTEXT"):
            raise StackError(f"the local Kafka serves PLAINTEXT or SASL_PLAINTEXT, not {protocol}")
        return protocol == "SASL_PLAINTEXT"

    def _listener_protocol(self) -> str:
        """Security protocol of the client (and inter-broker) listener."""
        return "SASL_PLAINTEXT" if self.sasl else "PLAINTEXT"

    def _listener_props(self) -> dict[str, str]:
        """Broker properties that protocol needs (a TLS test adds its keystore here)."""
        return self._sasl_props() if self.sasl else {}

    def _sasl_props(self) -> dict[str, str]:
        """One user, known to PLAIN (JAAS) and SCRAM (stored at format); the broker's own
        inter-broker connection logs in as that user with PLAIN."""
        user = self.settings.kafka_sasl_username
        secret = self.settings.kafka_sasl_password
        assert user and secret  # KafkaSecurity requires both for SASL_*
        password = secret.get_secret_value()
        plain = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{user}" password="{password}" user_{user}="{password}";'
        )
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS + ("PLAIN",)),
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": plain,
            **{
                f"listener.name.sasl_plaintext.{m.lower()}.sasl.jaas.config": scram
                for m in SCRAM_MECHANISMS
            },
        }

    def _write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        client = self._listener_protocol()
        props = {
            "process.roles": "broker,controller",
            "node.id": NODE_ID,
            "controller.quorum.bootstrap.servers": f"{HOST}:{self.controller_port}",
            "listeners": f"{client}://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"{client}://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": client,
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{client}:{client}",
            "log.dirs": self.data_dir,
            "num.partitions": self.settings.topic_partitions,
            "offsets.topic.replication.factor": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            **self._listener_props(),
        }
        text = "".join(f"{key}={value}\n" for key, value in props.items())
        config = self.dir / "server.properties"
        config.touch(mode=0o600)
        config.chmod(0o600)  # it may hold the SASL password
        config.write_text(text)
        (self.dir / "log4j2.yaml").write_text(LOG4J2_YAML)

    def _format(self, java: str, libs: Path) -> None:
        """Format storage once; a restart keeps the data dir and therefore the topics."""
        cluster_id = _cluster_id()
        _run(
            [
                java,
                "-Xmx256m",
                "-cp",
                f"{libs}/*",
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id,
                "-c",
                str(self.dir / "server.properties"),
                *self._scram_users(),
            ],
            secrets=self._secrets(),
        )
        log.info("kafka storage formatted", cluster_id=cluster_id, data=str(self.data_dir))

    def _secrets(self) -> tuple[str, ...]:
        secret = self.settings.kafka_sasl_password
        return (secret.get_secret_value(),) if self.sasl and secret else ()

    def _scram_users(self) -> list[str]:
        """`--add-scram` arguments: SCRAM credentials live in the cluster metadata."""
        if not self.sasl:
            return []
        user = self.settings.kafka_sasl_username
        secret = self.settings.kafka_sasl_password
        assert user and secret
        password = secret.get_secret_value()
        return [
            arg
            for m in SCRAM_MECHANISMS
            for arg in ("--add-scram", f"{m}=[name={user},password={password}]")
        ]

    def _state_fields(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "controller_port": self.controller_port,
            "bootstrap_servers": f"{HOST}:{self.port}",
        }


def _cluster_id() -> str:
    """What `StorageTool random-uuid` prints (URL-safe base64 UUID), without a second JVM."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


def resolve_jars(pom: Path, version: str, libs: Path, marker: str) -> Path:
    """`mvn dependency:copy-dependencies` of `pom` at Kafka `version` into `libs`, through a
    temporary folder so a half-finished download is never used; `marker` proves success."""
    mvn = _require("mvn", "Apache Maven, e.g. `apt-get install maven`")
    libs.parent.mkdir(parents=True, exist_ok=True)
    tmp = libs.with_name(f"{libs.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not any(tmp.glob(marker)):
        shutil.rmtree(tmp, ignore_errors=True)
        output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
        output = "\n".join(output.splitlines()[-30:])
        raise StackError(
            f"mvn could not resolve {pom.name} at Kafka {version} "
            f"(exit {result.returncode}); command: {' '.join(cmd)}\n{output}"
        )
    try:
        tmp.rename(libs)
    except OSError:
        # Another process finished the same download first; use theirs.
        shutil.rmtree(tmp, ignore_errors=True)
    return libs


def _require(tool: str, what: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise StackError(f"`{tool}` not found on PATH: the local Kafka needs {what}")
    return path


def _run(cmd: list[str], secrets: tuple[str, ...] = ()) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        message = (
            f"{' '.join(cmd)} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )
        for secret in secrets:
            message = message.replace(secret, "**********")
        raise StackError(message)
    return result.stdout


@contextlib.contextmanager
def _quiet_aiokafka():
    """Connection-refused noise from aiokafka is expected while polling a starting broker."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
