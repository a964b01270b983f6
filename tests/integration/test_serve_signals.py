"""``rayml serve`` on a local Ray of its own, stopped by a signal to its whole process group.

``kill -TERM -<pgid>`` (and any process manager that signals a group) reaches every process of
``rayml serve``'s process group. The local Ray that ``rayml serve`` starts without
``--ray-address`` runs in a session of its own (``rayml/cli/local_ray.py``), so the signal
reaches the serve alone: it drains, commits what was answered, then ends its Ray.

The test runs the real command as a subprocess in a session of its own (as a shell job or a
service would run), sends a burst to a slow pipeline, checks that the serve's process group holds
the serve alone, signals the group mid-burst (and again during the drain), and checks: exit 0,
the second signal said and the drain clean and within its bound; the committed offsets are exactly
the answered requests (per input partition, the answered offsets are ``0 .. committed - 1``: no
answered request left uncommitted, none committed unanswered); no process of the serve's session
nor of its Ray's session is left; a restart answers the rest and no id twice.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from rayml.config import Settings
from tests.support.executor_process import settings_env
from tests.support.kafka_io import (
    CLIENT_LOG,
    ResultCollector,
    committed_equals_end,
    predict_request,
    send_requests,
)
from tests.support.models import breast_cancer_rows
from tests.support.scenarios import slow_pipeline_settings

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
N = 2_000
# Seconds a batch of the `testing.slow` pipeline takes (read by the workers, which inherit the
# serve's environment through its Ray). Batches of 25 on 2 workers answer ~100 requests a
# second, so a drain of the 1,000-request in-flight window lasts ~10 s. (When the signal
# reached a local Ray in the serve's group, its workers died 8 to 20 s after the raylet here:
# whether a drain survived was a matter of timing. The process-group check below is what
# fails deterministically in that case.)
SLOW_S = "0.5"
IN_FLIGHT = 1_000


class ServeProcess:
    """``python -m rayml.cli.main serve`` with no Ray address, in a session of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._ready = threading.Event()

    def start(self, timeout_s: float = 150.0) -> ServeProcess:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("RAYML_") and k != "RAY_ADDRESS"
        }
        env.update(settings_env(self.settings))
        env.update({"PYTHONPATH": str(REPO), "SLOW_PIPELINE_S": SLOW_S})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rayml.cli.main", "--log-level", "INFO", "serve"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group (and session), as a shell job's
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout_s):
            self.kill()
            raise AssertionError("rayml serve did not get ready:\n" + "\n".join(self.log[-40:]))
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            if line.strip() == "READY":
                self._ready.set()

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # start_new_session: the serve leads its group and session

    def signal_group(self, signum: int) -> None:
        os.killpg(self.pgid, signum)

    def wait_for_log(self, pattern: str, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = next((ln for ln in list(self.log) if re.search(pattern, ln)), None)
            if line is not None:
                return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r} in {timeout_s}s:\n{self.notable()}")

    def ray_session(self) -> int:
        """The session id of the local Ray this serve started (from its own log line)."""
        line = self.wait_for_log(r"local Ray started apart: session \d+", timeout_s=1)
        match = re.search(r"session (\d+)", line)
        assert match is not None
        return int(match.group(1))

    def exit_code(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def notable(self) -> str:
        keep = ("WARNING", "ERROR", "drain", "signal", "Ray", "Traceback", "Error")
        return "\n".join([ln for ln in self.log if any(k in ln for k in keep)][-60:])

    def kill(self) -> None:
        """SIGKILL by pid (a test that failed half-way must not leave a serve behind)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def _alive_in_session(sid: int) -> list[str]:
    """Processes (not zombies) whose session id is ``sid``: ``"pid name"`` each."""
    found = []
    for proc in psutil.process_iter(["name", "status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.pid} {proc.info['name']}")
        except OSError:
            continue  # gone meanwhile
    return found


def _alive_in_group(pgid: int) -> list[int]:
    """The pids of the live processes (not zombies) of process group ``pgid``."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except OSError:
            continue
    return found


def _burst(settings: Settings) -> list[str]:
    ids = [f"{i}-{uuid.uuid4().hex[:8]}" for i in range(N)]
    rows = breast_cancer_rows(N)
    send_requests(
        settings,
        (
            predict_request(rid, row.tolist(), pipeline="testing.slow")
            for rid, row in zip(ids, rows, strict=True)
        ),
    )
    return ids


def _input_positions(settings: Settings, count: int) -> dict[str, tuple[int, int]]:
    """Each request id's (partition, offset) on the input topic."""
    reader = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "logger": CLIENT_LOG,
            "group.id": f"positions-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    topic = settings.topics.input
    reader.assign(
        [
            TopicPartition(topic, p, OFFSET_BEGINNING)
            for p in range(settings.topics.input_partitions)
        ]
    )
    positions: dict[str, tuple[int, int]] = {}
    deadline = time.monotonic() + 60
    try:
        while len(positions) < count and time.monotonic() < deadline:
            for msg in reader.consume(5000, timeout=0.5):
                if msg.error() is None:
                    positions[msg.key().decode()] = (msg.partition(), msg.offset())
    finally:
        reader.close()
    assert len(positions) == count, f"read {len(positions)} of {count} requests back"
    return positions


def _committed(settings: Settings) -> dict[int, int]:
    probe = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "logger": CLIENT_LOG,
            "group.id": settings.executor.group_id,
            "enable.auto.commit": False,
        }
    )
    try:
        parts = [
            TopicPartition(settings.topics.input, p)
            for p in range(settings.topics.input_partitions)
        ]
        return {tp.partition: max(tp.offset, 0) for tp in probe.committed(parts, timeout=10)}
    finally:
        probe.close()


