"""Make a running Triton (explicit model-control mode) serve one version of a model.

The load always carries config.pbtxt as an explicit config override, because after any earlier
override a plain `load_model` keeps the old policy instead of re-reading the file. Without a
version the file's own policy (`latest 1`) applies, which also undoes an earlier pin; with a
version the policy is pinned to `specific: [version]` (rollback). Triton loads the new version
before it unloads the old one, so traffic does not stop.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import tritonclient.grpc as grpcclient
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from contracts import tensors
from contracts.triton_request import requested_outputs, text_input
from trainer.repository import (
    RepositoryError,
    check_warmup_inputs,
    latest_version,
    list_versions,
    model_config_path,
    model_path,
)

log = structlog.get_logger(__name__)

WARMUP_TEXT = "warm-up request from trainer publish"


class PublishError(RuntimeError):
    """The version could not be made to serve; the message carries Triton's reason."""


@dataclass(frozen=True)
class Published:
    """What serves now, as confirmed by a warm-up inference."""

    model: str
    version: int
    labels: list[str]
    load_seconds: float
    warmup_seconds: float


def config_override(
    model_dir: Path,
    pin_version: int | Sequence[int] | None = None,
    config_name: str = "",
) -> str:
    """The model's config as Triton's JSON, optionally pinned to some versions.

    A load with a config override ignores `--model-config-name`, so the override must come from
    the same file the server would read: `configs/<config_name>.pbtxt` if present (the
    caller passes `TrainerSettings.model_config_name`).
    """
    config_path = model_config_path(model_dir, config_name)
    if not config_path.is_file():
        raise PublishError(f"{config_path} not found")
    config = text_format.Parse(
        config_path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig()
    )
    warmup_files = {
        data.input_data_file
        for sample in config.model_warmup
        for data in sample.inputs.values()
        if data.input_data_file
    }
    try:
        check_warmup_inputs(model_dir, sorted(warmup_files))
    except RepositoryError as exc:
        raise PublishError(f"refusing to load {model_dir.name!r}: {exc}") from exc
    if pin_version is not None:
        pins = [pin_version] if isinstance(pin_version, int) else sorted(set(pin_version))
        config.version_policy.Clear()
        config.version_policy.specific.versions.extend(pins)
    return json_format.MessageToJson(config, preserving_proto_field_name=True)


def publish(
    model: str,
    repository: Path,
    triton_url: str,
    version: int | None = None,
    timeout_s: float = 120.0,
    tls: Mapping[str, Any] | None = None,
    config_name: str = "",
) -> Published:
    """Load `version` (default: newest on disk) of `model` and prove it answers.

    `repository` is this machine's view of Triton's model repository (for the version list and
    config.pbtxt); Triton itself reads the files from its own path to the same directory.
    """
    model_dir = model_path(Path(repository), model)
    pin = version
    if version is None:
        version = latest_version(model_dir)
        if version is None:
            raise PublishError(f"{model_dir} has no version directories; train one first")
    elif version not in list_versions(model_dir):
        raise PublishError(
            f"version {version} not found in {model_dir}: {list_versions(model_dir)}"
        )

    client = grpcclient.InferenceServerClient(triton_url, **(tls or {}))
    try:
        try:
            client.is_server_live(client_timeout=10)
        except InferenceServerException as exc:
            raise PublishError(f"Triton at {triton_url} is not reachable: {exc}") from exc

        started = time.perf_counter()
        try:
            client.load_model(
                model, config=config_override(model_dir, pin, config_name), client_timeout=timeout_s
            )
        except InferenceServerException as exc:
            raise PublishError(
                f"Triton refused version {version} of {model!r}: {exc.message()}"
            ) from exc
        _wait_ready(client, model, version, deadline=started + timeout_s)
        load_seconds = time.perf_counter() - started

        started = time.perf_counter()
        labels = _warm_up(client, model, version)
        warmup_seconds = time.perf_counter() - started
    finally:
        client.close()

    result = Published(model, version, labels, round(load_seconds, 3), round(warmup_seconds, 3))
    log.info("publish.serving", **result.__dict__)
    return result


def _wait_ready(
    client: grpcclient.InferenceServerClient, model: str, version: int, deadline: float
) -> None:
    """load_model normally returns once loaded; poll anyway so a lagging server is tolerated."""
    while True:
        try:
            if client.is_model_ready(model, str(version)):
                return
        except InferenceServerException as exc:
            log.debug("publish.not_ready_yet", error=str(exc))
        if time.perf_counter() > deadline:
            raise PublishError(f"version {version} of {model!r} not ready before the deadline")
        time.sleep(0.1)


def _warm_up(client: grpcclient.InferenceServerClient, model: str, version: int) -> list[str]:
    """One real inference on the exact version: first-request costs are paid here, not by users."""
    outputs = requested_outputs((tensors.PROBS, tensors.LABELS))
    try:
        result = client.infer(
            model, [text_input([WARMUP_TEXT])], model_version=str(version), outputs=outputs
        )
    except InferenceServerException as exc:
        raise PublishError(f"version {version} of {model!r} loaded but failed: {exc}") from exc
    probs = result.as_numpy(tensors.PROBS)
    labels = [label.decode("utf-8") for label in result.as_numpy(tensors.LABELS)[0]]
    if probs is None or probs.shape != (1, len(labels)):
        raise PublishError(f"unexpected warm-up answer from {model!r} v{version}: {probs!r}")
    return labels


def serve_versions(
    model: str,
    repository: Path,
    triton_url: str,
    versions: Sequence[int],
    timeout_s: float = 120.0,
    tls: Mapping[str, Any] | None = None,
    config_name: str = "",
) -> dict[int, list[str]]:
    """Make Triton serve exactly `versions` of `model` (policy `specific`); returns their labels.

    Every version is warmed up with a real inference before this returns. Versions no longer
    wanted are unloaded by Triton after their in-flight requests finish; because unload returns
    before teardown is done, the repository index is polled until they are gone. A version
    that fails to load raises PublishError and leaves what was serving untouched.
    """
    model_dir = model_path(Path(repository), model)
    missing = sorted(set(versions) - set(list_versions(model_dir)))
    if missing:
        raise PublishError(f"version(s) {missing} not found in {model_dir}")
    client = grpcclient.InferenceServerClient(triton_url, **(tls or {}))
    deadline = time.perf_counter() + timeout_s
    try:
        try:
            client.load_model(
                model,
                config=config_override(model_dir, versions, config_name),
                client_timeout=timeout_s,
            )
        except InferenceServerException as exc:
            raise PublishError(
                f"Triton refused {model!r} versions {sorted(versions)}: {exc.message()}"
            ) from exc
        labels = {}
        for version in versions:
            _wait_ready(client, model, version, deadline=deadline)
            labels[version] = _warm_up(client, model, version)
        _wait_unloaded(client, model, keep=set(versions), deadline=deadline)
    finally:
        client.close()
    log.info("publish.serving_versions", model=model, versions=sorted(versions))
    return labels


def _wait_unloaded(
    client: grpcclient.InferenceServerClient, model: str, keep: set[int], deadline: float
) -> None:
    while True:
        index = client.get_model_repository_index(as_json=True).get("models", [])
        lingering = [
            m["version"]
            for m in index
            if m.get("name") == model
            and m.get("state") in ("READY", "UNLOADING")
            and int(m.get("version", 0) or 0) not in keep
        ]
        if not lingering:
            return
        if time.perf_counter() > deadline:
            raise PublishError(f"{model!r} versions {lingering} still loaded after the deadline")
        time.sleep(0.1)
