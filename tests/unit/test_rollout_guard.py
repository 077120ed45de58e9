"""The worker's automatic rollback as a compare-and-set against the registry readers."""

from __future__ import annotations

from worker.registry import Candidate, ModelEntry, RegistryReader
from worker.rollout_guard import RolloutGuard

TOPIC = "labelstream.models"


class EchoRegistry(RegistryReader):
    """A registry reader fed by the guard's own sends (the topic's echo), after `ahead`."""

    def __init__(self) -> None:
        super().__init__("unused:9092", TOPIC)
        self.ahead: list[ModelEntry] = []
        self.sent: list[ModelEntry] = []
        self._caught_up.set()
        self._task = None

    async def ready(self) -> None:
        return None

    async def send_all(self, records):
        for record in records:
            self.sent.append(ModelEntry.model_validate_json(record.value))
            for entry in [*self.ahead, self.sent[-1]]:
                self.apply(entry.model.encode(), entry.model_dump_json().encode())
            self.ahead = []
        return [None] * len(records)


def canary() -> ModelEntry:
    return ModelEntry(
        model="news",
        active="1",
        candidate=Candidate(version="2", role="canary", share=0.1),
        event="canary",
        by="t",
        at="t0",
        revision=3,
        base=2,
    )


FAILING = {"model": {"name": "news", "version": "2"}, "candidate_failure_rate": 0.5}


def guard(registry: EchoRegistry) -> RolloutGuard:
    return RolloutGuard(registry, registry.send_all, TOPIC, 0.05, 0.5, "worker:x", settle_s=1)


async def test_a_rollback_on_the_revision_the_registry_holds_stands():
    registry = EchoRegistry()
    registry.apply(b"news", canary().model_dump_json().encode())
    assert await guard(registry).check(FAILING) is True
    assert registry.get("news").candidate is None and registry.get("news").revision == 4


async def test_a_rollback_that_lost_to_a_promote_is_rejected_and_the_promote_kept():
    registry = EchoRegistry()
    registry.apply(b"news", canary().model_dump_json().encode())
    steps = guard(registry)
    rolled = steps.plan(FAILING)
    promote = canary().revise(active="2", previous="1", candidate=None, event="promote")
    registry.ahead = [promote]  # the trainer's promote reaches the topic first
    assert await steps.commit(rolled) is False
    assert registry.get("news").active == "2" and registry.get("news").event == "promote"
    assert [(d.entry.event, d.accepted) for d in registry.history][-2:] == [
        ("promote", True),
        ("auto_rollback", False),
    ]
    assert registry.sent[-1] == promote  # re-published: the last record is the winner


async def test_nothing_is_written_without_a_failing_candidate():
    registry = EchoRegistry()
    registry.apply(b"news", canary().model_dump_json().encode())
    healthy = {"model": {"name": "news", "version": "2"}, "candidate_failure_rate": 0.0}
    assert await guard(registry).check(healthy) is False
    assert registry.sent == []
