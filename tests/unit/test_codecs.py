"""The start-up codec check: the worker refuses to run when a producer's codec cannot be decoded."""

import subprocess
import sys

import pytest
from aiokafka import codec

from worker.codecs import MissingCodecError, check_codecs


def test_every_codec_decodes_here() -> None:
    check_codecs()


@pytest.mark.parametrize("name", ["snappy", "lz4", "zstd"])
def test_refuses_without_a_codec(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(codec, f"has_{name}", lambda: False)
    monkeypatch.setitem(
        sys.modules["worker.codecs"].CODECS,
        name,
        (lambda: False, *sys.modules["worker.codecs"].CODECS[name][1:]),
    )
    with pytest.raises(MissingCodecError, match=f"codec\\(s\\) {name} cannot be decoded"):
        check_codecs()


def test_worker_run_without_cramjam_exits_with_one_line(tmp_path) -> None:
    """As a user without cramjam sees it: `worker run` stops at once, exit 2, one line."""
    script = (
        "import sys; sys.modules['cramjam'] = None\n"  # `import cramjam` now fails
        "sys.argv = ['worker', 'run']\n"
        "from worker.cli import main; main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"},
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "snappy, lz4, zstd cannot be decoded" in lines[0] and "cramjam" in lines[0]
    assert "Traceback" not in done.stderr
