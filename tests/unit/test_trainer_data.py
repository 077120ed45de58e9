"""Reading and splitting labelled files: cleaning, clear errors, stratified and deterministic."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from trainer.data import (
    Columns,
    DataError,
    Example,
    load_split,
    read_examples,
    separate_validation,
    stratified_split,
)
from trainer.tasks import TASKS, get_task

LABELS = ("negative", "positive")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_tsv_strips_drops_empty_and_deduplicates(tmp_path: Path) -> None:
    data = write(
        tmp_path / "d.tsv",
        "text\tlabel\n"
        "  good film \tpositive\n"
        "\tnegative\n"
        "   \tnegative\n"
        "bad film\tnegative\n"
        "good film\tnegative\n",
    )
    examples = read_examples(data, LABELS)
    assert examples == [Example("good film", 1), Example("bad film", 0)]


def test_reads_quoted_csv_with_extra_columns(tmp_path: Path) -> None:
    data = write(
        tmp_path / "d.csv",
        'id,label,text\n1,positive,"fine, really ""fine""\nsecond line"\n2,negative,meh\n',
    )
    examples = read_examples(data, LABELS)
    assert examples[0] == Example('fine, really "fine"\nsecond line', 1)
    assert examples[1] == Example("meh", 0)


def test_sniffs_tab_delimiter_for_other_suffixes(tmp_path: Path) -> None:
    data = write(tmp_path / "d.txt", "text\tlabel\nok\tpositive\nno\tnegative\n")
    assert len(read_examples(data, LABELS)) == 2


def test_missing_column_names_what_was_found(tmp_path: Path) -> None:
    data = write(tmp_path / "d.tsv", "sentence\tlabel\nok\tpositive\n")
    with pytest.raises(DataError, match=r"missing column\(s\) text.*sentence"):
        read_examples(data, LABELS)


def test_unknown_label_is_an_error_with_line_number(tmp_path: Path) -> None:
    data = write(tmp_path / "d.tsv", "text\tlabel\nok\tpositive\nhmm\tneutral\nugh\tneutral\n")
    with pytest.raises(DataError, match=r"'neutral' x2 \(first at line 3\)"):
        read_examples(data, LABELS)


def test_missing_file_and_empty_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_examples(tmp_path / "nope.tsv", LABELS)
    with pytest.raises(DataError, match="no usable rows"):
        read_examples(write(tmp_path / "e.tsv", "text\tlabel\n"), LABELS)


def test_invalid_utf8_does_not_crash(tmp_path: Path) -> None:
    data = tmp_path / "d.tsv"
    data.write_bytes(b"text\tlabel\ncaf\xc3 \xff\tpositive\nfine\tnegative\n")
    assert read_examples(data, LABELS)[0].text == "caf\ufffd \ufffd"


def balanced(n_per_label: int, n_labels: int) -> list[Example]:
    return [
        Example(f"text {label}-{i}", label) for label in range(n_labels) for i in range(n_per_label)
    ]


def test_stratified_split_keeps_balance_and_is_disjoint() -> None:
    examples = balanced(50, 4) + [Example(f"extra {i}", 0) for i in range(50)]
    split = stratified_split(examples, validation_fraction=0.2, seed=1)
    validation = Counter(example.label for example in split.validation)
    assert validation == {0: 20, 1: 10, 2: 10, 3: 10}
    assert len(split.train) + len(split.validation) == len(examples)
    assert not {e.text for e in split.train} & {e.text for e in split.validation}


def test_stratified_split_is_deterministic_per_seed() -> None:
    examples = balanced(30, 2)
    first = stratified_split(examples, 0.1, seed=7)
    assert first == stratified_split(examples, 0.1, seed=7)
    assert first != stratified_split(examples, 0.1, seed=8)


def test_small_labels_still_get_one_validation_example_but_keep_one_for_training() -> None:
    examples = [Example("a", 0), Example("b", 0), Example("c", 1)]
    split = stratified_split(examples, 0.1, seed=0)
    assert [e.text for e in split.validation] in (["a"], ["b"])
    assert {e.label for e in split.train} == {0, 1}


def test_split_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="validation_fraction"):
        stratified_split(balanced(5, 2), 1.0, seed=0)


def test_load_split_needs_a_validation_set(tmp_path: Path) -> None:
    data = write(tmp_path / "d.tsv", "text\tlabel\nonly one\tpositive\nanother\tnegative\n")
    with pytest.raises(DataError, match="too few rows"):
        load_split(data, LABELS)


def test_task_presets() -> None:
    assert get_task("news").labels == ("World", "Sports", "Business", "Sci/Tech")
    assert get_task("news").default_model_name == "news_topic"
    assert get_task("reviews").labels == LABELS
    assert get_task("reviews").default_model_name == "review_sentiment"
    with pytest.raises(ValueError, match="news, reviews"):
        get_task("spam")
    assert set(TASKS) == {"news", "reviews"}


def test_single_class_file_is_refused(tmp_path: Path) -> None:
    data = write(tmp_path / "one.tsv", "text\tlabel\na\tpositive\nb\tpositive\n")
    with pytest.raises(DataError, match="every usable row has the label 'positive'"):
        read_examples(data, LABELS)


def test_column_mapping_and_title_join(tmp_path: Path) -> None:
    data = write(
        tmp_path / "m.csv",
        "headline,body,sentiment\nGreat,loved it,positive\n,awful,negative\n",
    )
    columns = Columns(text="body", label="sentiment", title="headline")
    examples = read_examples(data, LABELS, columns)
    assert [(e.text, e.label) for e in examples] == [("Great. loved it", 1), ("awful", 0)]
    with pytest.raises(DataError, match="--text-col"):
        read_examples(data, LABELS)


def test_jsonl(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"t": "good", "y": "positive"}\n\n{"t": "bad", "y": "negative"}\n')
    examples = read_examples(data, LABELS, Columns(text="t", label="y"))
    assert [(e.text, e.label) for e in examples] == [("good", 1), ("bad", 0)]
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"t": "good", "y": "positive"}\n{oops\n')
    with pytest.raises(DataError, match="b.jsonl:2: invalid JSON"):
        read_examples(broken, LABELS, Columns(text="t", label="y"))


def test_separate_validation_file_drops_overlap_from_training(tmp_path: Path) -> None:
    train = write(tmp_path / "t.tsv", "text\tlabel\na\tpositive\nb\tnegative\nc\tpositive\n")
    dev = write(tmp_path / "d.tsv", "text\tlabel\nc\tpositive\nd\tnegative\n")
    split = separate_validation(train, dev, LABELS)
    assert [e.text for e in split.train] == ["a", "b"]
    assert [e.text for e in split.validation] == ["c", "d"]
