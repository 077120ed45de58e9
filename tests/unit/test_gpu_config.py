"""GPU serving without a GPU: config rendering, warm-up input, publish's config, providers."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from trainer import repository as repo
from trainer.publish import PublishError, config_override

REPO_ROOT = Path(__file__).resolve().parents[2]
GPU = model_config_pb2.ModelInstanceGroup.KIND_GPU


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_gpu_config_has_gpu_instances_tensorrt_and_warmup_at_both_batch_ends() -> None:
    config = parse(repo.render_config("news_topic", **repo.gpu_render_options(instance_count=2)))
    assert [(g.kind, g.count) for g in config.instance_group] == [(GPU, 2)]
    assert config.parameters["ENABLE_TENSORRT"].string_value == "true"
    assert config.parameters["TRT_CACHE_DIR"].string_value == "/trt-cache"
    assert [(w.batch_size, w.inputs["TEXT"].input_data_file) for w in config.model_warmup] == [
        (1, repo.WARMUP_FILE),
        (64, repo.WARMUP_FILE),
    ]
    text = config.model_warmup[0].inputs["TEXT"]
    assert text.data_type == model_config_pb2.TYPE_STRING
    assert list(text.dims) == [1]


def test_cpu_config_is_unchanged_without_warmup() -> None:
    assert "model_warmup" not in repo.render_config("news_topic")
    assert not parse(repo.render_config("news_topic")).model_warmup


def test_warmup_text_is_one_length_prefixed_string_element(tmp_path: Path) -> None:
    path = repo.write_warmup_text(tmp_path, "héllo")
    data = path.read_bytes()
    assert path == tmp_path / "warmup" / "text"
    assert int.from_bytes(data[:4], "little") == len("héllo".encode()) == len(data) - 4
    assert data[4:].decode() == "héllo"


@pytest.mark.parametrize("name", ["news_topic", "review_sentiment"])
def test_committed_gpu_configs_match_the_renderer(name: str, tmp_path: Path) -> None:
    """`trainer gpu-config` output is what the compose file's Triton serves."""
    expected = repo.write_gpu_config(tmp_path / name, name)
    model_dir = REPO_ROOT / "triton_models" / name
    assert (model_dir / "configs" / "gpu.pbtxt").read_text() == expected.read_text()
    warmup = (model_dir / "warmup" / "text").read_bytes()
    assert warmup == (tmp_path / name / "warmup" / "text").read_bytes()


