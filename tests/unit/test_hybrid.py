"""The hybrid version: blend math, a weight chosen without validation rows, a TF-IDF graph that
equals scikit-learn, and model.py serving the blend (and plain versions as before)."""

from __future__ import annotations

import csv
import json
import shutil
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from contracts import serving
from tests.unit.tiny_model import LABELS, TEXTS, shared_version
from trainer import hybrid as hybrid_module
from trainer import train as train_module
from trainer.data import Example, Split
from trainer.hybrid import (
    Hybrid,
    HybridError,
    check_exportable,
    check_tfidf_parity,
    choose_blend_weight,
    export_tfidf,
    fit_hybrid,
    tfidf_pipeline,
)
from trainer.onnx_runner import OnnxClassifier
from trainer.options import TrainOptions

REPO_ROOT = Path(__file__).resolve().parents[2]
NEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
# What serving meets besides clean news: case, runs of whitespace and line breaks, HTML-entity
# debris and '#' (the ONNX tokenizer's pad character), accents, replaced bytes, empty texts.
AWKWARD = [
    "Stocks  FELL\n\nsharply on Wall Street; #39;quot; traders\tsold",
    "Café owners in Zürich — naïve? Ünïcödé façade 北京 \ufffd\ufffd",
    "a b c d e f g",
    "",
    "   \n ",
    "#",
    "The striker scored twice as the home team won the cup final. " * 30,
]


def news_rows() -> tuple[list[str], list[int]]:
    with (REPO_ROOT / "samples" / "news.tsv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [row["text"] for row in rows], [NEWS_LABELS.index(row["label"]) for row in rows]


@pytest.fixture(scope="module")
def news_hybrid() -> Hybrid:
    texts, labels = news_rows()
    transformer = np.full((len(texts), len(NEWS_LABELS)), 1 / len(NEWS_LABELS))
    return fit_hybrid(texts, labels, transformer, len(NEWS_LABELS), seed=3, folds=3)


def test_blend_is_the_weighted_mean_of_the_two_models() -> None:
    transformer = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    tfidf = np.array([[0.5, 0.5], [0.6, 0.4]], dtype=np.float32)

    mixed = serving.blend(transformer, tfidf, 0.25)

    np.testing.assert_allclose(mixed, [[0.6, 0.4], [0.5, 0.5]], atol=1e-7)
    assert mixed.dtype == np.float32
    np.testing.assert_array_equal(serving.blend(transformer, tfidf, 1.0), transformer)
    np.testing.assert_array_equal(serving.blend(transformer, tfidf, 0.0), tfidf)
    with pytest.raises(ValueError, match="weight"):
        serving.blend(transformer, tfidf, 1.5)
    with pytest.raises(ValueError, match="cannot blend"):
        serving.blend(transformer, tfidf[:1], 0.5)


def test_the_weight_goes_to_the_model_that_is_right_on_the_rows() -> None:
    truth = [0, 1, 0, 1]
    right = np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])
    unsure = np.full((4, 2), 0.5)

    assert choose_blend_weight(right, unsure, truth)[0] == 1.0
    assert choose_blend_weight(unsure, right, truth)[0] == 0.0
    # Each model confidently wrong on the rows the other gets right: the mix is best.
    half_wrong = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.1, 0.9]])
    other_half = np.array([[0.2, 0.8], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])
    weight, curve = choose_blend_weight(half_wrong, other_half, truth)
    assert 0.0 < weight < 1.0
    assert len(curve) == len(hybrid_module.WEIGHT_GRID)
    assert min(point["log_loss"] for point in curve) == next(
        point["log_loss"] for point in curve if point["weight"] == weight
    )


def test_tfidf_text_lowercases_and_keeps_single_spaces() -> None:
    assert serving.tfidf_text("  Wall\tStreet\n\nFELL  ") == "wall street fell"
    assert serving.tfidf_text("\n") == ""


class Tripwire(list):
    """Validation rows that fail the test when anything reads them."""

    def _touched(self, *_args, **_kwargs):
        raise AssertionError("a validation row was read while the blend weight was chosen")

    __iter__ = __getitem__ = __len__ = __contains__ = __bool__ = _touched


@dataclass
class Spied:
    """What `select_hybrid` gave the transformer to score, and what the weight was chosen on."""

    predicted: list[list[str]] = field(default_factory=list)
    chosen: list[tuple[np.ndarray, np.ndarray, list[int]]] = field(default_factory=list)


