"""`worker review` in a real terminal: tmux runs it against the session's Kafka, the test
presses keys and reads the pane, then reads the feedback topic."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from contracts.review import Feedback, Review
from devstack.local import LocalStack
from devstack.worker_process import worker_env
from worker.client import produce, read_topics
from worker.feedback import validate_feedback
from worker.topics import ensure_named_topics

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SESSION = "review"
SCORES = {"World": 0.3, "Sports": 0.4, "Business": 0.2, "Sci/Tech": 0.1}


class Tmux:
    """One detached tmux session on a private server (its own socket), so the pane runs with
    exactly the environment given here and no user's tmux is touched."""

    def __init__(self, tmux: str, env: dict[str, str], cwd: Path) -> None:
        self.base = [tmux, "-L", f"labelstream-test-{uuid.uuid4().hex[:8]}"]
        self.env, self.cwd = env, cwd

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            [*self.base, *args], env=self.env, capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, f"tmux {args[0]}: {done.stderr}"
        return done.stdout

    def start(self, command: str) -> None:
        """Run `command`, then keep the pane open (its exit status shown) until `kill`."""
        shown = f"{command}; echo exit status $?; sleep 600"
        self(
            "new-session", "-d", "-x", "200", "-y", "50", "-s", SESSION, "-c", str(self.cwd), shown
        )

    def pane(self) -> str:
        return self("capture-pane", "-p", "-t", SESSION)

    def press(self, key: str) -> None:
        self("send-keys", "-t", SESSION, key)

    def wait_for(self, shows: Callable[[str], bool], timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            pane = self.pane()
            if shows(pane):
                return pane
            if time.monotonic() > deadline:
                pytest.fail(f"the pane never showed what was expected; it shows:\n{pane}")
            time.sleep(0.2)

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10, check=False)


def text_of(n: int) -> str:
    return f"Story {n}: the cup final went to extra time"


def review(n: int) -> Review:
    return Review(
        id=f"r-{n}",
        text=text_of(n),
        label="Sports",
        confidence=0.4,
        scores=SCORES,
        model="news_topic",
        version="1",
        route="news.raw",
        ts=f"2026-12-02T10:0{n}:00+00:00",
    )


def only(n: int) -> Callable[[str], bool]:
    """The pane shows review n's screen and no other's (the screen is cleared each time)."""
    return lambda pane: text_of(n) in pane and sum(text_of(i) in pane for i in range(5)) == 1


def test_worker_review_labels_by_key_press_in_a_terminal(stack: LocalStack, tmp_path: Path):
    tmux = shutil.which("tmux")
    assert tmux, "tmux is not installed: this test needs it to run `worker review` in a terminal"
    tag = uuid.uuid4().hex[:8]
    settings = stack.settings.model_copy(
        update={
            "review_topic": f"labelstream.review.{tag}",
            "feedback_topic": f"labelstream.feedback.{tag}",
        }
    )
    bootstrap = settings.kafka_bootstrap_servers
    seeded = Feedback("r-1", "World", "seed", "2026-12-02T11:00:00+00:00")

    async def seed() -> None:
        await ensure_named_topics(settings, [settings.review_topic, settings.feedback_topic])
        # newest first, over several partitions: the screen must still go oldest first
        newest_first = [review(n) for n in reversed(range(5))]
        await produce(
            bootstrap, settings.review_topic, [(r.id.encode(), r.to_json()) for r in newest_first]
        )
        await produce(bootstrap, settings.feedback_topic, [(b"r-1", seeded.to_json())])

    asyncio.run(seed())
    # this checkout's code, whichever checkout the virtualenv was installed from
    env = worker_env(settings)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    terminal = Tmux(tmux, env, tmp_path)
    command = shlex.join([sys.executable, "-m", "worker", "review", "--by", "tester"])
    try:
        terminal.start(command)
        terminal.wait_for(only(0))
        terminal.press("2")  # Sports; r-1 has feedback already, so r-2 is next
        terminal.wait_for(only(2))
        terminal.press("s")
        terminal.wait_for(only(3))
        terminal.press("1")  # World
        terminal.wait_for(only(4))
        terminal.press("q")
        pane = terminal.wait_for(lambda pane: "exit status" in pane)
    finally:
        terminal.kill()
    assert "stopped: 2 labelled, 1 skipped" in pane and "exit status 0" in pane, pane

    records = asyncio.run(read_topics(bootstrap, [settings.feedback_topic], expect=3, settle_s=2))
    feedback = [validate_feedback(r.value, r.key, settings.max_message_bytes) for r in records]
    assert all(isinstance(f, Feedback) for f in feedback), feedback
    assert all(r.key == f.id.encode() for r, f in zip(records, feedback, strict=True))
    assert {(f.id, f.label, f.by, f.text) for f in feedback} == {
        ("r-1", "World", "seed", None),
        ("r-0", "Sports", "tester", text_of(0)),
        ("r-3", "World", "tester", text_of(3)),
    }
