"""The recipe options of `TrainOptions` on tiny models, each against figures worked out by hand:
length-grouped batches, layer-wise LR decay with a head multiplier, label smoothing, and the
average of the last validations' weights."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from trainer import loop as loop_module
from trainer.data import Example
from trainer.export import base_tokenizer_json, serving_tokenizer
from trainer.loop import (
    average_state_dicts,
    batch_indices,
    batches,
    fine_tune,
    make_optimizer,
    token_lengths,
    training_loss,
)
from trainer.modeling import MeanPoolingClassifier
from trainer.options import TrainOptions
from trainer.settings import packaged_base_model

WORDS = [
    "markets",
    "rallied",
    "as",
    "the",
    "central",
    "bank",
    "held",
    "rates",
    "steady",
    "again",
    "today",
]


@pytest.fixture(scope="module")
def tokenizer():
    return serving_tokenizer(base_tokenizer_json(packaged_base_model()), 32)


def tiny_bert(
    layers: int = 2, dropout: float = 0.1, seed: int = 0
) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(config)


def varied_examples(count: int = 64, seed: int = 3) -> list[Example]:
    """Texts of 1 to 24 words, so lengths differ a lot within a random batch."""
    rng = random.Random(seed)
    return [
        Example(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 24))), index % 2)
        for index in range(count)
    ]


def options(**overrides) -> TrainOptions:
    return TrainOptions(
        **{"max_steps": 4, "batch_size": 8, "seed": 1, "progress": False, **overrides}
    )


# --- length-grouped batches -------------------------------------------------------------


def test_length_grouped_batches_cover_every_row_once_and_pad_less(tokenizer) -> None:
    data = varied_examples(200)
    lengths = token_lengths(tokenizer, [example.text for example in data])
    grouped = batch_indices(len(data), 8, random.Random(0), lengths)
    shuffled = batch_indices(len(data), 8, random.Random(0))
    assert sorted(i for batch in grouped for i in batch) == list(range(200))
    assert len(grouped) == len(shuffled) == math.ceil(200 / 8)

    def padded(plan: list[list[int]]) -> int:
        return sum(len(batch) * max(lengths[i] for i in batch) for batch in plan)

    # Grouped batches compute at most ~1.3x the real tokens; shuffled ones far more here.
    assert padded(grouped) < 1.3 * sum(lengths) < padded(shuffled)


def test_length_grouping_is_seeded_and_each_batch_pads_to_its_own_longest(tokenizer) -> None:
    data = varied_examples(40)
    lengths = token_lengths(tokenizer, [example.text for example in data])
    plan = batch_indices(len(data), 8, random.Random(5), lengths)
    assert plan == batch_indices(len(data), 8, random.Random(5), lengths)
    widths = [ids.shape[1] for ids, _, _ in batches(data, tokenizer, 8, random.Random(5), lengths)]
    assert widths == [max(lengths[i] for i in batch) for batch in plan]
    assert len(set(widths)) > 1  # not padded to one global width


def test_group_by_length_trains_on_the_grouped_batches(tokenizer, monkeypatch) -> None:
    seen: list[list[int] | None] = []
    real = loop_module.batches

    def spy(examples, tokenizer, batch_size, rng=None, lengths=None):
        seen.append(None if lengths is None else list(lengths))
        return real(examples, tokenizer, batch_size, rng, lengths)

    monkeypatch.setattr(loop_module, "batches", spy)
    data = varied_examples(16)
    fine_tune(tiny_bert(), tokenizer, data, options(group_by_length=True))
    fine_tune(tiny_bert(), tokenizer, data, options(group_by_length=False))
    assert seen[0] == token_lengths(tokenizer, [example.text for example in data])
    assert seen[-1] is None


# --- layer-wise LR decay and the head's LR -------------------------------------------------


def learning_rates(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Each parameter's peak LR (the scheduler has already scaled `lr` for warmup)."""
    by_id = {id(p): g["initial_lr"] for g in optimizer.param_groups for p in g["params"]}
    return {name: by_id[id(parameter)] for name, parameter in model.named_parameters()}


