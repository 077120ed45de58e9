"""Real labelled texts for integration tests: the shared data sets, else the shipped samples."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared" / "data"
SHARED_FILES = {"news": SHARED / "ag_news" / "train.tsv", "reviews": SHARED / "sst2" / "train.tsv"}
SAMPLES = REPO_ROOT / "samples"
SAMPLE_FILES = {"news": SAMPLES / "news.tsv", "reviews": SAMPLES / "reviews.tsv"}


def data_file(task: str) -> Path:
    shared = SHARED_FILES[task]
    return shared if shared.exists() else SAMPLE_FILES[task]


def texts(task: str, count: int) -> list[str]:
    """`count` texts of the task's data, cycling if the file is small."""
    with data_file(task).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = [row["text"] for row in reader]
    return list(itertools.islice(itertools.cycle(rows), count))
