"""Bad input at scale on the real broker and real Triton: 1,000 generated malformed messages of
every kind mixed into 1,000 valid ones and 50 that repeat a valid id.

Counted by key and value: every malformed message is dead-lettered with its exact reason, every
valid one is labelled, a repeated id is labelled again (the documented contract: one output per
input message, keyed by id, consumers de-duplicate by key), nothing is lost, the worker lives.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections import Counter

import orjson
import pytest

from tests.integration.data import texts
from tests.integration.malformed import generate
from worker.client import produce, read_topics

pytestmark = pytest.mark.integration

VALID_PER_ROUTE = 500
DUPLICATES_PER_ROUTE = 25
MALFORMED = 1000


def test_1000_malformed_among_1000_valid(routes_settings, start_worker, capsys):
    settings = routes_settings
    rng = random.Random(11)
    corpus = generate(MALFORMED, seed=3)
    traffic: dict[str, list[tuple[bytes | None, bytes]]] = {}
    valid_ids: set[str] = set()
    repeated: list[str] = []
    for n, (route, task) in enumerate(zip(settings.routes, ("news", "reviews"), strict=True)):
        items = []
        for i, text in enumerate(texts(task, VALID_PER_ROUTE + DUPLICATES_PER_ROUTE)):
            msg_id = (
                f"{task}-{i}" if i < VALID_PER_ROUTE else f"{task}-{rng.randrange(VALID_PER_ROUTE)}"
            )
            if i >= VALID_PER_ROUTE:
                repeated.append(msg_id)
            valid_ids.add(msg_id)
            items.append(
                (msg_id.encode(), orjson.dumps({"id": msg_id, "text": text, "meta": {"i": i}}))
            )
        items += [(case.key, case.value) for case in corpus[n::2]]
        rng.shuffle(items)
        traffic[route.source] = items
    sent = sum(len(items) for items in traffic.values())
    expected_labelled = 2 * (VALID_PER_ROUTE + DUPLICATES_PER_ROUTE)
    assert sent == expected_labelled + MALFORMED

    worker = start_worker(settings)
    bootstrap = settings.kafka_bootstrap_servers
    sinks = [route.sink for route in settings.routes]

    async def scenario():
        for source, items in traffic.items():
            await produce(bootstrap, source, items)
        labelled = await read_topics(
            bootstrap, sinks, expect=expected_labelled, timeout_s=420, settle_s=3
        )
        dead = await read_topics(
            bootstrap, [settings.deadletter_topic], expect=MALFORMED, timeout_s=60, settle_s=2
        )
        return labelled, dead

    labelled, dead = asyncio.run(scenario())

    # Dead letters: each matched to its case by the original key and value.
    expected = {(case.key, case.value): case for case in corpus}
    wrong, seen = [], Counter()
    for record in dead:
        body = orjson.loads(record.value)
        value = base64.b64decode(body["value_b64"] or "")
        case = expected.get((record.key, value))
        assert case is not None, f"dead letter for a message not in the corpus: {body['error']}"
        seen[(record.key, value)] += 1
        if body["error"]["type"] != case.reason or case.detail not in body["error"]["detail"]:
            wrong.append((case.kind, case.reason, body["error"]))
    assert not wrong, wrong[:5]
    dead_duplicates = sum(c - 1 for c in seen.values())
    missing_dead = len(expected) - len(seen)

    # Labelled: every valid id, a repeated id once more, nothing else.
    per_id = Counter(orjson.loads(r.value)["id"] for r in labelled)
    assert set(per_id) == valid_ids
    assert per_id - Counter(valid_ids) == Counter(repeated)
    lost = len(valid_ids - set(per_id)) + missing_dead

    assert worker.poll() is None, "the worker died"
    with capsys.disabled():
        print(
            f"\nbad input at scale: sent {sent}, labelled {len(labelled)}, dead-lettered "
            f"{len(dead)}, repeated ids labelled again {len(repeated)}, duplicate outputs "
            f"{dead_duplicates + sum(per_id.values()) - len(per_id) - len(repeated)}, lost {lost}"
        )
    assert len(dead) == MALFORMED and dead_duplicates == 0
    assert len(labelled) == expected_labelled
    assert lost == 0
