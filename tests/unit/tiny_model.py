"""A tiny randomly initialised BERT classifier exported like a real version (seconds, no MiniLM).

Built once per test session into pytest's base temp dir and shared by every module that asks,
so the torch import and the export are paid once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

MODEL = "tiny"
LABELS = ("negative", "positive")
MAX_LENGTH = 16
CREATED_AT = "2026-01-02T03:04:05+00:00"
TEXTS = [
    "the movie was great",
    "awful acting and a boring plot",
    "really loved the music",
    "the worst ending",
    "not very fun",
    "best film",
    "shares rose fast",
    "the team lost the game",
    "space science news",
    "slow story but good actor",
    "hated it",
    "a scene",
]


def tokenizer_json() -> str:
    """A lower-casing WordPiece tokenizer with BERT's special tokens and [CLS] x [SEP] framing."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    vocab = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])}
    for word in sorted({word for text in TEXTS for word in text.split()}):
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return tokenizer.to_str()


def build_version(repository: Path) -> Path:
    """Export the tiny model into the next version of `MODEL` in `repository`."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from trainer.export import export_onnx, serving_tokenizer
    from trainer.repository import write_version

    text = tokenizer_json()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(json.loads(text)["model"]["vocab"]),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=32,
        num_labels=len(LABELS),
    )
    model = BertForSequenceClassification(config).eval()

    def build(staging: Path) -> None:
        (staging / "tokenizer.json").write_text(text, encoding="utf-8")
        export_onnx(model, serving_tokenizer(text, MAX_LENGTH), staging / "model.onnx")

    return write_version(
        repository,
        MODEL,
        build,
        labels=LABELS,
        classifier={
            "task": "reviews",
            "labels": list(LABELS),
            "max_length": MAX_LENGTH,
            "pad_token": "[PAD]",
            "pad_id": 0,
            "base_model": "tiny-random-bert",
            "created_at": CREATED_AT,
        },
        metrics={
            "accuracy": 0.75,
            "macro_f1": 0.7,
            "examples": 12,
            "data": "reviews.tsv",
            "data_fingerprint": "sha256:0123456789abcdef",
            "created_at": CREATED_AT,
        },
    )


def shared_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's one tiny version dir (read-only by convention: copy it to modify it)."""
    repository = tmp_path_factory.getbasetemp() / "tiny-repository"
    version_dir = repository / MODEL / "1"
    if not version_dir.is_dir():
        build_version(repository)
    return version_dir
