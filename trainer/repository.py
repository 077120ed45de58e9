"""Triton model-repository layout: version numbering, atomic version writes, config rendering,
and the management side (pruning, per-version info, model listing, data fingerprints).

Pure file-system logic (no torch, no Triton client) so it is cheap to test and to reuse.
A version directory becomes visible only through one `os.rename` of a fully written temporary
directory, so a Triton that polls or loads the repository never sees half a version.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

import contracts
from contracts import tensors

log = structlog.get_logger(__name__)

MODEL_PY = "model.py"
CONTRACTS_DIR = "contracts"
SERVING_CONTRACTS = ("__init__.py", "tensors.py", "serving.py")
"""What model.py imports from its version directory (see contracts/__init__.py)."""
CONFIG_FILE = "config.pbtxt"
REQUIRED_FILES = ("model.onnx", "tokenizer.json")
TMP_PREFIX = ".tmp-"
GPU_CONFIG_NAME = "gpu"
WARMUP_FILE = "text"
WARMUP_TEXT = " ".join(["Warm-up text for the classifier, long enough to fill max_length."] * 40)
_SOURCE_MODEL_PY = Path(__file__).resolve().parents[1] / "triton_models" / MODEL_PY


class RepositoryError(RuntimeError):
    """The repository layout is not what Triton (or the trainer) needs."""


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class UnsafeModelName(ValueError):
    """A model name that is not one plain directory inside the repository: it could make the
    trainer write or Triton load files elsewhere (`../x`, `/etc`, `a/b`, a symlink out)."""


def model_path(repository: Path, name: str) -> Path:
    """`repository / name`, once `name` is one plain directory name that stays inside.

    Every trainer command that takes a model name goes through this before touching files.
    """
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise UnsafeModelName(
            f"model name {name!r} is not allowed: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (no paths)"
        )
    root = Path(repository).resolve()
    resolved = (root / name).resolve()
    if resolved.parent != root:
        raise UnsafeModelName(
            f"model {name!r} resolves to {resolved}, outside the repository {root}"
        )
    return Path(repository) / name


def list_versions(model_dir: Path) -> list[int]:
    """Version numbers present on disk, ascending; non-numeric entries are ignored."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(entry.name)
        for entry in model_dir.iterdir()
        if entry.is_dir() and entry.name.isdigit() and int(entry.name) > 0
    )


def latest_version(model_dir: Path) -> int | None:
    """The highest version on disk, or None when the model has no version yet."""
    versions = list_versions(model_dir)
    return versions[-1] if versions else None


def next_version(model_dir: Path) -> int:
    """Triton versions start at 1 and only grow; gaps from deleted versions are not reused."""
    return (latest_version(model_dir) or 0) + 1


def find_model_py(repository: Path) -> Path:
    """The serving code to copy into each version.

    A repository may carry its own `model.py` (e.g. a deployed repository); otherwise the one in
    this source tree is used, which is also where an editable install finds it.
    """
    for candidate in (repository / MODEL_PY, _SOURCE_MODEL_PY):
        if candidate.is_file():
            return candidate
    raise RepositoryError(f"no {MODEL_PY} in {repository} nor at {_SOURCE_MODEL_PY}")


def copy_serving_contracts(version_dir: Path) -> Path:
    """Copy the serving recipe and tensor names verbatim to `version_dir/contracts/`."""
    source = Path(contracts.__file__).resolve().parent
    target = Path(version_dir) / CONTRACTS_DIR
    target.mkdir(exist_ok=True)
    for name in SERVING_CONTRACTS:
        shutil.copyfile(source / name, target / name)
    return target


