"""The GPU config's model_warmup and TensorRT parameters, loaded by the real tritonserver.

No GPU here, so the config is the GPU one with the instance kind switched to CPU: Triton must
accept the warm-up block, read `warmup/text` and run it through model.py before READY.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from trainer.publish import config_override
from trainer.repository import gpu_render_options, render_config, write_warmup_text

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL = "review_sentiment"


def warm_config(trt_cache: Path) -> str:
    options = gpu_render_options(trt_cache_dir=str(trt_cache))
    options["instance_kind"] = "KIND_CPU"
    config = text_format.Parse(render_config(MODEL, **options), model_config_pb2.ModelConfig())
    assert len(config.model_warmup) == 2
    return json_format.MessageToJson(config, preserving_proto_field_name=True)


def test_warmup_runs_in_real_triton_and_a_broken_warmup_input_refuses_the_load(
    stack, model_repository: Path, tmp_path: Path
) -> None:
    model_dir = model_repository / MODEL
    client = grpcclient.InferenceServerClient(stack.settings.triton_url)
    try:
        write_warmup_text(model_dir)
        client.load_model(MODEL, config=warm_config(tmp_path / "trt"), client_timeout=120)
        assert client.is_model_ready(MODEL)
        text = np.array([[b"great film"]], dtype=np.object_)
        request = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        request.set_data_from_numpy(text)
        probs = client.infer(MODEL, [request]).as_numpy("PROBS")
        assert probs.shape == (1, 2)

        # Length prefix larger than the data: Triton must fail the warm-up, so the load fails.
        (model_dir / "warmup" / "text").write_bytes((1000).to_bytes(4, "little") + b"short")
        with pytest.raises(InferenceServerException):
            client.load_model(MODEL, config=warm_config(tmp_path / "trt"), client_timeout=120)
    finally:
        write_warmup_text(model_dir)
        client.load_model(MODEL, config=config_override(model_dir, config_name=""))
        client.close()