def test_layer_decay_and_head_multiplier_give_each_parameter_its_hand_worked_rate() -> None:
    """Two layers, LR 1e-3, decay 0.5, head x10: layer 1 (top) 1e-3, layer 0 5e-4,
    embeddings 2.5e-4, classifier and pooler 1e-2."""
    model = tiny_bert(layers=2)
    optimizer, _ = make_optimizer(
        model,
        options(learning_rate=1e-3, layer_lr_decay=0.5, head_lr_multiplier=10.0, warmup_ratio=0),
        total_steps=10,
    )
    rates = learning_rates(model, optimizer)
    expected = {
        "bert.embeddings.": 2.5e-4,
        "bert.encoder.layer.0.": 5e-4,
        "bert.encoder.layer.1.": 1e-3,
        "bert.pooler.": 1e-2,
        "classifier.": 1e-2,
    }
    for name, rate in rates.items():
        prefix = next(p for p in expected if name.startswith(p))
        assert rate == pytest.approx(expected[prefix]), name
    assert {round(rate, 9) for rate in rates.values()} == {2.5e-4, 5e-4, 1e-3, 1e-2}


def test_layer_decay_keeps_no_weight_decay_on_biases_and_layer_norm() -> None:
    model = tiny_bert(layers=2)
    optimizer, _ = make_optimizer(
        model, options(layer_lr_decay=0.8, weight_decay=0.01), total_steps=10
    )
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    for name, parameter in model.named_parameters():
        no_decay = parameter.ndim < 2 or "LayerNorm" in name
        assert decay[id(parameter)] == (0.0 if no_decay else 0.01), name


def test_without_recipe_options_the_optimizer_has_the_two_plain_groups() -> None:
    optimizer, _ = make_optimizer(tiny_bert(), options(learning_rate=2e-5), total_steps=10)
    assert [(g["initial_lr"], g["weight_decay"]) for g in optimizer.param_groups] == [
        (2e-5, 0.01),
        (2e-5, 0.0),
    ]


def test_the_schedule_scales_every_group_alike() -> None:
    """Warmup 0.5 of 4 steps: after one step every group is at 2/3 of its own peak."""
    model = tiny_bert(layers=2)
    optimizer, scheduler = make_optimizer(
        model, options(layer_lr_decay=0.5, head_lr_multiplier=4.0, warmup_ratio=0.5), 4
    )
    optimizer.step()
    scheduler.step()
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(group["initial_lr"] * 2 / 3)


def test_mean_pooling_head_layers_are_found_too() -> None:
    encoder = tiny_bert(layers=3).bert
    model = MeanPoolingClassifier(encoder, num_labels=2)
    optimizer, _ = make_optimizer(
        model, options(learning_rate=1.0, layer_lr_decay=0.5, head_lr_multiplier=3.0), 10
    )
    rates = learning_rates(model, optimizer)
    assert rates["encoder.embeddings.word_embeddings.weight"] == 0.125
    assert rates["encoder.encoder.layer.0.output.dense.weight"] == 0.25
    assert rates["encoder.encoder.layer.2.output.dense.weight"] == 1.0
    assert rates["classifier.weight"] == 3.0


# --- label smoothing --------------------------------------------------------------------------


def test_label_smoothing_loss_equals_the_hand_computed_value() -> None:
    """Logits (2, 0, 0), label 0, smoothing 0.1 over 3 labels: the target is
    (0.9 + 0.1/3, 0.1/3, 0.1/3); the loss is minus its dot product with the log-softmax."""
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    labels = torch.tensor([0])
    log_z = math.log(math.exp(2.0) + 2.0)
    log_p = [2.0 - log_z, -log_z, -log_z]
    target = [0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]
    expected = -sum(t * lp for t, lp in zip(target, log_p, strict=True))
    assert expected == pytest.approx(0.372878, abs=1e-6)
    assert float(training_loss(logits, labels, 0.1)) == pytest.approx(expected, rel=1e-6)
    assert float(training_loss(logits, labels, 0.0)) == pytest.approx(log_z - 2.0, rel=1e-6)