@pytest.fixture
def spied(monkeypatch: pytest.MonkeyPatch) -> Spied:
    """A fake transformer (uniform probabilities), a spy on the weight choice, 3 folds."""
    spied = Spied()
    real_choose = hybrid_module.choose_blend_weight

    def fake_predict(_model, _tokenizer, batch, _batch_size=64):
        spied.predicted.append(list(batch))
        return np.full((len(batch), len(NEWS_LABELS)), 0.25), None

    def spy_choose(transformer_probs, tfidf_probs, truth, *args, **kwargs):
        spied.chosen.append((transformer_probs, tfidf_probs, list(truth)))
        return real_choose(transformer_probs, tfidf_probs, truth, *args, **kwargs)

    monkeypatch.setattr(train_module, "predict", fake_predict)
    monkeypatch.setattr(hybrid_module, "choose_blend_weight", spy_choose)
    monkeypatch.setattr(
        train_module, "fit_hybrid", lambda *a, **k: fit_hybrid(*a, **{**k, "folds": 3})
    )
    return spied


def test_the_blend_weight_is_chosen_without_reading_a_validation_row(spied: Spied) -> None:
    texts, labels = news_rows()
    train = [Example(text, label) for text, label in zip(texts, labels, strict=True)]
    split = Split(train=train, validation=Tripwire([Example("held out text", 0)]))

    selected = train_module.select_hybrid(fake_run(), object(), object(), split)

    assert spied.predicted == [texts]
    ((transformer_probs, tfidf_probs, truth),) = spied.chosen
    assert truth == labels
    assert transformer_probs.shape == tfidf_probs.shape == (len(texts), len(NEWS_LABELS))
    assert 0.0 <= selected.weight <= 1.0


def test_onnx_tfidf_gives_scikit_learns_probabilities(news_hybrid: Hybrid, tmp_path: Path) -> None:
    path = export_tfidf(news_hybrid.pipeline, tmp_path / serving.TFIDF_ONNX)
    texts, _ = news_rows()
    sample = [*texts, *AWKWARD, *(text.upper() for text in texts[:5])]

    served = serving.TfidfModel.load(path, 0.5, rows=4, threads=1, log_severity=3)
    probs = served.probs(sample)

    np.testing.assert_allclose(probs, news_hybrid.probs(sample), rtol=0, atol=1e-5)
    assert probs.shape == (len(sample), len(NEWS_LABELS))
    assert check_tfidf_parity(news_hybrid, path, sample) < 1e-5


def test_onnx_tfidf_is_faithful_with_min_df_two(tmp_path: Path) -> None:
    """min_df=2 (from 1,000 training texts) drops rare n-grams: bigrams of kept words and
    n-grams cut by a dropped token must still match scikit-learn."""
    texts, labels = news_rows()
    many = [f"{text} item{i % 300} {'extra ' * (i % 3)}" for i, text in enumerate(texts * 26)]
    pipeline = tfidf_pipeline(len(many), seed=1).fit(
        [serving.tfidf_text(t) for t in many], labels * 26
    )
    fitted = Hybrid(pipeline, 0.5, len(NEWS_LABELS))
    path = export_tfidf(pipeline, tmp_path / serving.TFIDF_ONNX)

    assert check_tfidf_parity(fitted, path, [*texts, *AWKWARD, "item7 item8 unseen9"]) < 1e-5


def test_a_char_vocabulary_the_pad_token_could_complete_is_refused() -> None:
    texts, labels = news_rows()
    pipeline = tfidf_pipeline(len(texts), seed=1)
    pipeline.set_params(features__char__ngram_range=(2, 3))
    pipeline.fit([serving.tfidf_text(t) for t in texts], labels)

    with pytest.raises(HybridError, match="outside the vocabulary"):
        check_exportable(pipeline)


def test_every_label_must_be_in_the_training_rows() -> None:
    texts, labels = news_rows()
    probs = np.full((len(texts), 5), 0.2)
    with pytest.raises(HybridError, match="every one of the 5 labels"):
        fit_hybrid(texts, labels, probs, 5, seed=1, folds=3)


def fake_run(**options) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        options=TrainOptions.for_task("news", seed=5, torch_threads=1, **options),
        spec=types.SimpleNamespace(labels=tuple(NEWS_LABELS)),
        log=types.SimpleNamespace(info=lambda *_a, **_k: None),
    )


def test_the_blend_rows_are_held_out_of_fine_tuning_and_stratified() -> None:
    texts, labels = news_rows()
    train = [Example(text, label) for text, label in zip(texts, labels, strict=True)]

    tuned, held = train_module.hold_out_blend_rows(fake_run(hybrid=True), train)

    assert len(held) == round(len(train) * 0.1)
    assert sorted(map(id, tuned + held)) == sorted(map(id, train))
    assert not {id(e) for e in tuned} & {id(e) for e in held}
    assert {e.label for e in held} == set(range(len(NEWS_LABELS)))
    for options in ({"hybrid": False}, {"hybrid": True, "blend_fraction": 0.0}):
        assert train_module.hold_out_blend_rows(fake_run(**options), train) == (train, [])


