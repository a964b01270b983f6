"""Live quality per model version: what each version answered, joined with labels, in a window.

While a model is under rollout the ingest writes a :class:`~rayml.protocol.rollouts.
VersionAnswer` per request and version to the shadow topic; labels (:class:`~rayml.protocol.
rollouts.Feedback`) come on the feedback topic, in any order, hours later. The rollout monitor
feeds both to a :class:`QualityWindow` and asks it for figures per version
(:meth:`~QualityWindow.stats`), for the agreement of two versions on the same requests
(:meth:`~QualityWindow.agreement`) and for accuracy over time (:meth:`~QualityWindow.series`).

**The join** is by request id, in either order: a label that comes before its answer waits
(bounded, below) and joins when the answer comes. A request has at most one answer per version:
a second one for the same (id, version), a redelivery, is ignored (the first wins). A second
label for an id replaces the first, in the figures too.

**Predictions and labels** compare as JSON values: an answer's prediction is
``output["label"]`` when its output is an object with a ``"label"``, else the whole output; it is
correct when equal to the label, with numbers compared by value (``1`` equals ``1.0``) and
booleans not numbers (``true`` is not ``1``); lists and objects compare by content. Each value is
kept as a 16-byte digest of its canonical JSON form, so a large output costs no more memory than
a small one, and no value, however odd (unhashable, not JSON), raises; one that cannot be put in
that form (nested too deep, an integer too long to print) equals nothing.

**The figures** of a version: ``answers`` and ``errors`` (``error_rate`` = errors / answers);
``labelled``, its ok answers whose request has a label, and ``correct`` among them
(``accuracy`` = correct / labelled: errors count in the error rate, not in the accuracy); p50 and
p99 of ``compute_ms`` (nearest rank) over the last :data:`SAMPLE_SIZE` answers of the version
still in the window. ``agreement(a, b)``: the requests answered ok by both, and how many of them
got the same prediction.

**Bounds.** A request's time is the ``at_ms`` of its first answer; it stays (in the figures and
in memory) while ``clock - time < window_s``, where the clock is the newest ``at_ms`` of an answer
or ``now_ms`` of a question seen so far (labels' times never move it: a producer sets those). At
most ``max_tracked`` requests per model are kept, the oldest by time forgotten first (an answer
that would be the first forgotten is ignored). Labels waiting for their answer leave by their
own ``at_ms`` in the same way, at most ``max_tracked`` of them in all models. Request ids longer
than :data:`MAX_ID_CHARS` are kept as a digest. So ``len(window)`` stays at most
``max_tracked x (models + 1)`` under any input.

Not thread-safe: one thread (the monitor) feeds it and asks it. Pure: the standard library.

Example:
    >>> w = QualityWindow(window_s=3600, max_tracked=1_000)
    >>> def answer(rid, version, role, output, at_ms):
    ...     return VersionAnswer(id=rid, model="iris", version=version, role=role,
    ...         pipeline="iris.predict", status="ok", output=output, compute_ms=2.5, at_ms=at_ms)
    >>> w.add_feedback(Feedback(id="r1", label=1), at_ms=1_000)  # before its answers: waits
    >>> w.add_answer(answer("r1", "000003", "serving", {"label": 1, "p": 0.9}, 1_500))
    >>> w.add_answer(answer("r1", "000004", "shadow", 1.0, 1_600))
    >>> w.add_answer(answer("r1", "000004", "shadow", 0, 1_700))  # redelivered: ignored
    >>> s = w.stats("iris", now_ms=2_000)["000004"]
    >>> s.answers, s.labelled, s.accuracy, s.p99_ms, sorted(s.roles)
    (1, 1, 1.0, 2.5, ['shadow'])
    >>> w.agreement("iris", "000003", "000004", now_ms=2_000).as_dict()
    {'compared': 1, 'agreed': 1, 'rate': 1.0}
    >>> w.stats("iris", now_ms=1_500 + 3_600_000)  # an hour after its first answer: gone
    {}
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import math
import numbers
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Final, Generic, TypeVar

from rayml.protocol.rollouts import Feedback, VersionAnswer

__all__ = [
    "MAX_ID_CHARS",
    "SAMPLE_SIZE",
    "Agreement",
    "QualityWindow",
    "SeriesPoint",
    "VersionStats",
    "prediction",
    "value_key",
]

MAX_ID_CHARS: Final = 200
"""Request ids up to this long are kept as they are; longer ones as a 16-byte digest."""
SAMPLE_SIZE: Final = 10_000
"""The compute times per version that p50 and p99 are taken from: the window's newest."""