def _wait_results(collector: ResultCollector, at_least: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while len(collector.results) < at_least and time.monotonic() < deadline:
        collector.poll()
    return len(collector.results)


def test_process_group_sigterm_drains_commits_and_ends_its_own_ray(settings: Settings) -> None:
    settings = slow_pipeline_settings(
        settings, max_batch_size=25, max_in_flight=IN_FLIGHT, drain_timeout_s=40.0
    )
    bound = settings.executor.drain_timeout_s
    collector = ResultCollector(settings)
    first = ServeProcess(settings).start()
    try:
        ray_sid = first.ray_session()
        ids = _burst(settings)
        # What a group signal reaches: the serve alone, none of its Ray's processes.
        assert _alive_in_group(first.pgid) == [first.pgid]
        assert len(_alive_in_session(ray_sid)) >= 3  # the helper, the GCS, the raylet, ...
        seen = _wait_results(collector, 200)
        signalled = time.monotonic()
        first.signal_group(signal.SIGTERM)  # what `kill -TERM -<pgid>` does
        first.wait_for_log(r"signal 15: draining")
        # A second signal during the drain (an impatient operator): said, and the drain goes on.
        first.signal_group(signal.SIGTERM)
        first.wait_for_log(r"again: already draining")
        code = first.exit_code(bound + 60)
        took = time.monotonic() - signalled
    finally:
        first.kill()
    assert "drained cleanly" in "\n".join(first.log), first.notable()
    assert code == 0, first.notable()
    again = next(i for i, ln in enumerate(first.log) if "again: already draining" in ln)
    drained = next(i for i, ln in enumerate(first.log) if "drained cleanly" in ln)
    assert again < drained, "the second signal must land during the drain"
    assert took <= bound + 15, "the drain bound, plus the shutdown of the serve and its Ray"
    # Nothing of this serve is left: not in its own session (where Ray's processes were before),
    # not in its Ray's session.
    assert _alive_in_session(first.pgid) == []
    assert _alive_in_session(ray_sid) == [], first.notable()

    # Everything answered is committed, and nothing more: per input partition the answered
    # requests are exactly the offsets below the committed one.
    collector.poll_until_quiet()
    answered = set(collector.results)
    assert seen <= len(answered) < N, "the signal must land mid-burst"
    positions = _input_positions(settings, N)
    committed = _committed(settings)
    for p, position in committed.items():
        offsets = sorted(positions[i][1] for i in answered if positions[i][0] == p)
        assert offsets == list(range(position)), f"partition {p}: committed {position}"
    print(
        f"\nprocess-group SIGTERM after {seen} results: {len(answered)} answered, "
        f"{sum(committed.values())} committed, {N - len(answered)} left for the restart; "
        f"exited {took:.1f}s after the signal"
    )

    second = ServeProcess(settings).start()
    try:
        results = collector.wait_for(ids, timeout_s=120)
        second_sid = second.ray_session()
        second.signal_group(signal.SIGTERM)
        assert second.exit_code(bound + 60) == 0, second.notable()
    finally:
        second.kill()
    collector.poll_until_quiet()
    collector.close()
    assert _alive_in_session(second.pgid) == []
    assert _alive_in_session(second_sid) == []
    assert {i: len(collector.results[i]) for i in answered} == dict.fromkeys(answered, 1)
    assert sum(len(rs) - 1 for rs in collector.results.values()) == 0
    assert all(rs[0].status == "ok" for rs in results.values())
    committed_after, ends = committed_equals_end(
        settings,
        settings.topics.input,
        settings.executor.group_id,
        settings.topics.input_partitions,
    )
    assert committed_after == ends