def test_the_loop_trains_on_the_smoothed_loss(tokenizer) -> None:
    """One step on one batch without dropout: the recorded loss is the smoothed loss of the
    initial weights on that batch."""
    data = [Example(example.text, 0) for example in varied_examples(8)]  # all one label
    model = tiny_bert(dropout=0.0)
    with torch.no_grad():  # confident logits, so smoothing changes the loss clearly
        model.classifier.bias.copy_(torch.tensor([4.0, -4.0]))
    initial = copy.deepcopy(model).eval()
    ids, mask, labels = next(batches(data, tokenizer, 8))
    with torch.no_grad():
        logits = initial(input_ids=ids, attention_mask=mask).logits
    smoothed = float(training_loss(logits, labels, 0.2))
    plain = float(training_loss(logits, labels, 0.0))
    stats = fine_tune(model, tokenizer, data, options(max_steps=1, label_smoothing=0.2))
    assert stats.final_loss == pytest.approx(smoothed, rel=1e-5)
    assert abs(smoothed - plain) > 1e-3


# --- weight averaging -------------------------------------------------------------------------


def test_average_state_dicts_is_the_mean_of_the_snapshots() -> None:
    snapshots = [
        {"w": torch.tensor([1.0, 2.0]), "step": torch.tensor([1])},
        {"w": torch.tensor([3.0, 6.0]), "step": torch.tensor([2])},
        {"w": torch.tensor([5.0, 1.0]), "step": torch.tensor([3])},
    ]
    averaged = average_state_dicts(snapshots)
    assert torch.equal(averaged["w"], torch.tensor([3.0, 3.0]))
    assert torch.equal(averaged["step"], torch.tensor([3]))  # integers: the last one


def scripted_fine_tune(tokenizer, monkeypatch, scores: list[float], **given):
    """Fine-tune a tiny model whose validations score `scores` in turn; (model, stats, the
    weights each validation saw)."""
    snapshots: list[dict[str, torch.Tensor]] = []
    scripted_scores = iter(scores)

    def scripted(model, *args, **kwargs):
        snapshots.append(copy.deepcopy(model.state_dict()))
        return {"accuracy": 0.0, "macro_f1": next(scripted_scores), "examples": 4}

    monkeypatch.setattr(loop_module, "evaluate", scripted)
    model = tiny_bert()
    data = varied_examples(16)
    opts = options(eval_every=2, patience=None, learning_rate=1e-2, **given)
    stats = fine_tune(model, tokenizer, data, opts, data[:4], 2)
    return model, stats, snapshots


def test_average_last_keeps_the_mean_of_the_last_validations(tokenizer, monkeypatch) -> None:
    """Validations at steps 2, 4, 6, 8 with average_last=3: the final weights are the mean of
    the weights at steps 4, 6 and 8, kept because they validate best."""
    # the fifth score is the average's
    model, stats, snapshots = scripted_fine_tune(
        tokenizer, monkeypatch, [0.5, 0.6, 0.7, 0.8, 0.9], max_steps=8, average_last=3
    )
    expected = average_state_dicts(snapshots[1:4])
    for name, weights in model.state_dict().items():
        assert torch.allclose(weights, expected[name]), name
    assert any(not torch.equal(snapshots[3][n], expected[n]) for n in expected)
    assert stats.weight_average == {
        "checkpoints": 3,
        "accuracy": 0.0,
        "macro_f1": 0.9,
        "used": True,
    }


def test_an_average_that_validates_worse_gives_way_to_the_best(tokenizer, monkeypatch) -> None:
    # best at step 4; the average scores 0.1
    model, stats, snapshots = scripted_fine_tune(
        tokenizer, monkeypatch, [0.5, 0.9, 0.7, 0.1], max_steps=6, average_last=2
    )
    for name, weights in model.state_dict().items():
        assert torch.equal(weights, snapshots[1][name]), name
    assert stats.weight_average is not None and stats.weight_average["used"] is False