_V = TypeVar("_V")
_Key = str | bytes
_UNIQUE = itertools.count()


@dataclass(frozen=True)
class VersionStats:
    """The figures of one version of a model over the window."""

    version: str
    roles: frozenset[str]
    answers: int
    errors: int
    error_rate: float
    labelled: int
    correct: int
    accuracy: float | None
    p50_ms: float | None
    p99_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON values (``roles`` sorted)."""
        return {**asdict(self), "roles": sorted(self.roles)}


@dataclass(frozen=True)
class Agreement:
    """Requests answered ok by two versions, and how many got the same prediction from both."""

    compared: int
    agreed: int

    @property
    def rate(self) -> float | None:
        """``agreed / compared``, or ``None`` when nothing was compared."""
        return self.agreed / self.compared if self.compared else None

    def as_dict(self) -> dict[str, Any]:
        return {"compared": self.compared, "agreed": self.agreed, "rate": self.rate}


@dataclass(frozen=True)
class SeriesPoint:
    """One version's answers in one time bucket (by answer time), for a plot over time."""

    start_ms: int
    answers: int
    labelled: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        """``correct / labelled``, or ``None`` without labels in the bucket."""
        return self.correct / self.labelled if self.labelled else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy": self.accuracy}


def prediction(output: Any) -> Any:
    """What an output predicts: ``output["label"]`` when it is an object with one, else itself.

    Example:
        >>> prediction({"label": "setosa", "proba": [0.9, 0.1]}), prediction([0.2, 0.8])
        ('setosa', [0.2, 0.8])
    """
    if isinstance(output, dict) and "label" in output:
        return output["label"]
    return output