def test_the_weight_is_chosen_on_blend_rows_only_with_out_of_sample_transformer_probs(
    spied: Spied,
) -> None:
    texts, labels = news_rows()
    train = [Example(text, label) for text, label in zip(texts, labels, strict=True)]
    split = Split(train=train, validation=Tripwire([Example("held out text", 0)]))
    run = fake_run(hybrid=True, blend_fraction=0.25)
    tuned, held = train_module.hold_out_blend_rows(run, train)

    selected = train_module.select_hybrid(run, object(), object(), split, held)

    # The transformer scored exactly the rows it was not fine-tuned on, the weight was chosen
    # on their labels, and the served TF-IDF model was fitted on every training row.
    label_of = {e.text: e.label for e in train}
    (predicted,) = spied.predicted
    assert sorted(predicted) == sorted(e.text for e in held)
    assert [truth for _, _, truth in spied.chosen] == [[label_of[text] for text in predicted]]
    assert not {e.text for e in tuned} & set(predicted)
    assert selected.weight_rows == len(held) and not selected.transformer_in_sample
    assert "not fine-tuned on them" in selected.record()["weight_chosen_by"]
    assert len(selected.pipeline.named_steps["classifier"].coef_) == len(NEWS_LABELS)


def test_the_news_preset_serves_a_hybrid_and_reviews_stays_plain_unless_asked() -> None:
    assert TrainOptions().hybrid is False
    assert TrainOptions.for_task("news").hybrid is True
    assert TrainOptions.for_task("news", hybrid=False).hybrid is False
    assert TrainOptions.for_task("reviews").hybrid is False
    assert TrainOptions.for_task("reviews", hybrid=True).hybrid is True


def hybrid_version(plain: Path, target: Path, weight: float) -> tuple[Path, Hybrid]:
    """A copy of the tiny version with a TF-IDF model fitted on its texts blended in."""
    version_dir = target / plain.parent.name / "1"
    shutil.copytree(plain.parent, version_dir.parent)
    labels = [i % len(LABELS) for i in range(len(TEXTS))]
    pipeline = tfidf_pipeline(len(TEXTS), seed=1).fit(
        [serving.tfidf_text(t) for t in TEXTS], labels
    )
    fitted = Hybrid(pipeline, weight, len(LABELS))
    export_tfidf(pipeline, version_dir / serving.TFIDF_ONNX)
    classifier = json.loads((version_dir / "classifier.json").read_text())
    classifier["hybrid"] = fitted.record()
    (version_dir / "classifier.json").write_text(json.dumps(classifier))
    return version_dir, fitted


def test_trainer_evaluate_gets_the_blend_and_a_plain_version_is_unchanged(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    plain_dir = shared_version(tmp_path_factory)
    version_dir, fitted = hybrid_version(plain_dir, tmp_path, weight=0.6)
    texts = [*TEXTS, *AWKWARD]

    plain = OnnxClassifier.from_version_dir(plain_dir)
    hybrid = OnnxClassifier.from_version_dir(version_dir)
    plain_probs, plain_embedding = plain.predict(texts)
    probs, embedding = hybrid.predict(texts)

    assert plain.served.hybrid is None
    assert hybrid.served.hybrid is not None and hybrid.served.hybrid.weight == 0.6
    expected = 0.6 * plain_probs + 0.4 * fitted.probs(texts)
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(embedding, plain_embedding)


def test_a_hybrid_version_whose_graph_has_other_classes_is_refused(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    plain_dir = shared_version(tmp_path_factory)
    version_dir, _ = hybrid_version(plain_dir, tmp_path, weight=0.5)
    texts, labels = news_rows()
    four_classes = tfidf_pipeline(len(texts), seed=1).fit(texts, labels)
    export_tfidf(four_classes, version_dir / serving.TFIDF_ONNX)

    with pytest.raises(ValueError, match="gives 4 classes but there are 2 labels"):
        OnnxClassifier.from_version_dir(version_dir)


def test_the_hybrid_flag_reaches_the_recipe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from trainer import cli

    given: list[TrainOptions] = []

    def record(task: str, data: Path, **kwargs) -> Path:
        given.append(kwargs["options"])
        version = tmp_path / "repo" / "news_topic" / "1"
        version.mkdir(parents=True, exist_ok=True)
        (version / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))
        return version

    monkeypatch.setattr(train_module, "train_and_export", record)
    for task, extra in (
        ("reviews", ["--hybrid"]),
        ("reviews", []),
        ("news", ["--no-hybrid"]),
        ("news", []),
    ):
        args = ["train", "--task", task, "--data", str(tmp_path / "d.tsv"), *extra]
        result = CliRunner().invoke(cli.app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert [options.hybrid for options in given] == [True, False, False, True]