def render_config(
    name: str,
    *,
    max_batch_size: int = 64,
    preferred_batch_sizes: Sequence[int] = (16, 32, 64),
    max_queue_delay_us: int = 1000,
    instance_kind: str = "KIND_CPU",
    instance_count: int = 2,
    latest_versions: int = 1,
    parameters: Mapping[str, str] | None = None,
    warmup_batch_sizes: Sequence[int] = (),
) -> str:
    """A complete `config.pbtxt` for a model served by `triton_models/model.py`.

    Complete on purpose: it must work with `--disable-auto-complete-config`, which makes loads
    several times faster. `warmup_batch_sizes` adds one `model_warmup` request per size, fed
    from `warmup/text` (see `write_warmup_text`), so a version is warm before it is READY.
    Two CPU instances by default: with the worker's `BATCHES_IN_FLIGHT=2` both stay busy, and
    model.py gives each its share of the cores (bench/README.md has the measurement).
    """
    preferred = [size for size in preferred_batch_sizes if 0 < size <= max_batch_size]
    preferred_line = (
        f"\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]" if preferred else ""
    )
    parameter_blocks = "".join(
        f'parameters: {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}\n'
        for key, value in sorted((parameters or {}).items())
    )
    return f"""# Rendered by trainer.repository.render_config; served by triton_models/model.py.
# Optional parameters: INTRA_OP_THREADS (default: the cores shared out between the instances),
# ROWS_PER_RUN, ENABLE_TENSORRT (see model.py).
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
version_policy: {{ latest: {{ num_versions: {latest_versions} }} }}

input [
  {{
    name: "{tensors.TEXT}"
    data_type: TYPE_STRING
    dims: [ 1 ]
  }}
]
output [
  {{
    name: "{tensors.PROBS}"
    data_type: TYPE_FP32
    dims: [ -1 ]
  }},
  {{
    name: "{tensors.EMBEDDING}"
    data_type: TYPE_FP32
    dims: [ -1 ]
  }},
  {{
    name: "{tensors.LABELS}"
    data_type: TYPE_STRING
    dims: [ -1 ]
  }}
]

dynamic_batching {{{preferred_line}
  max_queue_delay_microseconds: {max_queue_delay_us}
}}

instance_group [
  {{
    count: {instance_count}
    kind: {instance_kind}
  }}
]
{parameter_blocks}{_warmup_blocks(warmup_batch_sizes, max_batch_size)}"""


def _warmup_blocks(batch_sizes: Sequence[int], max_batch_size: int) -> str:
    sizes = sorted({size for size in batch_sizes if 0 < size <= max_batch_size})
    samples = ",\n".join(
        f"""  {{
    name: "text_batch_{size}"
    batch_size: {size}
    inputs {{
      key: "{tensors.TEXT}"
      value: {{
        data_type: TYPE_STRING
        dims: [ 1 ]
        input_data_file: "{WARMUP_FILE}"
      }}
    }}
  }}"""
        for size in sizes
    )
    return f"model_warmup [\n{samples}\n]\n" if sizes else ""


def write_warmup_text(model_dir: Path, text: str = WARMUP_TEXT) -> Path:
    """`warmup/text`: one TYPE_STRING element (4-byte little-endian length, then UTF-8 bytes).

    Long enough to reach the longest max_length, so warm-up runs (and TensorRT builds engines
    for) the sequence lengths real traffic has, not a two-token probe.
    """
    data = text.encode("utf-8")
    path = model_dir / "warmup" / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(data).to_bytes(4, "little") + data)
    return path


def check_warmup_inputs(model_dir: Path, files: Sequence[str]) -> None:
    """Refuse warm-up input files Triton would fail on, before Triton reads them.

    A warm-up sample that fails in the Python backend does not just fail the load: tritonserver
    2.51 (the PyTriton build) died with SIGSEGV in 2 of 2 tries here, taking every model down.
    Each file must hold whole TYPE_STRING elements: a 4-byte little-endian length, then as many
    bytes of UTF-8.
    """
    for name in files:
        path = model_dir / "warmup" / name
        if not path.is_file():
            raise RepositoryError(f"warm-up input {path} is missing (trainer gpu-config writes it)")
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            if offset + 4 > len(data):
                raise RepositoryError(f"warm-up input {path}: truncated length at byte {offset}")
            size = int.from_bytes(data[offset : offset + 4], "little")
            element = data[offset + 4 : offset + 4 + size]
            if len(element) != size:
                raise RepositoryError(
                    f"warm-up input {path}: element at byte {offset} says {size} bytes, "
                    f"{len(element)} follow"
                )
            try:
                element.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RepositoryError(f"warm-up input {path}: not UTF-8 ({exc})") from exc
            offset += 4 + size
        if offset == 0:
            raise RepositoryError(f"warm-up input {path} is empty")


