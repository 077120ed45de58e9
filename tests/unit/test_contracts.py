"""The shared contracts: tensor names everywhere they are spelled, the copy of the serving
recipe a version carries, and the one TEXT request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import deserialize_bytes_tensor

from contracts import tensors
from contracts.triton_request import requested_outputs, text_input
from tests.unit.tiny_model import shared_version
from trainer import repository as repo

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO_ROOT / "triton_models").glob("*/config.pbtxt")) + sorted(
    (REPO_ROOT / "triton_models").glob("*/configs/*.pbtxt")
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_committed_configs_name_the_contract_tensors(path: Path) -> None:
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    assert tuple(i.name for i in config.input) == tensors.TRITON_INPUTS
    assert tuple(o.name for o in config.output) == tensors.TRITON_OUTPUTS
    for sample in config.model_warmup:
        assert set(sample.inputs) <= set(tensors.TRITON_INPUTS)


def test_there_are_committed_configs_to_check() -> None:
    assert len(CONFIGS) >= 4


def test_a_version_imports_its_own_copy_of_the_recipe_and_nothing_of_labelstream(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """As in the Triton container: the version directory first, no labelstream installed."""
    version_dir = shared_version(tmp_path_factory)
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from contracts import serving, tensors; "
        "print(serving.__file__); print(tensors.__file__); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('worker', 'trainer')))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(version_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=version_dir,
    )
    assert result.returncode == 0, result.stderr
    serving_file, tensors_file, labelstream = result.stdout.splitlines()
    assert Path(serving_file) == version_dir / "contracts" / "serving.py"
    assert Path(tensors_file) == version_dir / "contracts" / "tensors.py"
    assert labelstream == "[]"


def test_text_input_is_one_row_per_text_as_utf8_bytes() -> None:
    text = text_input(["café", b"caf\xc3 raw"])
    assert (text.name(), text.shape(), text.datatype()) == (tensors.TEXT, [2, 1], "BYTES")
    sent = deserialize_bytes_tensor(text._raw_content)
    assert sent.tolist() == ["café".encode(), b"caf\xc3 raw"]


def test_requested_outputs_are_named_as_asked() -> None:
    names = [o.name() for o in requested_outputs([tensors.PROBS, tensors.EMBEDDING])]
    assert names == [tensors.PROBS, tensors.EMBEDDING]


def test_read_model_config_is_what_triton_hands_model_py(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    assert repo.read_model_config(model_dir) == {}
    (model_dir / "config.pbtxt").write_text(
        repo.render_config("m", instance_count=3, parameters={"ROWS_PER_RUN": "8"})
    )
    config = repo.read_model_config(model_dir)
    assert config["instance_group"] == [{"count": 3, "kind": "KIND_CPU"}]
    assert config["parameters"] == {"ROWS_PER_RUN": {"string_value": "8"}}
    assert np.array_equal([i["name"] for i in config["input"]], tensors.TRITON_INPUTS)
