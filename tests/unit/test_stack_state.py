"""State file and process helpers of the local stack (no Kafka or Triton needed)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from devstack.state import (
    StackError,
    StateFile,
    free_port,
    free_ports,
    pid_alive,
    port_free,
    port_open,
    proc_start_time,
    spawn,
    stop_pid,
    tail,
)


def test_state_file_round_trip_merges_sections(tmp_path):
    state = StateFile(tmp_path / "deep" / "stack.json")
    assert state.load() == {}
    state.update("kafka", pid=1, port=9092)
    state.update("triton", pid=2)
    state.update("kafka", pid=None)
    assert state.section("kafka") == {"pid": None, "port": 9092}
    assert json.loads(state.path.read_text())["triton"] == {"pid": 2}
    assert not list(state.path.parent.glob("*.tmp-*"))


def test_corrupt_state_file_says_what_to_do(tmp_path):
    state = StateFile(tmp_path / "stack.json")
    state.path.write_text("{not json")
    with pytest.raises(StackError, match="delete it"):
        state.load()


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        assert port_free(port)
    assert port_free(free_port())


def test_port_free_and_open_see_a_listener():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_free(port)
        assert port_open(port)
    assert not port_open(port)


def test_pid_alive():
    assert pid_alive(None) is False
    assert pid_alive(0) is False
    assert pid_alive(-5) is False
    assert pid_alive(2**22 + 12345) is False


def test_exited_child_is_not_alive_even_unreaped():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    time.sleep(0.5)
    assert not pid_alive(proc.pid)


def test_recycled_pid_is_not_ours():
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        started = proc_start_time(proc.pid)
        assert started is not None
        assert pid_alive(proc.pid, started)
        assert not pid_alive(proc.pid, started + 1)
        assert stop_pid(proc.pid, started + 1) is False
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_stop_pid_sigterm(tmp_path):
    proc = spawn(["sleep", "30"], tmp_path / "sleep.log")
    assert stop_pid(proc.pid, proc_start_time(proc.pid), timeout=5) is False
    assert not pid_alive(proc.pid)
    proc.wait(timeout=1)  # already reaped by stop_pid; must not hang


def test_stop_pid_escalates_to_sigkill_for_the_group(tmp_path):
    code = (
        "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen(['sleep', '30']); print('ready', flush=True); time.sleep(30)"
    )
    proc = spawn([sys.executable, "-c", code], tmp_path / "stubborn.log")
    deadline = time.monotonic() + 10
    while "ready" not in tail(tmp_path / "stubborn.log") and time.monotonic() < deadline:
        time.sleep(0.05)
    group = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True)
    members = [int(p) for p in group.stdout.split()]
    assert len(members) == 2
    assert stop_pid(proc.pid, timeout=0.5) is True
    time.sleep(0.2)
    assert not any(pid_alive(p) for p in members)


def test_stop_pid_tolerates_dead_processes():
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert stop_pid(proc.pid) is False
    assert stop_pid(None) is False


def test_spawn_appends_stdout_and_stderr_to_the_log(tmp_path):
    log = tmp_path / "logs" / "echo.log"
    proc = spawn(["sh", "-c", "echo out; echo err >&2"], log)
    proc.wait(timeout=5)
    text = log.read_text()
    assert "out" in text and "err" in text
    spawn(["echo", "second"], log).wait(timeout=5)
    assert log.read_text().startswith(text)


def test_spawn_starts_a_new_session(tmp_path):
    proc = spawn(["sleep", "30"], tmp_path / "s.log")
    try:
        sid = int(subprocess.check_output(["ps", "-o", "sid=", "-p", str(proc.pid)]))
        assert sid == proc.pid
    finally:
        stop_pid(proc.pid, timeout=5)


def test_tail(tmp_path):
    path = tmp_path / "x.log"
    assert "no log" in tail(path)
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(path, 3) == "line 97\nline 98\nline 99"