def test_publish_overrides_with_the_config_the_server_was_started_with(tmp_path: Path) -> None:
    repo.ensure_config(tmp_path, "news_topic")
    cpu = json_format.Parse(
        config_override(tmp_path, config_name=""), model_config_pb2.ModelConfig()
    )
    assert cpu.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    # No configs/gpu.pbtxt yet: Triton itself falls back to config.pbtxt, so publish does too.
    assert config_override(tmp_path, config_name="gpu") == config_override(tmp_path, config_name="")
    repo.write_gpu_config(tmp_path, "news_topic")
    gpu = json_format.Parse(
        config_override(tmp_path, 3, config_name="gpu"), model_config_pb2.ModelConfig()
    )
    assert gpu.instance_group[0].kind == GPU
    assert list(gpu.version_policy.specific.versions) == [3]
    assert len(gpu.model_warmup) == 2


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "is missing"),
        (b"", "is empty"),
        (b"\x05\x00", "truncated length"),
        ((1000).to_bytes(4, "little") + b"short", "says 1000 bytes, 5 follow"),
        ((2).to_bytes(4, "little") + b"\xff\xfe", "not UTF-8"),
    ],
    ids=["missing", "empty", "truncated", "short", "not-utf8"],
)
def test_publish_refuses_a_warmup_input_triton_would_crash_on(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    """A failing warm-up sample killed tritonserver 2.51 (SIGSEGV): never send one."""
    repo.ensure_config(tmp_path, "news_topic")
    repo.write_gpu_config(tmp_path, "news_topic")
    warmup = tmp_path / "warmup" / "text"
    if content is None:
        warmup.unlink()
    else:
        warmup.write_bytes(content)
    with pytest.raises(PublishError, match=reason):
        config_override(tmp_path, config_name="gpu")
    # The CPU config has no warm-up, so the same broken file does not matter to it.
    assert config_override(tmp_path, config_name="")


def test_warmup_check_accepts_several_elements(tmp_path: Path) -> None:
    first, second = b"one", "dos ñ".encode()
    (tmp_path / "warmup").mkdir()
    (tmp_path / "warmup" / "two").write_bytes(
        len(first).to_bytes(4, "little") + first + len(second).to_bytes(4, "little") + second
    )
    repo.check_warmup_inputs(tmp_path, ["two"])


@pytest.fixture(scope="module")
def model_py() -> types.ModuleType:
    """triton_models/model.py imported with a stand-in for Triton's in-process module."""
    stub = types.ModuleType("triton_python_backend_utils")
    previous = sys.modules.get(stub.__name__)
    sys.modules[stub.__name__] = stub
    try:
        spec = importlib.util.spec_from_file_location(
            "served_model", REPO_ROOT / "triton_models" / "model.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        if previous is None:
            sys.modules.pop(stub.__name__)
        else:
            sys.modules[stub.__name__] = previous


ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_gpu_instance_prefers_tensorrt_with_fp16_and_cache_then_cuda(model_py) -> None:
    providers = model_py.choose_providers(
        "GPU", 1, ALL, tensorrt=True, fp16=True, cache_dir="/trt-cache/m/2"
    )
    assert providers == [
        (
            "TensorrtExecutionProvider",
            {
                "device_id": 1,
                "trt_fp16_enable": True,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": "/trt-cache/m/2",
            },
        ),
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]


def test_tensorrt_is_opt_in_and_missing_gpu_providers_fall_back_to_cpu(model_py) -> None:
    assert model_py.choose_providers("GPU", 0, ALL) == [
        ("CUDAExecutionProvider", {"device_id": 0}),
        "CPUExecutionProvider",
    ]
    assert model_py.choose_providers("GPU", 0, ["CPUExecutionProvider"], tensorrt=True) == [
        "CPUExecutionProvider"
    ]
    assert model_py.choose_providers("CPU", 0, ALL, tensorrt=True) == ["CPUExecutionProvider"]


def test_fp16_versions_get_fp16_engines(model_py, monkeypatch) -> None:
    class Log:
        def log_warn(self, message: str) -> None:
            raise AssertionError(message)

    config = {"parameters": {"ENABLE_TENSORRT": {"string_value": "true"}}}
    args = {"model_instance_kind": "GPU", "model_instance_device_id": "0", "model_name": "m"}
    monkeypatch.setattr(model_py.ort, "get_available_providers", lambda: ALL)
    fp16 = model_py._providers({**args, "model_version": "2"}, config, Log(), "fp16")
    fp32 = model_py._providers({**args, "model_version": "1"}, config, Log(), "fp32")
    assert fp16[0][1]["trt_fp16_enable"] is True
    assert fp32[0][1]["trt_fp16_enable"] is False


def test_trainer_gpu_config_command_writes_every_model(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from trainer.cli import app

    for name in ("news_topic", "review_sentiment"):
        repo.ensure_config(tmp_path / name, name)
    result = CliRunner().invoke(
        app, ["gpu-config", "--repository", str(tmp_path), "--instances", "2"]
    )
    assert result.exit_code == 0, result.output
    for name in ("news_topic", "review_sentiment"):
        config = parse((tmp_path / name / "configs" / "gpu.pbtxt").read_text())
        assert [(g.kind, g.count) for g in config.instance_group] == [(GPU, 2)]
        assert (tmp_path / name / "warmup" / "text").is_file()
        assert parse((tmp_path / name / "config.pbtxt").read_text()).instance_group[0].kind != GPU
