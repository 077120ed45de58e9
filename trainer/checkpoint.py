"""Resumable training: the loop's whole state in one file, written atomically.

A run is identified by what determines its result (task, data fingerprint, options), so an
interrupted `trainer train` started again with the same arguments continues where it stopped,
and a run with other arguments never picks up a foreign checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import torch

log = structlog.get_logger(__name__)


def run_id(**identity: Any) -> str:
    """A short stable hash of everything that defines a run's result."""
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class LoopState:
    """Where the loop is: enough to continue the same batch order and schedule."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    epoch_rng_state: Any = None
    best_macro_f1: float = -1.0
    best_step: int = 0
    evals_without_gain: int = 0
    evaluations: list[dict[str, float]] = field(default_factory=list)


class Checkpoint:
    """Model, optimizer, scheduler and loop state under `<root>/<run id>/`."""

    def __init__(self, root: Path, run: str) -> None:
        self.dir = Path(root) / run
        self.path = self.dir / "last.pt"
        self.best_path = self.dir / "best.pt"

    def save(self, model, optimizer, scheduler, state: LoopState, *, best: bool) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "loop": state.__dict__,
            "torch_rng": torch.get_rng_state(),
        }
        _atomic_save(payload, self.path)
        if best:
            _atomic_save(model.state_dict(), self.best_path)

    def load(self, model, optimizer, scheduler) -> LoopState | None:
        """Restore into the given objects; None when there is nothing to resume."""
        if not self.path.is_file():
            return None
        payload = torch.load(self.path, weights_only=False)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["torch_rng"])
        state = LoopState(**payload["loop"])
        log.info("train.resumed", checkpoint=str(self.path), step=state.step, epoch=state.epoch)
        return state

    def best_state_dict(self) -> dict | None:
        return torch.load(self.best_path, weights_only=True) if self.best_path.is_file() else None

    def remove(self) -> None:
        """A finished run needs no checkpoint; its result is the version directory."""
        shutil.rmtree(self.dir, ignore_errors=True)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