def value_key(value: Any) -> bytes:
    """A 16-byte key of ``value``: equal for equal JSON values (``1`` and ``1.0``; not ``True``).

    A value that has no canonical form gets a key of its own, equal to no other.

    Example:
        >>> value_key(1) == value_key(1.0), value_key(True) == value_key(1)
        (True, False)
        >>> value_key({"b": [1, 2.0], "a": None}) == value_key({"a": None, "b": [1.0, 2]})
        True
    """
    try:
        text = json.dumps(_canonical(value), sort_keys=True, default=str)
    except Exception:
        # Hostile or odd input must not stop the monitor: nested too deep (RecursionError), an
        # int too long to print (ValueError), an object whose str() raises. Equal to nothing.
        return b"!" + next(_UNIQUE).to_bytes(8, "big")
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _canonical(value: Any) -> Any:
    """``value`` with integral numbers as ints (``1.0`` -> ``1``), tuples as lists, str keys."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return int(number) if number.is_integer() else number
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value  # json.dumps writes it with str()


def _id_key(request_id: str) -> _Key:
    if len(request_id) <= MAX_ID_CHARS:
        return request_id
    # bytes never equal a str, so a digest cannot collide with a short id
    return hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _Aged(Generic[_V]):
    """Values by key that leave oldest first (by time, then by arrival): once at or before a
    cutoff, and when over capacity. A heap of (time, seq, key) whose entries for replaced or
    popped keys are skipped when met, and dropped by a rebuild once they outnumber the live."""

    __slots__ = ("_capacity", "_heap", "_items", "_seq")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: dict[_Key, tuple[float, int, _V]] = {}
        self._heap: list[tuple[float, int, _Key]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: _Key) -> _V | None:
        item = self._items.get(key)
        return None if item is None else item[2]

    def values(self) -> Iterator[_V]:
        return (item[2] for item in self._items.values())

    def admits(self, time: float) -> bool:
        """Whether a new entry at ``time`` would stay (not be the first forgotten)."""
        top = self._top()
        return len(self._items) < self._capacity or top is None or time >= top[0]

    def put(self, key: _Key, time: float, value: _V) -> list[_V]:
        """Add or replace ``key``; the values forgotten to stay within capacity."""
        self._seq += 1
        self._items[key] = (time, self._seq, value)
        heapq.heappush(self._heap, (time, self._seq, key))
        forgotten = []
        while len(self._items) > self._capacity:
            forgotten.append(self._pop_top())
        self._compact()
        return forgotten

    def pop(self, key: _Key) -> _V | None:
        item = self._items.pop(key, None)
        self._compact()
        return None if item is None else item[2]

    def expire(self, cutoff: float) -> list[_V]:
        """Forget the entries at or before ``cutoff``; their values."""
        gone = []
        while (top := self._top()) is not None and top[0] <= cutoff:
            gone.append(self._pop_top())
        return gone

    def _top(self) -> tuple[float, int, _Key] | None:
        heap, items = self._heap, self._items
        while heap:
            _, seq, key = heap[0]
            item = items.get(key)
            if item is not None and item[1] == seq:
                return heap[0]
            heapq.heappop(heap)  # replaced or popped since
        return None

    def _pop_top(self) -> _V:
        top = self._top()
        assert top is not None  # only called while over capacity or with a top at hand
        heapq.heappop(self._heap)
        return self._items.pop(top[2])[2]

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._items) + 64:
            self._heap = [(t, seq, key) for key, (t, seq, _) in self._items.items()]
            heapq.heapify(self._heap)


class _Answer:
    __slots__ = ("at_ms", "pred", "role")

    def __init__(self, at_ms: int, pred: bytes | None, role: str) -> None:
        self.at_ms = at_ms
        self.pred = pred  # None: an error answer
        self.role = role


class _Request:
    __slots__ = ("answers", "key", "label", "seq")

    def __init__(self, key: _Key, seq: int, label: bytes | None) -> None:
        self.key = key
        self.seq = seq  # tells this request from an earlier one of the same id
        self.label = label
        self.answers: dict[str, _Answer] = {}


class _Tally:
    __slots__ = ("answers", "correct", "errors", "labelled", "roles", "sample")

    def __init__(self) -> None:
        self.answers = self.errors = self.labelled = self.correct = 0
        self.roles: Counter[str] = Counter()
        # (request key, request seq, compute_ms), newest last; entries of forgotten requests
        # are skipped when read and pushed out by newer ones.
        self.sample: deque[tuple[_Key, int, float]] = deque(maxlen=SAMPLE_SIZE)


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def _nearest_rank(ordered: list[float], percent: int) -> float:
    return ordered[max(0, -(-percent * len(ordered) // 100) - 1)]


class _Model:
    """One model's requests and the running figures over them."""

    __slots__ = ("pairs", "requests", "tallies")

    def __init__(self, max_tracked: int) -> None:
        self.requests: _Aged[_Request] = _Aged(max_tracked)
        self.tallies: dict[str, _Tally] = {}
        self.pairs: dict[tuple[str, str], list[int]] = {}  # [compared, agreed]

    def add(self, request: _Request, answer: VersionAnswer) -> None:
        pred = value_key(prediction(answer.output)) if answer.status == "ok" else None
        tally = self.tallies.get(answer.version)
        if tally is None:
            tally = self.tallies[answer.version] = _Tally()
        tally.answers += 1
        tally.roles[answer.role] += 1
        if pred is None:
            tally.errors += 1
        else:
            if request.label is not None:
                tally.labelled += 1
                tally.correct += pred == request.label
            for other, earlier in request.answers.items():
                if earlier.pred is not None:
                    pair = self.pairs.setdefault(_pair(other, answer.version), [0, 0])
                    pair[0] += 1
                    pair[1] += earlier.pred == pred
        ms = answer.compute_ms
        if ms is not None and math.isfinite(ms) and ms >= 0:
            tally.sample.append((request.key, request.seq, float(ms)))
        request.answers[answer.version] = _Answer(answer.at_ms, pred, answer.role)

    def relabel(self, request: _Request, label: bytes) -> None:
        old = request.label
        for version, answer in request.answers.items():
            if answer.pred is None:
                continue
            tally = self.tallies[version]
            if old is None:
                tally.labelled += 1
            else:
                tally.correct -= answer.pred == old
            tally.correct += answer.pred == label
        request.label = label

    def remove(self, request: _Request) -> None:
        answers = list(request.answers.items())
        for i, (version, answer) in enumerate(answers):
            tally = self.tallies[version]
            tally.answers -= 1
            tally.roles[answer.role] -= 1
            if not tally.roles[answer.role]:
                del tally.roles[answer.role]
            if answer.pred is None:
                tally.errors -= 1
                continue
            if request.label is not None:
                tally.labelled -= 1
                tally.correct -= answer.pred == request.label
            for other, earlier in answers[:i]:
                if earlier.pred is not None:
                    key = _pair(other, version)
                    pair = self.pairs[key]
                    pair[0] -= 1
                    pair[1] -= earlier.pred == answer.pred
                    if not pair[0]:
                        del self.pairs[key]
        for version, _ in answers:
            if not self.tallies[version].answers:
                del self.tallies[version]

    def stats(self, version: str) -> VersionStats:
        t = self.tallies[version]
        times = sorted(
            ms
            for key, seq, ms in t.sample
            if (r := self.requests.get(key)) is not None and r.seq == seq
        )
        return VersionStats(
            version=version,
            roles=frozenset(t.roles),
            answers=t.answers,
            errors=t.errors,
            error_rate=t.errors / t.answers,
            labelled=t.labelled,
            correct=t.correct,
            accuracy=t.correct / t.labelled if t.labelled else None,
            p50_ms=_nearest_rank(times, 50) if times else None,
            p99_ms=_nearest_rank(times, 99) if times else None,
        )


