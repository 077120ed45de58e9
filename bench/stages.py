"""Summarise a py-spy raw profile of the worker (idle frames dropped) into stages of a
message's path: `python bench/stages.py PROFILE.txt`. Each sample goes to the stage of the
innermost frame that names one (so orjson under labelling.py counts as labelling)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

IDLE = ("select (selectors.py", "_worker (concurrent", "wait (threading.py")
STAGES: list[tuple[str, tuple[str, ...]]] = [
    # before the drift agent: batch_samples and sample_records live in drift_flow.py too
    ("drift samples (projection, encoding)", ("batch_samples", "references.py", "sample_record",
                                              "Sample.")),
    ("drift agent (windows, reports, MMD)", ("drift_windows", "drift.py", "drift_report.py",
                                             "DriftState", "Window.", "drift_flow.py",
                                             "rollout_guard.py")),
    ("validation (orjson, mapping, pydantic)", ("validation.py", "mapping.py", "schemas.py")),
    ("Triton client (gRPC, numpy)", ("inference.py", "tritonclient", "grpc/")),
    ("labelled records", ("labelling.py",)),
    ("publish (batching, aiokafka producer, send)", ("publishing.py", "route_flow.py:publish",
                                                     "partitioning.py", "aiokafka/producer",
                                                     "faust/topics.py",
                                                     "aiokafka/record", "aiokafka/codec",
                                                     "faust/transport/producer")),
    ("pipeline, dispatcher, intake, ack", ("pipeline.py", "batching.py", "intake.py",
                                           "failures.py", "route_flow.py", "app.py")),
]  # fmt: skip
CONSUME = "consume (Faust consumer and conductor, aiokafka fetch)"
"""What is left of Faust, mode and aiokafka once the stages above took theirs (a socket write
under aiokafka's producer is publishing; one under its fetcher is consuming)."""
CONSUME_NEEDLES = ("faust/", "mode/", "aiokafka/")


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, needles in STAGES:
            if any(needle in frame for needle in needles):
                return stage
    if any(needle in frame for frame in frames for needle in CONSUME_NEEDLES):
        return CONSUME
    return "other (event loop, metrics, logging)"


def summarise(path: Path) -> tuple[int, Counter]:
    stages: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(needle in frame for frame in frames[-2:] for needle in IDLE):
            continue
        total += int(count)
        stages[stage_of(frames)] += int(count)
    return total, stages


if __name__ == "__main__":
    total, stages = summarise(Path(sys.argv[1]))
    print(f"{total} non-idle samples")
    for stage, count in stages.most_common():
        print(f"| {stage} | {count / total:.0%} |")
