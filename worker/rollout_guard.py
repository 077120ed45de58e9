"""The worker's automatic rollback: a candidate that fails or disagrees past its bound in a
closed drift window is removed from the registry.

The worker is the registry's second writer (beside `trainer/rollout.py`), so its write is a
compare-and-set: the rolled-back entry states the revision it was made from, and when a
concurrent change (a `trainer promote`) got there first, every reader rejects it. The guard
then re-publishes the entry that won, so the topic's last record stays an accepted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from worker.messages import OutRecord
from worker.publishing import SendAll, publish
from worker.registry import ModelEntry, RegistryReader, auto_rollback, record_of

log = structlog.get_logger(__name__)


@dataclass
class RolloutGuard:
    registry: RegistryReader
    send_all: SendAll
    topic: str
    max_failure_rate: float
    min_agreement: float
    by: str
    settle_s: float = 30.0
    """How long to wait for the registry reader to read the rollback back and judge it."""

    def plan(self, report: dict) -> ModelEntry | None:
        """The entry without its candidate, when `report` condemns the candidate."""
        return auto_rollback(
            self.registry.get(report["model"]["name"]),
            report,
            max_failure_rate=self.max_failure_rate,
            min_agreement=self.min_agreement,
            by=self.by,
            at=datetime.now(UTC).isoformat(),
        )

    async def commit(self, rolled: ModelEntry) -> bool:
        """Write the rollback and wait until the registry judged it: True when it stands."""
        await self._write(rolled)
        try:
            decided = await self.registry.settle(rolled, self.settle_s)
        except TimeoutError:
            log.error("auto_rollback_unconfirmed", model=rolled.model, revision=rolled.revision)
            return False
        if decided.accepted:
            log.warning(
                "auto_rollback", model=rolled.model, active=rolled.active, reason=rolled.note
            )
            return True
        current = self.registry.get(rolled.model)
        log.warning(
            "auto_rollback_rejected",
            model=rolled.model,
            reason=rolled.note,
            read_revision=rolled.base,
            revision=current.revision if current else None,
            change=current.event if current else None,
        )
        if current is not None:
            await self._write(current)
        return False

    async def check(self, report: dict) -> bool:
        """Roll back the candidate `report` condemns, if any; True when a rollback stands."""
        rolled = self.plan(report)
        return rolled is not None and await self.commit(rolled)

    async def _write(self, entry: ModelEntry) -> None:
        key, value = record_of(entry)
        await publish([OutRecord(self.topic, key, value)], self.send_all)
