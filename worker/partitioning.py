"""Which partition a keyed record goes to: Kafka's default partitioner, a batch at a time.

Kafka's producers (Java's and aiokafka's) send a keyed record to partition
`(murmur2(key) & 0x7fffffff) % partitions`. aiokafka computes murmur2 in pure Python, ~3 µs a
key (bench/README.md, worker profile); here a batch's keys of one length are hashed together
in numpy's uint32 arithmetic (which wraps like Java's int), one vector step per 4-byte word.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

SEED = 0x9747B28C
M = np.uint32(0x5BD1E995)


def murmur2_many(keys: Sequence[bytes]) -> np.ndarray:
    """Kafka's murmur2 of each key (uint32), equal to `aiokafka.partitioner.murmur2`."""
    out = np.empty(len(keys), dtype=np.uint32)
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        by_length[len(key)].append(index)
    for length, indices in by_length.items():
        data = np.frombuffer(b"".join(keys[i] for i in indices), dtype=np.uint8)
        out[indices] = _murmur2_rows(data.reshape(len(indices), length), length)
    return out


def _murmur2_rows(data: np.ndarray, length: int) -> np.ndarray:
    """murmur2 of each row of `data` [keys, length] (uint8), all rows one length."""
    h = np.full(len(data), (SEED ^ length) & 0xFFFFFFFF, dtype=np.uint32)
    words = length // 4
    if words:
        blocks = np.ascontiguousarray(data[:, : words * 4]).view("<u4")
        for column in range(words):
            k = blocks[:, column] * M
            k ^= k >> np.uint32(24)
            k *= M
            h *= M
            h ^= k
    tail = data[:, words * 4 :].astype(np.uint32)
    extra = length % 4
    if extra >= 3:
        h ^= tail[:, 2] << np.uint32(16)
    if extra >= 2:
        h ^= tail[:, 1] << np.uint32(8)
    if extra >= 1:
        h ^= tail[:, 0]
        h *= M
    h ^= h >> np.uint32(13)
    h *= M
    h ^= h >> np.uint32(15)
    return h


def key_partitions(keys: Sequence[bytes], partitions: Sequence[int]) -> list[int]:
    """The partition Kafka's default partitioner picks for each key, from the topic's
    partitions sorted by id."""
    index = (murmur2_many(keys) & np.uint32(0x7FFFFFFF)) % np.uint32(len(partitions))
    return [partitions[i] for i in index.tolist()]
