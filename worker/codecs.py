"""Kafka's compression codecs, checked before the worker consumes anything.

aiokafka decodes gzip itself; snappy, lz4 and zstd need `cramjam` (aiokafka's `snappy`, `lz4`
and `zstd` extras). Without it the first compressed batch raises `UnsupportedCodecError` inside
the fetcher, the worker dies, and after a restart it fetches the same batch and dies again. So
the worker refuses to start instead, saying which codec is missing.
"""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import codec

CODECS: dict[str, tuple[Callable[[], bool], Callable, Callable]] = {
    "gzip": (codec.has_gzip, codec.gzip_encode, codec.gzip_decode),
    "snappy": (codec.has_snappy, codec.snappy_encode, codec.snappy_decode),
    "lz4": (codec.has_lz4, codec.lz4_encode, codec.lz4_decode),
    "zstd": (codec.has_zstd, codec.zstd_encode, codec.zstd_decode),
}
_SAMPLE = b'{"id": "codec-check", "text": "Stocks rally as rates fall"}' * 20


class MissingCodecError(RuntimeError):
    """A Kafka compression codec cannot be decoded here."""


def check_codecs() -> None:
    """Round-trip a sample through every codec a producer may use; raise naming the missing."""
    missing = []
    for name, (available, encode, decode) in CODECS.items():
        try:
            if not available() or decode(encode(_SAMPLE)) != _SAMPLE:
                missing.append(name)
        except Exception:  # noqa: BLE001 - a codec that cannot round-trip is missing
            missing.append(name)
    if missing:
        raise MissingCodecError(
            f"Kafka compression codec(s) {', '.join(missing)} cannot be decoded: install "
            "cramjam (pip install 'aiokafka[lz4,snappy,zstd]'); a producer using one would "
            "crash the worker"
        )
