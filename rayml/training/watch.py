"""When each trial's task started, which ran past their time bound, which wait for resources.

Pure bookkeeping for :class:`~rayml.training.trials.TrialScheduler` (no Ray, no Kafka), so its
rules are unit-tested with a fake clock:

* a trial's time bound counts from when its task **started running** -- the task says so
  itself, first thing (:class:`~rayml.training.task.TrialStarted`) -- not from its launch: a
  task that Ray holds until a node has its resources is not charged for the wait;
* a task not started ``notice_s`` after its launch is *waiting*: a notice is due then, and
  again every ``notice_s`` while it waits (:meth:`TrialClock.notices_due`);
* :func:`waiting_message` says what it waits for, from the cluster's free and total resources;
* a task not started ``max_wait_s`` after its launch has waited too long
  (:meth:`TrialClock.overwaited`): the runner cancels it and fails the trial with
  ``resources_unavailable``;
* a trial that asks for more than any node has in total can never start there
  (:func:`unplaceable` says so, naming the largest node, :func:`largest_node`): it fails at
  once rather than hold a slot and its partition for ever.

Example:
    >>> clock: TrialClock[str] = TrialClock(notice_s=5.0)
    >>> clock.launched("t0", now=100.0, bound_s=60.0)
    >>> clock.notices_due(now=104.0), clock.notices_due(now=105.0)
    ([], [('t0', 5.0)])
    >>> clock.started("t0", now=107.0)  # it had waited 7 s
    7.0
    >>> clock.overdue(now=166.0), clock.overdue(now=167.5)
    ([], ['t0'])
    >>> print(unplaceable({"CPU": 64.0}, [{"CPU": 2.0, "memory": 8e9}, {"CPU": 1.0}]))
    needs {'CPU': 64.0}, more than any node of the cluster has (the largest has {'CPU': 2.0})
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["TrialClock", "largest_node", "needs_of", "unplaceable", "waiting_message"]

K = TypeVar("K", bound=Hashable)


@dataclass
class _Watched:
    launched: float
    bound_s: float | None
    next_notice: float
    started: float | None = None


class TrialClock(Generic[K]):
    """Launch and start times of the running trials, keyed by whatever names a task.

    Args:
        notice_s: How long after its launch an unstarted task is reported as waiting, and how
            often again while it waits.
        max_wait_s: How long an unstarted task may wait before :meth:`overwaited` reports it
            (``None``: for ever).
    """

    def __init__(self, notice_s: float, max_wait_s: float | None = None) -> None:
        self.notice_s = notice_s
        self.max_wait_s = max_wait_s
        self._tasks: dict[K, _Watched] = {}

    def launched(self, key: K, now: float, bound_s: float | None) -> None:
        """A task was launched; ``bound_s`` (``None``: no bound) will count from its start."""
        self._tasks[key] = _Watched(now, bound_s, now + self.notice_s)

    def started(self, key: K, now: float) -> float | None:
        """The task said it started; returns how long it had waited (``None``: unknown key)."""
        watched = self._tasks.get(key)
        if watched is None or watched.started is not None:
            return None
        watched.started = now
        return now - watched.launched

    def is_started(self, key: K) -> bool:
        watched = self._tasks.get(key)
        return watched is not None and watched.started is not None

    def forget(self, key: K) -> None:
        """The task is back, cancelled or given up."""
        self._tasks.pop(key, None)

    def overdue(self, now: float) -> list[K]:
        """Started tasks that have run longer than their bound (each is reported until
        forgotten)."""
        return [
            key
            for key, w in self._tasks.items()
            if w.started is not None and w.bound_s is not None and now - w.started > w.bound_s
        ]

    def overwaited(self, now: float) -> list[tuple[K, float]]:
        """Unstarted tasks launched more than ``max_wait_s`` ago, with how long each has waited
        (each is reported until forgotten or started).

        Example:
            >>> clock: TrialClock[str] = TrialClock(notice_s=5.0, max_wait_s=30.0)
            >>> clock.launched("t0", now=0.0, bound_s=None)
            >>> clock.overwaited(now=30.0), clock.overwaited(now=30.5)
            ([], [('t0', 30.5)])
        """
        limit = self.max_wait_s
        if limit is None:
            return []
        return [
            (key, now - w.launched)
            for key, w in self._tasks.items()
            if w.started is None and now - w.launched > limit
        ]

    def notices_due(self, now: float) -> list[tuple[K, float]]:
        """Unstarted tasks whose waiting notice is due, with how long each has waited; the next
        notice of each is then due ``notice_s`` later."""
        due: list[tuple[K, float]] = []
        for key, w in self._tasks.items():
            if w.started is None and now >= w.next_notice:
                w.next_notice = now + self.notice_s
                due.append((key, now - w.launched))
        return due

    def waiting_since(self, key: K) -> float | None:
        """When an unstarted task was launched (``None``: started or unknown)."""
        w = self._tasks.get(key)
        return None if w is None or w.started is not None else w.launched

    def bound_of(self, key: K) -> float | None:
        w = self._tasks.get(key)
        return None if w is None else w.bound_s

    def __len__(self) -> int:
        return len(self._tasks)


def needs_of(num_cpus: float, num_gpus: float, memory: int | None) -> dict[str, float]:
    """A pipeline's resources as Ray names them (what a trial's task reserves).

    Example:
        >>> needs_of(1, 0, None), needs_of(0.5, 1, 2**30)
        ({'CPU': 1.0}, {'CPU': 0.5, 'GPU': 1.0, 'memory': 1073741824.0})
    """
    needs = {"CPU": float(num_cpus)}
    if num_gpus:
        needs["GPU"] = float(num_gpus)
    if memory:
        needs["memory"] = float(memory)
    return needs


def waiting_message(
    needs: Mapping[str, float], free: Mapping[str, float], total: Mapping[str, float]
) -> str:
    """What an unstarted trial waits for, from the cluster's free and total resources.

    ``free`` is summed over the nodes: a trial can wait with enough free in total when no
    single node has it all, or while Ray starts a worker process for it; the message says
    ``waiting to start`` then, ``waiting for resources`` when the cluster is short.

    Example:
        >>> print(waiting_message({"CPU": 1.0}, {"CPU": 0.0}, {"CPU": 2.0}))
        waiting for resources: needs {'CPU': 1.0}; the cluster has {'CPU': 0.0} free of {'CPU': 2.0}
        >>> print(waiting_message({"CPU": 1.0}, {"CPU": 1.5}, {"CPU": 2.0}))
        waiting to start: needs {'CPU': 1.0}; the cluster has {'CPU': 1.5} free of {'CPU': 2.0}
    """
    has = {key: round(float(free.get(key, 0.0)), 4) for key in needs}
    of = {key: round(float(total.get(key, 0.0)), 4) for key in needs}
    short = any(has[key] < amount for key, amount in needs.items())
    what = "waiting for resources" if short else "waiting to start"
    return f"{what}: needs {dict(needs)}; the cluster has {has} free of {of}"


def largest_node(
    needs: Mapping[str, float], nodes: Sequence[Mapping[str, float]]
) -> dict[str, float]:
    """The node that comes closest to ``needs`` (the one whose scarcest needed resource covers
    the largest share of the need; ties: the most of them in all), as what it has of each
    needed resource; ``{}`` without nodes.

    Example:
        >>> largest_node({"CPU": 4.0, "GPU": 1.0}, [{"CPU": 16.0}, {"CPU": 2.0, "GPU": 1.0}])
        {'CPU': 2.0, 'GPU': 1.0}
    """
    if not nodes:
        return {}

    def closeness(node: Mapping[str, float]) -> tuple[float, float]:
        shares = [min(1.0, node.get(k, 0.0) / v) for k, v in needs.items() if v > 0]
        return (min(shares, default=1.0), sum(node.get(k, 0.0) for k in needs))

    best = max(nodes, key=closeness)
    return {key: round(float(best.get(key, 0.0)), 4) for key in needs}


def unplaceable(needs: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> str | None:
    """Why no node of the cluster can ever run a task that needs ``needs`` (each node's
    *total* resources, not what is free now), or ``None`` when one can -- or when ``nodes`` is
    empty (the cluster could not be read: nothing is decided).

    Example:
        >>> unplaceable({"CPU": 1.0}, [{"CPU": 2.0}]) is None, unplaceable({"CPU": 1.0}, [])
        (True, None)
        >>> print(unplaceable({"GPU": 1.0}, [{"CPU": 8.0}]))
        needs {'GPU': 1.0}, more than any node of the cluster has (the largest has {'GPU': 0.0})
    """
    if not nodes:
        return None
    for node in nodes:
        if all(node.get(key, 0.0) >= amount for key, amount in needs.items()):
            return None
    return (
        f"needs {dict(needs)}, more than any node of the cluster has "
        f"(the largest has {largest_node(needs, nodes)})"
    )
