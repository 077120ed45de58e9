import pytest

from worker.batching import chunks, halves, prepare_batch
from worker.messages import RawMessage
from worker.validation import Rejection, validate


def raws(values: list[bytes]) -> list[RawMessage]:
    return [RawMessage("t", 0, i, None, v, 0.0) for i, v in enumerate(values)]


def test_prepare_batch_keeps_positions():
    batch = prepare_batch(
        raws([b'{"id":"a","text":"x"}', b"bad", b'{"id":"b","text":"y"}']),
        lambda r: validate(r, max_bytes=100, max_text_chars=100),
    )
    assert [i for i, _, _ in batch.valid] == [0, 2]
    assert [(i, rej.type) for i, _, rej in batch.rejected] == [(1, "invalid_json")]
    assert batch.size == 3
    assert all(isinstance(rej, Rejection) for _, _, rej in batch.rejected)


def test_chunks_respect_size():
    assert [list(c) for c in chunks(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunks([], 3)) == []
    with pytest.raises(ValueError):
        list(chunks([1], 0))


def test_halves():
    assert halves([1, 2, 3]) == ([1], [2, 3])