def gpu_render_options(
    *, instance_count: int = 1, max_batch_size: int = 64, trt_cache_dir: str = "/trt-cache"
) -> dict[str, Any]:
    """`render_config` options for GPU serving: KIND_GPU instances, TensorRT (FP16 when the
    version is fp16) with an engine cache, and warm-up at the smallest and largest batch."""
    parameters = {"ENABLE_TENSORRT": "true"}
    if trt_cache_dir:
        parameters["TRT_CACHE_DIR"] = trt_cache_dir
    return {
        "instance_kind": "KIND_GPU",
        "instance_count": instance_count,
        "max_batch_size": max_batch_size,
        "parameters": parameters,
        "warmup_batch_sizes": (1, max_batch_size),
    }


def write_gpu_config(
    model_dir: Path, name: str | None = None, config_name: str = GPU_CONFIG_NAME, **options: Any
) -> Path:
    """`configs/<config_name>.pbtxt` plus its warm-up input, beside the CPU `config.pbtxt`.

    Triton started with `--model-config-name=<config_name>` serves it; without that flag the
    CPU config is used, so one repository serves both the local stack and the GPU container.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    write_warmup_text(model_dir)
    path = model_dir / "configs" / f"{config_name}.pbtxt"
    path.parent.mkdir(exist_ok=True)
    _write_text_atomic(path, render_config(name or model_dir.name, **gpu_render_options(**options)))
    log.info("repository.config_written", path=str(path))
    return path


def model_config_path(model_dir: Path, config_name: str = "") -> Path:
    """The file Triton reads for `--model-config-name=config_name`: configs/<name>.pbtxt when
    present, config.pbtxt otherwise (Triton's own fallback)."""
    if config_name:
        custom = model_dir / "configs" / f"{config_name}.pbtxt"
        if custom.is_file():
            return custom
    return model_dir / CONFIG_FILE


def read_model_config(model_dir: Path, config_name: str = "") -> dict[str, Any]:
    """The model's config as the JSON Triton hands model.py ({} when there is no file), so
    `trainer evaluate` applies the served thread and chunk settings (contracts/serving.py)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    path = model_config_path(Path(model_dir), config_name)
    if not path.is_file():
        return {}
    config = text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def instance_kind(device: str) -> str:
    """Triton instance kind for a `--device` choice ("cpu" or "gpu")."""
    kinds = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
    try:
        return kinds[device.lower()]
    except KeyError:
        raise ValueError(f"unknown device {device!r}; choose one of {sorted(kinds)}") from None


def ensure_config(model_dir: Path, name: str | None = None, **render_options: Any) -> bool:
    """Write a default config.pbtxt if the model has none; True when one was written.

    `render_options` go to `render_config` (e.g. `instance_kind=instance_kind("gpu")`).
    """
    config_path = model_dir / CONFIG_FILE
    if config_path.exists():
        return False
    model_dir.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(config_path, render_config(name or model_dir.name, **render_options))
    log.info("repository.config_written", path=str(config_path))
    return True


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_version(
    repository: Path,
    model_name: str,
    build: Callable[[Path], None],
    *,
    labels: Sequence[str],
    classifier: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Build a new version in a private temp dir, then publish it with one rename.

    `build(staging_dir)` writes the heavy artifacts (`model.onnx`, `tokenizer.json`) and may raise
    to abort (e.g. a failed parity check); the staging dir is then removed and nothing appears.
    `metrics` is serialized after `build`, so `build` may still add to it (e.g. export timings).
    The temp dir lives inside the model dir so the rename stays on one file system, and its
    dot-prefixed name is not a version number, so Triton ignores it. Renaming onto an existing,
    non-empty version fails instead of replacing it, so if another writer takes the chosen number
    first, the next free number is used.
    """
    repository = Path(repository)
    model_dir = model_path(repository, model_name)
    model_dir.mkdir(parents=True, exist_ok=True)
    ensure_config(model_dir, model_name)
    model_py = find_model_py(repository)

    staging = model_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        build(staging)
        missing = [name for name in REQUIRED_FILES if not (staging / name).is_file()]
        if missing:
            raise RepositoryError(f"build did not write {', '.join(missing)}")
        shutil.copyfile(model_py, staging / MODEL_PY)
        copy_serving_contracts(staging)
        _write_json(staging / "labels.json", list(labels))
        _write_json(staging / "classifier.json", dict(classifier))
        _write_json(staging / "metrics.json", dict(metrics or {}))
        for _attempt in range(100):
            target = model_dir / str(next_version(model_dir))
            try:
                os.rename(staging, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise
            log.info("repository.version_written", model=model_name, path=str(target))
            return target
        raise RepositoryError(f"could not claim a version number in {model_dir}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_config(model_dir: Path, name: str | None = None, **render_options: Any) -> Path:
    """(Re)write config.pbtxt atomically, e.g. when `--device gpu` changes the instance kind.

    Unlike `ensure_config` this replaces a hand-tuned file, so call it only on an explicit ask.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    config_path = model_dir / CONFIG_FILE
    _write_text_atomic(config_path, render_config(name or model_dir.name, **render_options))
    log.info("repository.config_written", path=str(config_path))
    return config_path


def prune_versions(model_dir: Path, keep: int, protect: Iterable[int] = ()) -> list[int]:
    """Delete all but the newest `keep` versions, never one in `protect`; returns the deleted.

    `protect` is for versions that must survive regardless of age (e.g. one pinned by
    `trainer publish --version`). Each version first leaves Triton's view with one rename to a
    dot-prefixed name, so a polling server never sees a half-deleted version.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    model_dir = Path(model_dir)
    protected = set(protect)
    versions = list_versions(model_dir)
    doomed = [v for v in versions[: max(0, len(versions) - keep)] if v not in protected]
    for version in doomed:
        trash = model_dir / f"{TMP_PREFIX}deleted-{version}-{uuid.uuid4().hex}"
        os.rename(model_dir / str(version), trash)
        shutil.rmtree(trash, ignore_errors=True)
        log.info("repository.version_pruned", model=model_dir.name, version=version)
    return doomed


def _read_json(path: Path) -> Any:
    """Parsed JSON, or None when the file is missing or unreadable (info must not crash)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def version_info(model_dir: Path, version: int | None = None) -> dict[str, Any]:
    """What a version is: scores, provenance and files, from its JSON files (default: newest).

    Keys that a version's files do not record are simply absent, so old versions still show.
    """
    model_dir = Path(model_dir)
    if version is None:
        version = latest_version(model_dir)
        if version is None:
            raise RepositoryError(f"{model_dir} has no versions")
    version_dir = model_dir / str(version)
    if not version_dir.is_dir():
        raise RepositoryError(
            f"version {version} not found in {model_dir}: {list_versions(model_dir)}"
        )
    metrics = _read_json(version_dir / "metrics.json") or {}
    classifier = _read_json(version_dir / "classifier.json") or {}
    labels = _read_json(version_dir / "labels.json")
    info: dict[str, Any] = {
        "model": model_dir.name,
        "version": version,
        "path": str(version_dir),
        "labels": labels if labels is not None else classifier.get("labels"),
    }
    for key in ("accuracy", "macro_f1", "examples", "train_examples", "steps", "train_seconds"):
        if key in metrics:
            info[key] = metrics[key]
    info["created_at"] = metrics.get("created_at") or classifier.get("created_at")
    for key in ("data", "data_fingerprint", "variants"):
        if key in metrics:
            info[key] = metrics[key]
    for key in ("task", "base_model", "max_length", "precision"):
        if key in classifier:
            info[key] = classifier[key]
    info["files"] = {
        entry.name: entry.stat().st_size
        for entry in sorted(version_dir.iterdir())
        if entry.is_file() and not entry.name.startswith(".")
    }
    return {key: value for key, value in info.items() if value is not None}


def list_models(repository: Path) -> list[dict[str, Any]]:
    """Every model directory in the repository with its versions and newest version's scores."""
    repository = Path(repository)
    if not repository.is_dir():
        return []
    models = []
    for model_dir in sorted(repository.iterdir()):
        if not model_dir.is_dir() or model_dir.name.startswith((".", "_")):
            continue
        versions = list_versions(model_dir)
        if not versions and not (model_dir / CONFIG_FILE).is_file():
            continue
        summary: dict[str, Any] = {
            "model": model_dir.name,
            "versions": versions,
            "newest": versions[-1] if versions else None,
        }
        if versions:
            newest = version_info(model_dir, versions[-1])
            for key in ("accuracy", "macro_f1", "created_at", "precision"):
                if key in newest:
                    summary[key] = newest[key]
        models.append(summary)
    return models


def data_fingerprint(path: Path, length: int = 16) -> str:
    """Short sha256 of a data file's bytes: tells whether two versions saw the same data."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:length]}"
