"""The embedded local stack with real processes: Kafka (KRaft) and Triton in a tmp state dir.

Tests run in order on one stack; each service is started and stopped by pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from devstack import LocalStack, StackError
from devstack.state import pid_alive, port_open
from worker.client import produce as produce_messages
from worker.client import read_topics
from worker.settings import WorkerSettings
from worker.topics import topic_names

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(300),
]

PARTITIONS = 3

ECHO_CONFIG = """\
name: "echo"
backend: "python"
max_batch_size: 8
input [{ name: "IN", data_type: TYPE_INT32, dims: [1] }]
output [{ name: "OUT", data_type: TYPE_INT32, dims: [1] }]
instance_group [{ kind: KIND_CPU, count: 1 }]
"""

ECHO_MODEL = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())]) for r in requests]
"""


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> WorkerSettings:
    root = tmp_path_factory.mktemp("stack")
    echo = root / "models" / "echo"
    (echo / "1").mkdir(parents=True)
    (echo / "config.pbtxt").write_text(ECHO_CONFIG)
    (echo / "1" / "model.py").write_text(ECHO_MODEL)
    return WorkerSettings(
        state_dir=root / "state", model_repository=root / "models", topic_partitions=PARTITIONS
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(settings):
    began = time.monotonic()
    stack = LocalStack(settings)
    await stack.up()
    print(f"stack up in {time.monotonic() - began:.1f}s")
    try:
        yield stack
    finally:
        await stack.down()
        for pid in (stack.kafka.pid, stack.triton.pid):
            assert not pid_alive(pid)


async def produce(bootstrap: str, topic: str, value: bytes) -> None:
    await produce_messages(bootstrap, topic, [(value, value)])


async def consume_until(bootstrap: str, topic: str, value: bytes, timeout: float = 30) -> bool:
    records = await read_topics(bootstrap, [topic], timeout_s=timeout)
    return any(record.value == value for record in records)


def http_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/v2/health/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def model_ready(base_url: str, model: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/v2/models/{model}/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def stack_cli(settings: WorkerSettings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the launcher's command line (`labelstream-stack ...`) in a fresh interpreter, as a
    user would."""
    env = {
        **os.environ,
        "STATE_DIR": str(settings.state_dir),
        "MODEL_REPOSITORY": str(settings.model_repository),
        "LOG_FORMAT": "json",
    }
    return subprocess.run(
        [sys.executable, "-m", "devstack", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_up_creates_topics_with_partitions(stack, settings):
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap_servers)
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics(topic_names(settings))}
        registry_config = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.registry_topic)]
        )
    finally:
        await admin.close()
    assert set(described) == set(topic_names(settings))
    for name, topic in described.items():
        expected = 1 if name == settings.registry_topic else PARTITIONS
        assert len(topic["partitions"]) == expected, name
        assert all(p["leader"] == 1 for p in topic["partitions"])
    entries = {e[0]: e[1] for e in registry_config[0].resources[0][4]}
    assert entries["cleanup.policy"] == "compact"


async def test_up_again_is_idempotent(stack):
    pids = (stack.kafka.pid, stack.triton.pid)
    addresses = stack.addresses
    assert await stack.up() == addresses
    assert (stack.kafka.pid, stack.triton.pid) == pids


async def test_kafka_round_trip(stack, settings):
    value = f"round-trip-{uuid.uuid4()}".encode()
    topic = settings.routes[0].source
    await produce(stack.bootstrap_servers, topic, value)
    assert await consume_until(stack.bootstrap_servers, topic, value)


async def test_triton_ready(stack):
    assert http_ready(stack.triton_http_url)
    with urllib.request.urlopen(f"{stack.triton_http_url}/v2", timeout=2) as resp:
        assert json.load(resp)["name"] == "triton"
    assert stack.triton_grpc_url.startswith("127.0.0.1:")


async def test_missing_model_fails_clearly(stack):
    with pytest.raises(StackError, match="no_such_model"):
        await stack.triton.load_model("no_such_model")
    assert "no_such_model" not in stack.triton.models


async def test_load_model(stack):
    began = time.monotonic()
    await stack.triton.load_model("echo")
    print(f"echo model loaded in {time.monotonic() - began:.2f}s")
    assert model_ready(stack.triton_http_url, "echo")
    assert stack.state.section("triton")["models"] == ["echo"]


async def test_triton_restart_keeps_address_and_models(stack):
    old_pid, grpc, http = stack.triton.pid, stack.triton_grpc_url, stack.triton_http_url
    began = time.monotonic()
    await stack.triton.stop()
    stopped = time.monotonic()
    assert not pid_alive(old_pid)
    assert not http_ready(http)
    await stack.triton.start()
    print(f"triton stop {stopped - began:.2f}s, start {time.monotonic() - stopped:.2f}s")
    assert stack.triton.pid != old_pid
    assert (stack.triton_grpc_url, stack.triton_http_url) == (grpc, http)
    assert http_ready(http)
    assert model_ready(http, "echo")
    assert stack.state.section("triton")["pid"] == stack.triton.pid


async def test_kafka_restart_keeps_messages(stack, settings):
    value = f"durable-{uuid.uuid4()}".encode()
    topic = settings.deadletter_topic
    bootstrap, old_pid = stack.bootstrap_servers, stack.kafka.pid
    await produce(bootstrap, topic, value)
    began = time.monotonic()
    await stack.kafka.stop()
    stopped = time.monotonic()
    assert not pid_alive(old_pid)
    assert not port_open(stack.kafka.port)
    await stack.kafka.start()
    print(f"kafka stop {stopped - began:.2f}s, start {time.monotonic() - stopped:.2f}s")
    assert stack.bootstrap_servers == bootstrap
    assert stack.kafka.pid != old_pid
    assert await consume_until(bootstrap, topic, value)


async def test_status_and_down_from_another_process(stack):
    status = await asyncio.to_thread(stack_cli, stack.base_settings, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    pids = [stack.kafka.pid, stack.triton.pid]
    ports = [stack.kafka.port, stack.triton.http_port, stack.triton.grpc_port]
    down = await asyncio.to_thread(stack_cli, stack.base_settings, "down")
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in pids)
    assert not any(port_open(port) for port in ports)
    status = await asyncio.to_thread(stack_cli, stack.base_settings, "status")
    assert status.returncode == 1
    saved = stack.state.load()
    assert saved["kafka"]["pid"] is None and saved["triton"]["pid"] is None
