"""Version roll-outs: publish, canary, shadow, promote and roll back, under live traffic.

Each step changes two things in a fixed order so no message fails or is lost: what Triton
serves (`serve_versions`, policy `specific`) and what the registry topic says (which workers
follow). A version is loaded and warmed up *before* the registry sends traffic to it, and a
version is unloaded only `grace_s` *after* the registry stopped sending traffic to it, so a
worker that reads the registry a little late still finds every version it routes to.

The registry write is a compare-and-set on the revision read at the start of the step
(`worker/registry.py`): when a worker's automatic rollback changed the entry meanwhile, the
step fails with `RolloutError` instead of overwriting it; run it again on the new state.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog

from trainer.publish import PublishError, serve_versions
from trainer.repository import latest_version, list_versions, model_path
from worker.registry import Candidate, ModelEntry, StaleRevision, read_registry, write_entry

log = structlog.get_logger(__name__)


class RolloutError(PublishError):
    """The requested step does not fit the model's current state (e.g. nothing to promote)."""


@dataclass
class Rollout:
    model: str
    repository: Path
    triton_url: str
    bootstrap_servers: str
    registry_topic: str = "labelstream.models"
    grace_s: float = 5.0
    by: str = ""
    kafka_security: dict[str, Any] = field(default_factory=dict)
    """`worker.security.kafka_client_kwargs(settings)`: TLS/SASL for the registry topic."""
    triton_tls: dict[str, Any] = field(default_factory=dict)
    """`worker.security.triton_client_kwargs(settings)`: TLS for Triton's gRPC channel."""
    config_name: str = ""
    """`TrainerSettings.model_config_name`: the config file Triton's loads are overridden with."""

    def __post_init__(self) -> None:
        model_path(self.repository, self.model)  # a name that escapes the repository is refused

    def current(self) -> ModelEntry | None:
        entries = asyncio.run(
            read_registry(self.bootstrap_servers, self.registry_topic, self.kafka_security)
        )
        return entries.get(self.model)

    def publish(
        self, version: int | None = None, canary: float | None = None, shadow: bool = False
    ) -> ModelEntry:
        """Serve `version` (default: newest on disk): as the active version, or beside the
        active one as a canary taking a `canary` share of traffic, or as a shadow."""
        model_dir = self.repository / self.model
        version = version if version is not None else latest_version(model_dir)
        if version is None or version not in list_versions(model_dir):
            raise RolloutError(f"no version {version} in {model_dir}")
        entry = self.current()
        if canary is None and not shadow:
            if entry is None:
                return self._transition(None, {version}, "publish", active=str(version))
            return self._switch(entry, version, "publish")
        if entry is None:
            raise RolloutError(
                f"{self.model!r} has no active version yet: publish one before a candidate"
            )
        if str(version) == entry.active:
            raise RolloutError(f"version {version} is already the active version")
        role = "shadow" if shadow else "canary"
        return self._transition(
            entry,
            {int(entry.active), version},
            role,
            candidate=Candidate(version=str(version), role=role, share=canary or 0.0),
        )

    def promote(self, version: int) -> ModelEntry:
        """Make `version` the active version; the old one is unloaded after the grace period."""
        entry = self._require()
        if str(version) == entry.active:
            raise RolloutError(f"version {version} is already active")
        return self._switch(entry, version, "promote")

    def rollback(self, reason: str = "rollback") -> ModelEntry:
        """Drop the candidate, or, without one, go back to the version active before."""
        entry = self._require()
        if entry.candidate is not None:
            return self._transition(entry, {int(entry.active)}, reason, candidate=None)
        if entry.previous is None:
            raise RolloutError(f"{self.model!r} has no candidate and no previous version")
        return self._transition(
            entry,
            {int(entry.previous)},
            reason,
            active=entry.previous,
            previous=None,
            candidate=None,
        )

    def _switch(self, entry: ModelEntry, version: int, event: str) -> ModelEntry:
        return self._transition(
            entry, {version}, event, active=str(version), previous=entry.active, candidate=None
        )

    def _transition(
        self, entry: ModelEntry | None, final: set[int], event: str, **changes
    ) -> ModelEntry:
        """Load what serves now plus `final`, write the registry, then after the grace period
        serve only `final`: no worker ever routes to a version that is not loaded."""
        serving = set()
        if entry is not None:
            serving.add(int(entry.active))
            if entry.candidate is not None:
                serving.add(int(entry.candidate.version))
        labels = serve_versions(
            self.model,
            self.repository,
            self.triton_url,
            sorted(serving | final),
            tls=self.triton_tls,
            config_name=self.config_name,
        )
        updated = self._write(entry, event, labels, **changes)
        if serving - final:
            time.sleep(self.grace_s)
            serve_versions(
                self.model,
                self.repository,
                self.triton_url,
                sorted(final),
                tls=self.triton_tls,
                config_name=self.config_name,
            )
        return updated

    def _require(self) -> ModelEntry:
        entry = self.current()
        if entry is None:
            raise RolloutError(f"{self.model!r} is not in the registry; publish it first")
        return entry

    def _write(
        self, entry: ModelEntry | None, event: str, labels: dict[int, list[str]], **changes
    ) -> ModelEntry:
        base = entry.model_dump() if entry else {"model": self.model}
        read = entry.revision if entry else 0
        merged_labels = dict(base.get("labels", {}))
        merged_metrics = dict(base.get("metrics", {}))
        for version, names in labels.items():
            merged_labels[str(version)] = names
            merged_metrics[str(version)] = self._metrics(version)
        updated = ModelEntry.model_validate(
            {
                **base,
                **changes,
                "labels": merged_labels,
                "metrics": merged_metrics,
                "event": event,
                "by": self.by or getpass.getuser(),
                "at": datetime.now(UTC).isoformat(),
                "base": read,
                "revision": read + 1,
            }
        )
        try:
            asyncio.run(
                write_entry(
                    self.bootstrap_servers, self.registry_topic, updated, self.kafka_security
                )
            )
        except StaleRevision as exc:
            raise RolloutError(f"{exc}; run the step again") from exc
        log.info(
            "rollout.registry_written",
            model=self.model,
            change=event,
            active=updated.active,
            candidate=updated.candidate.model_dump() if updated.candidate else None,
        )
        return updated

    def _metrics(self, version: int) -> dict:
        path = self.repository / self.model / str(version) / "metrics.json"
        if not path.is_file():
            return {}
        metrics = orjson.loads(path.read_bytes())
        return {k: metrics.get(k) for k in ("accuracy", "macro_f1", "ece", "created_at")}
