"""Ending what is left of the local Ray's session (``rayml.cli.local_ray``), on plain processes.

No Ray here: a shell in a session of its own stands in for the helper, its children for Ray's
processes (the raylet's workers, too, stay in the helper's session).
"""

from __future__ import annotations

import subprocess
import time

import psutil

from rayml.cli.local_ray import end_session, session_processes


def _session_with_children(script: str) -> subprocess.Popen[bytes]:
    leader = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 10
    while len(session_processes(leader.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    return leader


def test_session_processes_are_the_leader_and_its_descendants() -> None:
    leader = _session_with_children("sleep 30 & sleep 30 & wait")
    try:
        found = {p.pid for p in session_processes(leader.pid)}
        children = {c.pid for c in psutil.Process(leader.pid).children(recursive=True)}
        assert found == {leader.pid} | children
        assert len(children) == 2
    finally:
        end_session(leader.pid, grace_s=0)
        leader.wait(10)


def test_end_session_kills_what_outlives_the_grace_and_waits_for_the_rest() -> None:
    # One child exits within the grace (not killed); one would run 30 s (killed by pid). The
    # leader exits at once, as the helper does after ray.shutdown(), leaving its children.
    # The grace is long beside the short children's lives: on a loaded machine they start late.
    leader = _session_with_children("sleep 0.3 & sleep 60 & sleep 0.5")
    stubborn = next(p.pid for p in session_processes(leader.pid) if p.cmdline()[-1:] == ["60"])
    leader.wait(10)
    started = time.monotonic()
    killed = end_session(leader.pid, grace_s=4.0)
    assert killed == [stubborn]
    assert time.monotonic() - started >= 4.0
    assert session_processes(leader.pid) == []


def test_end_session_returns_at_once_when_nothing_is_left() -> None:
    leader = subprocess.Popen(["true"], start_new_session=True)
    leader.wait(10)
    started = time.monotonic()
    assert end_session(leader.pid, grace_s=30) == []
    assert time.monotonic() - started < 5
