"""Sampling profiles of the worker and of the Triton model stub during a pipeline run (py-spy).

py-spy attaches to a running process by pid, so the processes are profiled as they run in the
benchmark, unchanged. The raw output (collapsed stacks, one line per stack and sample count) is
summarised into the share of samples spent in each stage and the functions with most own time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# Stages of the worker, by a substring of a frame ("function (file)") on the stack; first wins.
WORKER_STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("idle (event loop waiting)", ("select (selectors.py)",)),
    ("validate", ("validation.py",)),
    ("triton client (gRPC, numpy)", ("inference.py", "tritonclient")),
    ("label + records (orjson)", ("labelling.py",)),
    ("drift samples", ("drift_flow.py", "window.py", "references.py")),
    ("publish (Faust producer, aiokafka)", ("app.py:publish", "producer", "aiokafka/producer")),
    ("consume (Faust stream/consumer, aiokafka)", ("faust/", "aiokafka/", "mode/")),
]

STUB_STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("onnxruntime session.run", ("run (onnxruntime",)),
    ("tokenize", ("encode_batch", "_encode")),
    ("decode inputs", ("_decode",)),
    ("responses", ("InferenceResponse", "Tensor")),
    ("stub idle (waiting for requests)", ("",)),
]


@dataclass
class Profile:
    samples: int
    stages: dict[str, float]
    top_own: list[tuple[str, float]]


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """Start py-spy on `pid` for `seconds` (idle frames included); None if py-spy is missing."""
    py_spy = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv/bin/py-spy")
    if not Path(py_spy).exists():
        return None
    return subprocess.Popen(
        [
            py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
            "--rate", "50", "--idle", "--format", "raw", "--output", str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its descendants (Triton's stubs, say)."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(proc.name))
        times[int(proc.name)] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo.extend(children.get(current, []))
    return total


def stub_pid(triton_pid: int, model: str) -> int | None:
    """The Python-backend stub process that serves `model` (a child of tritonserver)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid")), "")
        if ppid == str(triton_pid) and "triton_python_backend_stub" in cmdline and model in cmdline:
            return int(proc.name)
    return None


def summarise(raw: Path, stages: list[tuple[str, tuple[str, ...]]], top: int = 8) -> Profile:
    """Stage shares (each stack counted once, by its innermost matching frame) and own time."""
    stage_counts: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[_short(frames[-1])] += count
        stage_counts[_stage(frames, stages)] += count
    if total == 0:
        return Profile(0, {}, [])
    return Profile(
        samples=total,
        stages={name: n / total for name, n in stage_counts.most_common()},
        top_own=[(name, n / total) for name, n in own.most_common(top)],
    )


def _stage(frames: list[str], stages: list[tuple[str, tuple[str, ...]]]) -> str:
    for frame in reversed(frames):
        short = _short(frame)
        for name, needles in stages:
            if any(needle and (needle in frame or needle in short) for needle in needles):
                return name
    fallback = [name for name, needles in stages if needles == ("",)]
    return fallback[0] if fallback else "other"


def _short(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (file.py)`."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit("/", 1)[-1].split(":")[0]
    return f"{name} ({file})" if file else name
