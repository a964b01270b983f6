"""Peak resident memory (RSS) of a contender's processes, sampled in a background thread.

Ray names its worker processes after the actor they host (``ray::IngestActorImpl``,
``ray::ModelWorker``), so the processes of the rayml executor are found among this driver's
descendants by name; Ray's own services (GCS, raylet, agents, idle pre-started workers) are
tracked apart, as ``ray system``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import psutil

GroupFn = Callable[[], dict[str, list[int]]]


def rayml_groups(exclude: Iterable[int] = ()) -> dict[str, list[int]]:
    """This driver, the ingest actor(s), the model workers, and Ray's other processes."""
    excluded = set(exclude)
    groups: dict[str, list[int]] = {
        "driver": [os.getpid()],
        "ingest": [],
        "workers": [],
        "ray system": [],
    }
    for proc in psutil.Process().children(recursive=True):
        try:
            name = proc.name()
        except psutil.Error:
            continue
        if proc.pid in excluded or name == "java":
            continue
        if name.startswith("ray::IngestActorImpl"):
            groups["ingest"].append(proc.pid)
        elif name.startswith("ray::ModelWorker"):
            groups["workers"].append(proc.pid)
        elif _is_ray_service(name):
            groups["ray system"].append(proc.pid)
    return groups


def _is_ray_service(name: str) -> bool:
    return name.startswith("ray::") or name in {"gcs_server", "raylet", "python"}


def process_group(pid: int) -> GroupFn:
    """One process (a baseline consumer) and its children."""

    def groups() -> dict[str, list[int]]:
        try:
            proc = psutil.Process(pid)
            return {"process": [pid] + [c.pid for c in proc.children(recursive=True)]}
        except psutil.Error:
            return {"process": []}

    return groups


class RssSampler:
    """Samples the RSS of each group every ``interval_s``; keeps each group's peak and the peak
    of the sum over ``counted`` groups (taken at one instant, not a sum of separate peaks)."""

    def __init__(self, groups: GroupFn, counted: Iterable[str], interval_s: float = 0.1) -> None:
        self._groups = groups
        self._counted = set(counted)
        self._interval_s = interval_s
        self.peak_by_group: dict[str, int] = {}
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        total = 0
        for group, pids in self._groups().items():
            rss = 0
            for pid in pids:
                try:
                    rss += psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue
            self.peak_by_group[group] = max(self.peak_by_group.get(group, 0), rss)
            if group in self._counted:
                total += rss
        self.peak_total = max(self.peak_total, total)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval_s)


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, tuple[float, float]]:
    """Per group: (seconds its threads ran on a CPU, seconds they waited, runnable, for one).

    From ``/proc/PID/task/TID/schedstat`` (on-CPU time, run-queue wait time) summed over every
    thread of every live process of the group. The wait is what an oversubscribed machine costs
    a process: time it was ready to run while other work held the cores.
    """
    out: dict[str, tuple[float, float]] = {}
    for group, pids in groups.items():
        ran = waited = 0.0
        for pid in pids:
            for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
                try:
                    on_cpu, on_queue, _slices = stat.read_text().split()
                except (OSError, ValueError):
                    continue
                ran += int(on_cpu) / 1e9
                waited += int(on_queue) / 1e9
        out[group] = (ran, waited)
    return out


def thread_times(pid: int) -> Iterator[tuple[str, float]]:
    """Each live thread of process ``pid``: its name (``comm``) and its on-CPU seconds."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            comm = (task / "comm").read_text().strip()
            on_cpu = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            continue
        yield comm, on_cpu


def thread_kind_seconds(pids: Iterable[int]) -> dict[str, float]:
    """On-CPU seconds of the processes ``pids``, by kind of thread (from each thread's name):

    * ``python``: threads named as their process (Python does not name its threads for the
      kernel: the interpreter's main thread, an ingest loop, Ray's Python-side threads; a
      thread keeps the name its process had when it started, and Ray renames actor processes
      ``ray::...``);
    * ``kafka``: librdkafka's own threads (``rdk:main``, ``rdk:broker...``), which fetch,
      decompress, batch, compress and send for the consumer and producer;
    * ``ray core``: every other thread (Ray's C++ core worker: gRPC, the object store client,
      the event loop), which carries the Ray calls.
    """
    out = {"python": 0.0, "kafka": 0.0, "ray core": 0.0}
    for pid in pids:
        try:
            own = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        for comm, on_cpu in thread_times(pid):
            if comm.startswith("rdk:"):
                kind = "kafka"
            elif comm == own or comm.startswith(("ray::", "python")):
                kind = "python"  # named for the process (at the thread's start: Ray renames it)
            else:
                kind = "ray core"
            out[kind] += on_cpu
    return out


def jvm_thread_seconds(pid: int) -> dict[str, float]:
    """On-CPU seconds of a JVM (the broker) by kind of thread: its JIT ``compiler``, its
    garbage collector (``gc``), and the rest (``requests``: network and request handler
    threads, log and replication work)."""
    out = {"requests": 0.0, "compiler": 0.0, "gc": 0.0}
    for comm, on_cpu in thread_times(pid):
        if "CompilerThre" in comm:
            out["compiler"] += on_cpu
        elif comm.startswith(("GC Thread", "G1 ")):
            out["gc"] += on_cpu
        else:
            out["requests"] += on_cpu
    return out
