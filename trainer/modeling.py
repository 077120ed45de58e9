"""Classifier heads on the pretrained encoder.

all-MiniLM-L6-v2 was trained as a sentence encoder with mean pooling; its BERT pooler (the
[CLS] dense layer that `AutoModelForSequenceClassification` uses) was never trained for that.
A linear head on the mean-pooled tokens starts from a representation that already separates
topics and sentiment, so it learns faster from few steps.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

HEADS = ("mean", "cls")


class MeanPoolingClassifier(nn.Module):
    """Encoder -> masked mean of the last hidden states -> dropout -> linear.

    Returns what the training loop and the export wrapper read from a Hugging Face
    sequence-classification model: `loss`, `logits` and `hidden_states`.
    """

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> SimpleNamespace:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        logits = self.classifier(self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SimpleNamespace(
            loss=loss, logits=logits, hidden_states=(hidden,) if output_hidden_states else None
        )


def build_classifier(base_model: Path, labels: tuple[str, ...], head: str) -> nn.Module:
    """The base checkpoint (offline) with a fresh head for `labels`."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    if head == "mean":
        encoder = AutoModel.from_pretrained(
            base_model, local_files_only=True, attn_implementation="sdpa", add_pooling_layer=False
        )
        return MeanPoolingClassifier(encoder, len(labels))
    if head == "cls":
        return AutoModelForSequenceClassification.from_pretrained(
            base_model,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: index for index, label in enumerate(labels)},
            local_files_only=True,
            attn_implementation="sdpa",
        )
    raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")