class QualityWindow:
    """Answers per version joined with labels by request id, bounded (see the module doc).

    Args:
        window_s: How long a request counts after its first answer (``rollout.window_s``).
        max_tracked: Requests kept per model, and labels waiting for an answer in all
            (``rollout.max_tracked``).

    Raises:
        ValueError: ``window_s`` not > 0 or ``max_tracked`` < 1.
    """

    def __init__(self, window_s: float, max_tracked: int) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if max_tracked < 1:
            raise ValueError(f"max_tracked must be >= 1, got {max_tracked}")
        self._window_ms = float(window_s) * 1000.0
        self._max_tracked = max_tracked
        self._models: dict[str, _Model] = {}
        self._labels: _Aged[bytes] = _Aged(max_tracked)  # labels waiting for an answer
        self._clock = -math.inf
        self._seq = 0

    def __len__(self) -> int:
        """Requests kept in all models plus labels waiting for their answer."""
        return sum(len(m.requests) for m in self._models.values()) + len(self._labels)

    @property
    def waiting_labels(self) -> int:
        """Labels kept until their request's answer comes."""
        return len(self._labels)

    def models(self) -> list[str]:
        """The models with requests in the window."""
        return sorted(self._models)

    def add_answer(self, answer: VersionAnswer) -> None:
        """Count what ``answer.version`` answered request ``answer.id`` (the first time only)."""
        self._advance(answer.at_ms)
        key = _id_key(answer.id)
        model = self._models.get(answer.model)
        if model is not None and (request := model.requests.get(key)) is not None:
            if answer.version in request.answers:
                return  # redelivered: the first answer of a version counts
        else:
            if answer.at_ms <= self._cutoff():
                return  # already out of the window
            if model is None:
                model = self._models[answer.model] = _Model(self._max_tracked)
            if not model.requests.admits(answer.at_ms):
                return  # older than every request kept: it would be the first forgotten
            self._seq += 1
            request = _Request(key, self._seq, self._labels.pop(key))
            for forgotten in model.requests.put(key, answer.at_ms, request):
                model.remove(forgotten)
        model.add(request, answer)

    def add_feedback(self, feedback: Feedback, at_ms: int) -> None:
        """Label request ``feedback.id`` (replacing an earlier label), which arrived at ``at_ms``.

        Joined at once with the answers kept for that id, in every model; without any, it
        waits for them until ``window_s`` after ``at_ms`` (or until forgotten for room).
        """
        key = _id_key(feedback.id)
        label = value_key(feedback.label)
        joined = False
        for model in self._models.values():
            request = model.requests.get(key)
            if request is not None:
                model.relabel(request, label)
                joined = True
        if joined:
            return
        self._labels.pop(key)  # a second label replaces the first
        if at_ms > self._cutoff() and self._labels.admits(at_ms):
            self._labels.put(key, at_ms, label)

    def stats(self, model: str, now_ms: int) -> dict[str, VersionStats]:
        """The figures of each version of ``model`` in the window at ``now_ms``, by version."""
        self._advance(now_ms)
        m = self._models.get(model)
        return {} if m is None else {v: m.stats(v) for v in sorted(m.tallies)}

    def agreement(self, model: str, a: str, b: str, now_ms: int) -> Agreement:
        """The requests of ``model`` answered ok by both ``a`` and ``b``; how many alike."""
        self._advance(now_ms)
        m = self._models.get(model)
        if m is None:
            return Agreement(0, 0)
        if a == b:
            tally = m.tallies.get(a)
            ok = 0 if tally is None else tally.answers - tally.errors
            return Agreement(ok, ok)
        compared, agreed = m.pairs.get(_pair(a, b), (0, 0))
        return Agreement(compared, agreed)

    def series(self, model: str, bucket_s: float, now_ms: int) -> dict[str, list[SeriesPoint]]:
        """Per version, its answers in the window by time bucket of ``bucket_s`` (by answer
        ``at_ms``; buckets start at multiples of ``bucket_s`` since the epoch), oldest first;
        buckets without an answer of the version are left out.

        Raises:
            ValueError: ``bucket_s`` under 1 ms.
        """
        if not bucket_s >= 0.001:
            raise ValueError(f"bucket_s must be >= 0.001, got {bucket_s}")
        self._advance(now_ms)
        m = self._models.get(model)
        if m is None:
            return {}
        bucket_ms = float(bucket_s) * 1000.0
        counts: dict[str, dict[int, list[int]]] = {}
        for request in m.requests.values():
            for version, answer in request.answers.items():
                bucket = counts.setdefault(version, {}).setdefault(
                    math.floor(answer.at_ms / bucket_ms), [0, 0, 0]
                )
                bucket[0] += 1
                if answer.pred is not None and request.label is not None:
                    bucket[1] += 1
                    bucket[2] += answer.pred == request.label
        return {
            version: [
                SeriesPoint(math.floor(index * bucket_ms), *buckets[index])
                for index in sorted(buckets)
            ]
            for version, buckets in sorted(counts.items())
        }

    def forget_model(self, model: str) -> None:
        """Drop everything kept for ``model`` (its rollout ended)."""
        self._models.pop(model, None)

    def _cutoff(self) -> float:
        return self._clock - self._window_ms

    def _advance(self, now_ms: float) -> None:
        if now_ms <= self._clock:
            return
        self._clock = now_ms
        cutoff = self._cutoff()
        for name, model in list(self._models.items()):
            for request in model.requests.expire(cutoff):
                model.remove(request)
            if not len(model.requests):
                del self._models[name]
        self._labels.expire(cutoff)
