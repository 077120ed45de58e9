"""The GPU config's model_warmup and TensorRT parameters, loaded by the real tritonserver.

No GPU here, so the config is the GPU one with the instance kind switched to CPU: Triton must
accept the warm-up block, read `warmup/text` and run every sample through model.py before READY.
Triton's own verbose log (switched on through its log-settings API) shows each sample run.

A broken warm-up input is refused by `trainer publish` before Triton sees it: sent to Triton,
a failing warm-up sample crashed tritonserver 2.51 (SIGSEGV) in 2 of 2 tries here.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from contracts import tensors
from contracts.triton_request import text_input
from devstack.local import LocalStack
from trainer.publish import PublishError, config_override, publish
from trainer.repository import gpu_render_options, render_config, write_warmup_text

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL = "review_sentiment"
CONFIG_NAME = "gpu-on-cpu"


def warm_config(trt_cache: Path) -> str:
    options = gpu_render_options(trt_cache_dir=str(trt_cache))
    options["instance_kind"] = "KIND_CPU"
    return render_config(MODEL, **options)


def infer_one(client: grpcclient.InferenceServerClient) -> np.ndarray:
    return client.infer(MODEL, [text_input(["great film"])]).as_numpy(tensors.PROBS)


def warmup_runs(log: Path, since: int) -> list[str]:
    """Names of the warm-up samples Triton logged as run after byte `since` of its log."""
    with log.open("rb") as handle:
        handle.seek(since)
        text = handle.read().decode("utf-8", "replace")
    return re.findall(r"is running warmup sample '([^']+)'", text)


def test_warmup_samples_run_in_real_triton_before_ready(
    stack: LocalStack, model_repository: Path, tmp_path: Path
) -> None:
    model_dir = model_repository / MODEL
    config = warm_config(tmp_path / "trt")
    parsed = text_format.Parse(config, model_config_pb2.ModelConfig())
    expected = sorted(sample.name for sample in parsed.model_warmup)
    assert expected == ["text_batch_1", "text_batch_64"]
    client = grpcclient.InferenceServerClient(stack.settings.triton_url)
    log = stack.triton.log_path
    try:
        write_warmup_text(model_dir)
        since = log.stat().st_size
        client.update_log_settings({"log_verbose_level": 1})
        client.load_model(
            MODEL,
            config=json_format.MessageToJson(parsed, preserving_proto_field_name=True),
            client_timeout=120,
        )
        assert client.is_model_ready(MODEL)
        # Each instance runs each sample once; the log is written as it happens.
        deadline = time.monotonic() + 10
        while sorted(set(warmup_runs(log, since))) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(set(warmup_runs(log, since))) == expected
        assert infer_one(client).shape == (1, 2)
    finally:
        client.update_log_settings({"log_verbose_level": 0})
        client.load_model(MODEL, config=config_override(model_dir, config_name=""))
        client.close()


def test_publish_refuses_a_broken_warmup_input_and_the_served_version_keeps_serving(
    stack: LocalStack, model_repository: Path, tmp_path: Path
) -> None:
    model_dir = model_repository / MODEL
    write_warmup_text(model_dir)
    (model_dir / "configs").mkdir(exist_ok=True)
    (model_dir / "configs" / f"{CONFIG_NAME}.pbtxt").write_text(warm_config(tmp_path / "trt"))
    client = grpcclient.InferenceServerClient(stack.settings.triton_url)
    try:
        before = infer_one(client)
        # Length prefix larger than the data that follows.
        (model_dir / "warmup" / "text").write_bytes((1000).to_bytes(4, "little") + b"short")
        with pytest.raises(PublishError, match="says 1000 bytes, 5 follow"):
            publish(
                MODEL,
                model_repository,
                stack.settings.triton_url,
                timeout_s=60,
                config_name=CONFIG_NAME,
            )
        assert client.is_server_live()
        assert client.is_model_ready(MODEL)
        np.testing.assert_allclose(infer_one(client), before, atol=1e-6)
    finally:
        write_warmup_text(model_dir)
        (model_dir / "configs" / f"{CONFIG_NAME}.pbtxt").unlink()
        client.close()
