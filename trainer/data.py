"""Labelled text files -> clean, deduplicated, stratified train/validation splits.

Input is a delimited file with a header (`.tsv` is tab separated, `.csv` comma separated,
anything else but `.jsonl` is sniffed) or JSON Lines (`.jsonl`, one object per line). Column
names are mapped with `Columns` (defaults `text` and `label`; an optional title column is
joined to the text the way the worker joins a message's title). Quoting follows the csv
module's defaults, which is what pandas and spreadsheet tools write.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from contracts.text import model_text

log = structlog.get_logger(__name__)


class DataError(ValueError):
    """The data file cannot be used for training; the message says what to fix."""


@dataclass(frozen=True)
class Columns:
    """Which columns (or JSON keys) hold the text, the label and an optional title."""

    text: str = "text"
    label: str = "label"
    title: str | None = None

    @property
    def required(self) -> list[str]:
        return [name for name in (self.text, self.label, self.title) if name]


@dataclass(frozen=True)
class Example:
    """One labelled text; `label` is the index into the task's label tuple."""

    text: str
    label: int


@dataclass(frozen=True)
class Split:
    """Train and validation examples, disjoint by text."""

    train: list[Example]
    validation: list[Example]


def _delimiter(path: Path, sample: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "\t"
    if suffix == ".csv":
        return ","
    try:
        return csv.Sniffer().sniff(sample, delimiters="\t,;").delimiter
    except csv.Error:
        return "\t"


def _missing(path: Path, found: Sequence[str], columns: Columns) -> None:
    missing = [name for name in columns.required if name not in found]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {list(found) or 'no header'}"
            " (map them with --text-col / --label-col / --title-col)"
        )


def _delimited_rows(path: Path, columns: Columns) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        delimiter = _delimiter(path, handle.read(8192))
        handle.seek(0)
        reader = csv.DictReader(handle, delimiter=delimiter)
        found = [name.strip() for name in reader.fieldnames or []]
        _missing(path, found, columns)
        reader.fieldnames = found
        for row in reader:
            yield reader.line_num, row


def _jsonl_rows(path: Path, columns: Columns) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object per line")
            if line_no == 1:
                _missing(path, list(row), columns)
            yield line_no, {key: "" if value is None else str(value) for key, value in row.items()}


def read_examples(
    path: Path, labels: Sequence[str], columns: Columns | None = None
) -> list[Example]:
    """Read, validate and clean a labelled file.

    Texts are whitespace-stripped; empty texts are dropped and counted; repeated texts are
    kept once (first occurrence wins) so the same sentence never lands in both splits. Any
    label outside `labels` is an error rather than a silent drop, because it usually means the
    wrong task or a wrong column mapping; so is a file whose rows all carry one label.
    """
    path = Path(path)
    columns = columns or Columns()
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    label_ids = {name: index for index, name in enumerate(labels)}
    rows = _jsonl_rows if path.suffix.lower() == ".jsonl" else _delimited_rows

    examples: list[Example] = []
    seen: set[str] = set()
    unknown: Counter[str] = Counter()
    first_unknown_line: dict[str, int] = {}
    empty = duplicates = 0
    for line_no, row in rows(path, columns):
        text = (row.get(columns.text) or "").strip()
        if text:  # the serving normalisation, so the model trains on what it will read
            text = model_text(text, row.get(columns.title) if columns.title else None).strip()
        label = (row.get(columns.label) or "").strip()
        if label not in label_ids:
            unknown[label] += 1
            first_unknown_line.setdefault(label, line_no)
            continue
        if not text:
            empty += 1
            continue
        if text in seen:
            duplicates += 1
            continue
        seen.add(text)
        examples.append(Example(text=text, label=label_ids[label]))

    if unknown:
        details = ", ".join(
            f"{name!r} x{count} (first at line {first_unknown_line[name]})"
            for name, count in unknown.most_common(5)
        )
        raise DataError(f"{path}: unknown label(s) {details}; expected one of {list(labels)}")
    if not examples:
        raise DataError(f"{path}: no usable rows ({empty} rows with an empty text)")
    present = {example.label for example in examples}
    if len(present) < 2:
        only = labels[next(iter(present))]
        raise DataError(f"{path}: every usable row has the label {only!r}; need at least two")
    log.info(
        "data.read", path=str(path), rows=len(examples), dropped_empty=empty, duplicates=duplicates
    )
    return examples


def stratified_split(examples: Sequence[Example], validation_fraction: float, seed: int) -> Split:
    """Split per label so both sides keep the label balance; deterministic for a seed.

    Every label with at least two examples gets at least one validation example, so macro-F1
    is defined for every class that can be evaluated.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    by_label: dict[int, list[Example]] = defaultdict(list)
    for example in examples:
        by_label[example.label].append(example)

    rng = random.Random(seed)
    train: list[Example] = []
    validation: list[Example] = []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        n_validation = round(len(group) * validation_fraction)
        n_validation = min(max(n_validation, 1), len(group) - 1) if len(group) >= 2 else 0
        validation.extend(group[:n_validation])
        train.extend(group[n_validation:])
    rng.shuffle(train)
    rng.shuffle(validation)
    return Split(train=train, validation=validation)


def load_split(
    path: Path,
    labels: Sequence[str],
    validation_fraction: float = 0.1,
    seed: int = 42,
    columns: Columns | None = None,
) -> Split:
    """Read a file and split it; the one call the training recipe needs."""
    split = stratified_split(read_examples(path, labels, columns), validation_fraction, seed)
    if not split.validation:
        raise DataError(f"{path}: too few rows per label to hold out a validation split")
    return split


def separate_validation(
    path: Path, validation_path: Path, labels: Sequence[str], columns: Columns | None = None
) -> Split:
    """Train on one file, validate on another; texts found in both are dropped from training."""
    validation = read_examples(validation_path, labels, columns)
    held_out = {example.text for example in validation}
    train = [
        example for example in read_examples(path, labels, columns) if example.text not in held_out
    ]
    log.info("data.separate_validation", train=len(train), validation=len(validation))
    return Split(train=train, validation=validation)


def training_split(
    path: Path,
    labels: Sequence[str],
    validation_fraction: float,
    seed: int,
    validation_path: Path | None = None,
    columns: Columns | None = None,
) -> Split:
    """The split a training run uses: a held-out share of `path`, or `validation_path`'s rows."""
    if validation_path is None:
        return load_split(path, labels, validation_fraction, seed, columns)
    return separate_validation(path, Path(validation_path), labels, columns)
