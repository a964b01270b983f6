"""What happens to a batch whose worker failed: who is charged, what is split, what gives up.

A batch fails as a whole when its worker dies (a pipeline that kills its process, Ray's memory
monitor), hangs past the batch time bound (the dispatcher ends the worker), or raises outside
the pipeline's own error handling. Only a batch known to have caused the failure is a
*culprit*:

* the batch running alone on its worker (``exclusive``), the batch that ran past the time
  bound, or a batch whose call raised;
* not a batch that was on a dying worker together with others: which one ran when it died is
  unknown (a finished batch's reply can be lost with the process), so each of them is resent
  whole, uncharged, and *isolated*: sent only to a worker with nothing else in flight, so that
  its next failure is its own;
* not the batches queued behind a hung one (*bystanders*): resent whole, uncharged.

A culprit is split in halves and resent at the front of the queue, uncharged and isolated; a
culprit of one request is the only one charged (``failures``) and gives up after
``max_attempts`` charged failures. So one poison request in a batch of 1,024 costs O(log n)
calls and is the only request that gives up; its 1,023 batch-mates get their normal results.
Every isolation makes the next failure attributable, every split halves a batch and every
charge counts towards ``max_attempts``, so nothing loops for ever. Pure: no ``ray``.
"""

from __future__ import annotations

from rayml.executor.work import Pending

__all__ = ["after_failure"]


def after_failure(
    items: list[Pending], *, culprit: bool, max_attempts: int, charge_all: bool = False
) -> tuple[list[list[Pending]], list[Pending]]:
    """The parts to resend (in the order they should run) and the requests that give up.

    Args:
        items: The failed batch's requests.
        culprit: The batch is known to have caused the failure (see the module docstring);
            otherwise it is resent whole and uncharged.
        max_attempts: Charged failures a request may have before it gives up.
        charge_all: Charge every request of a culprit batch (a failure of the worker's code
            outside the pipeline, which is likely not one request's): it is split and retried,
            and gives up after ``max_attempts`` rounds instead of being split to single
            requests first.

    >>> from types import SimpleNamespace
    >>> batch = [SimpleNamespace(failures=0) for _ in range(4)]
    >>> parts, gave_up = after_failure(batch, culprit=True, max_attempts=3)
    >>> [len(p) for p in parts], gave_up, [i.failures for i in batch]
    ([2, 2], [], [0, 0, 0, 0])
    >>> alone = [SimpleNamespace(failures=2)]
    >>> after_failure(alone, culprit=True, max_attempts=3)
    ([], [namespace(failures=3)])
    """
    if not items:
        return [], []
    if not culprit:
        return [items], []
    if charge_all:
        for item in items:
            item.failures += 1
        gave_up = [i for i in items if i.failures >= max_attempts]
        left = [i for i in items if i.failures < max_attempts]
        if len(left) > 1:
            middle = len(left) // 2
            return [left[:middle], left[middle:]], gave_up
        return ([left] if left else []), gave_up
    if len(items) > 1:
        middle = len(items) // 2
        return [items[:middle], items[middle:]], []
    item = items[0]
    item.failures += 1
    if item.failures >= max_attempts:
        return [], [item]
    return [[item]], []
