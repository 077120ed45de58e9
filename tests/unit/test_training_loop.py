"""The training loop on a tiny random BERT: early stopping, best weights, resume after a crash."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from trainer import loop as loop_module
from trainer.checkpoint import Checkpoint
from trainer.data import Example
from trainer.export import base_tokenizer_json, serving_tokenizer
from trainer.loop import LinearSchedule, fine_tune, fit_to_budget
from trainer.options import TrainOptions
from trainer.repository import RepositoryError
from trainer.settings import packaged_base_model
from trainer.train import check_label_set

TEXTS = [("great fun", 1), ("awful bore", 0), ("loved it", 1), ("hated it", 0)] * 6


@pytest.fixture(scope="module")
def tokenizer():
    return serving_tokenizer(base_tokenizer_json(packaged_base_model()), 16)


def tiny_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def examples() -> list[Example]:
    return [Example(text, label) for text, label in TEXTS]


def options(**overrides) -> TrainOptions:
    return TrainOptions(
        **{
            "max_steps": 6,
            "batch_size": 4,
            "eval_every": 2,
            "seed": 1,
            "progress": False,
            "learning_rate": 1e-3,
            **overrides,
        }
    )


def test_validation_curve_and_best_weights_restored(tokenizer, monkeypatch):
    """Validation at steps 2, 4, 6 scores best at step 4: the model ends with step 4's weights,
    not the last step's."""
    snapshots: list[dict[str, torch.Tensor]] = []
    scores = iter([0.5, 0.9, 0.4])

    def scripted(model, *args, **kwargs):
        snapshots.append(copy.deepcopy(model.state_dict()))
        return {"accuracy": 0.0, "macro_f1": next(scores), "examples": 8}

    monkeypatch.setattr(loop_module, "evaluate", scripted)
    model = tiny_model()
    stats = fine_tune(model, tokenizer, examples(), options(patience=None), examples()[:8], 2)
    assert [e["step"] for e in stats.evaluations] == [2, 4, 6]
    assert [e["macro_f1"] for e in stats.evaluations] == [0.5, 0.9, 0.4]
    assert stats.best_macro_f1 == 0.9 and stats.best_step == 4
    best, last = snapshots[1], snapshots[2]
    final = model.state_dict()
    assert any(not torch.equal(best[name], last[name]) for name in best)  # training moved on
    for name, weights in final.items():
        assert torch.equal(weights, best[name]), name


def test_early_stopping(tokenizer, monkeypatch):
    scores = iter([0.5, 0.4, 0.4, 0.9])
    monkeypatch.setattr(
        loop_module,
        "evaluate",
        lambda *a, **k: {"accuracy": 0.0, "macro_f1": next(scores), "examples": 1},
    )
    stats = fine_tune(
        tiny_model(), tokenizer, examples(), options(max_steps=20, patience=2), examples(), 2
    )
    assert stats.stopped_early and stats.steps == 6 and stats.best_step == 2


def test_interrupted_run_resumes_to_the_same_weights(tokenizer, tmp_path, monkeypatch):
    reference = tiny_model()
    fine_tune(reference, tokenizer, examples(), options(patience=None), examples()[:4], 2)

    real_evaluate = loop_module.evaluate
    calls = {"n": 0}

    def crash_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    checkpoint = Checkpoint(tmp_path, "run")
    monkeypatch.setattr(loop_module, "evaluate", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(
            tiny_model(),
            tokenizer,
            examples(),
            options(patience=None),
            examples()[:4],
            2,
            checkpoint,
        )
    monkeypatch.setattr(loop_module, "evaluate", real_evaluate)

    resumed = tiny_model(seed=99)  # different init: everything must come from the checkpoint
    stats = fine_tune(
        resumed, tokenizer, examples(), options(patience=None), examples()[:4], 2, checkpoint
    )
    assert stats.resumed_from_step == 2 and stats.steps == 6
    for (name, a), (_, b) in zip(
        reference.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_label_set_guard(tmp_path):
    version = tmp_path / "news_topic" / "1"
    version.mkdir(parents=True)
    (version / "labels.json").write_text('["World", "Sports", "Business", "Sci/Tech"]')
    check_label_set(
        tmp_path / "news_topic", ["World", "Sports", "Business", "Sci/Tech"], allow_change=False
    )
    with pytest.raises(RepositoryError, match="--new-model"):
        check_label_set(tmp_path / "news_topic", ["negative", "positive"], allow_change=False)
    check_label_set(tmp_path / "news_topic", ["negative", "positive"], allow_change=True)
    check_label_set(tmp_path / "other", ["negative", "positive"], allow_change=False)


def test_time_budget_stops_after_a_last_validation(tokenizer):
    stats = fine_tune(
        tiny_model(),
        tokenizer,
        examples(),
        options(max_steps=50, eval_every=100, patience=None, max_minutes=1e-6),
        examples()[:4],
        2,
    )
    assert stats.stopped_by_budget and stats.steps == 1
    assert [e["step"] for e in stats.evaluations] == [1]


def test_fit_to_budget_and_linear_schedule():
    assert fit_to_budget(step=20, total_steps=1000, seconds_left=100, seconds_per_step=1.0) == 110
    assert fit_to_budget(step=20, total_steps=50, seconds_left=100, seconds_per_step=1.0) == 50
    assert fit_to_budget(step=20, total_steps=1000, seconds_left=-5, seconds_per_step=1.0) == 21
    schedule = LinearSchedule(total=100, warmup_ratio=0.1)
    assert schedule(0) == pytest.approx(1 / 11) and schedule(10) == pytest.approx(1.0)
    schedule.total = 50
    assert schedule(50) == 0.0 and schedule(30) == pytest.approx(0.5)
