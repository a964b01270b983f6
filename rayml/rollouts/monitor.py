"""The rollout monitor: live quality per version, and the policy's decisions.

A thread in each executor's driver (:class:`rayml.executor.service.Executor`) reads the shadow,
feedback and models topics (:class:`~rayml.rollouts.reading.RolloutReader`, from
``rollout.window_s`` back, so a restarted executor rebuilds its figures from the topics), joins
answers with ground truth (:class:`~rayml.rollouts.quality.QualityWindow`) and, every
``rollout.interval_s``, asks the policy (:func:`rayml.rollouts.policy.decide`) about each model
under rollout. With ``rollout.auto_decide`` it then writes the decision to the models topic:

* **promote**: a serving record that serves the candidate (``action: "promoted"``), the served
  version joining ``previous`` so ``rayml models rollback`` can return to it;
* **abort**: the serving record without its rollout (``action: "rollout_aborted"``).

The reason names every figure compared. A decision is written only while the record it read
still holds that rollout (same candidate, same start): if two executors decide at once, the
second finds the rollout ended and writes nothing more (the window between the read and the
write is the models topic's round trip). Figures are served to ``status()`` (any thread).

**Drift** (:mod:`rayml.rollouts.drift`): the answers' input vectors and predictions also go to
a :class:`~rayml.rollouts.drift.DriftWindow`; the figures show, per version, the PSI of each
input feature and of the output against the reference its training job stored with it (read
from the model store once per version, :class:`DriftReferences`). A shadow's inputs are the
served version's (the same requests; its answers carry no inputs of their own). Drift is
shown, never acted on: the policy does not read it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, Message

from rayml.config import Settings
from rayml.kafka import clients as kafka_clients
from rayml.metrics import RolloutMetrics
from rayml.models.promotion import ServingRecord, encode_serving, rollout_ended, served
from rayml.models.store import ModelStore
from rayml.rollouts.policy import decide
from rayml.rollouts.quality import QualityWindow
from rayml.rollouts.reading import RolloutReader
from rayml.rollouts.status import DriftReferences, drift_window, figures

logger = logging.getLogger(__name__)

__all__ = ["RolloutMonitor"]


class RolloutMonitor:
    """Follows every rollout and, with ``rollout.auto_decide``, ends it by the policy.

    Args:
        settings: The executor's settings.
        start: Start the thread now.
    """

    def __init__(self, settings: Settings, *, start: bool = True) -> None:
        self.settings = settings
        r = settings.rollout
        self.window = QualityWindow(r.window_s, r.max_tracked)
        self.drift = drift_window(settings)
        self.references = DriftReferences(settings)
        self.records: dict[str, ServingRecord] = {}
        self.decisions: list[dict[str, Any]] = []  # written by this monitor, newest last
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader: RolloutReader | None = None
        self._thread = threading.Thread(target=self._run, name="rollout-monitor", daemon=True)
        self.error: BaseException | None = None  # the last failure of a turn
        self.errors = 0  # turns that failed (each logged; the monitor goes on)
        # Per-version series in Prometheus (rayml.metrics; no-ops outside a Ray process).
        self.metrics = RolloutMetrics()
        if start:
            self._thread.start()

    # -- any thread ---------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """The figures of every model under rollout (and of those a decision just ended)."""
        now_ms = int(time.time() * 1000)
        reader = self._reader
        sample = 1.0 if reader is None else reader.sample
        with self._lock:
            shown = [
                figures(self.window, record, self.settings, now_ms, self.drift, self.references)
                for record in self.records.values()
                if record.rollout is not None
                or (
                    record.action in ("promoted", "rollout_aborted")
                    and self.window.stats(record.name, now_ms)
                )
            ]
        for fig in shown:
            fig["sample"] = sample  # the share of request ids the figures are from
        return shown

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        r = self.settings.rollout
        next_look = 0.0
        try:
            while not self._stop.is_set():
                if self._reader is None:
                    try:
                        self._reader = RolloutReader(
                            self.settings,
                            int((time.time() - r.window_s) * 1000),
                            max_answers_per_s=r.monitor_max_answers_per_s,
                        )
                    except Exception as exc:  # the broker away: try again
                        logger.warning("rollout monitor cannot read its topics yet: %s", exc)
                        self._stop.wait(5.0)
                        continue
                try:
                    self._turn(next_look)
                except Exception as exc:  # one bad record or a store hiccup: log, go on
                    self.error = exc
                    self.errors += 1
                    logger.exception("rollout monitor: a turn failed (%d so far)", self.errors)
                    self._stop.wait(1.0)
                now = time.monotonic()
                if now >= next_look and self._reader.caught_up:
                    next_look = now + r.interval_s
        except BaseException as exc:  # interpreter shutdown: stop deciding (callers unaffected)
            self.error = exc
            logger.exception("rollout monitor stopped")
        finally:
            if self._reader is not None:
                self._reader.close()

    def _turn(self, next_look: float) -> None:
        """Read what came; every interval, decide and export the figures."""
        r = self.settings.rollout
        assert self._reader is not None
        batch = self._reader.poll(0.2)
        with self._lock:
            for answer in batch.answers:
                try:
                    self.window.add_answer(answer)
                    self.drift.add_answer(answer)
                except (ValueError, OverflowError, TypeError) as exc:  # hostile values
                    self._reader.skipped += 1
                    logger.debug("rollout monitor: answer %s skipped: %s", answer.id, exc)
            for feedback, at_ms in batch.feedback:
                self.window.add_feedback(feedback, at_ms)
            for record in batch.records:
                known = self.records.get(record.name)
                if (
                    record.rollout is not None
                    and known is not None
                    and (known.rollout is None or known.rollout != record.rollout)
                ):
                    # A new rollout of this model: figures of an earlier one do not count.
                    self.window.forget_model(record.name)
                self.records[record.name] = record
        now = time.monotonic()
        if self._reader.caught_up and now >= next_look:
            # Only once caught up: a restarted executor publishes no partial figures.
            if r.auto_decide:
                self._look()
            with self._lock:
                decisions = list(self.decisions)
            try:
                self.metrics.flush(self.status(), decisions)
            except Exception:  # figures only: never stop the policy
                logger.exception("rollout metrics not flushed")

    def _look(self) -> None:
        now_ms = int(time.time() * 1000)
        with self._lock:
            pending = []
            for record in self.records.values():
                rollout = record.rollout
                if rollout is None:
                    continue
                stats = self.window.stats(record.name, now_ms)
                agreement = self.window.agreement(
                    record.name, record.version, rollout.candidate, now_ms
                )
                decision = decide(
                    stats.get(record.version),
                    stats.get(rollout.candidate),
                    self.settings.rollout,
                    agreement=agreement,
                )
                if decision is not None:
                    pending.append((record, decision))
        for record, decision in pending:
            self._write(record, decision.action, decision.reason)

    def _write(self, record: ServingRecord, action: str, reason: str) -> None:
        rollout = record.rollout
        assert rollout is not None
        why = f"{rollout.mode} rollout of {rollout.candidate}: {reason}"
        if action == "promote":
            store = ModelStore(
                self.settings.models.root, allow_pickle=self.settings.models.allow_pickle
            )
            found = store.describe(record.name, rollout.candidate)
            if found is None:
                action, why = "abort", f"{why}; but version {rollout.candidate} is gone"
            else:
                nxt = served(
                    record,
                    name=record.name,
                    version=rollout.candidate,
                    metrics=found.metrics,
                    action="promoted",
                    reason=why,
                    created_at=found.created_at,
                )
        if action == "abort":
            nxt = rollout_ended(record, why)
        failed: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message | None) -> None:
            if err is not None:
                failed.append(err)

        producer = kafka_clients.producer(self.settings.kafka)
        producer.produce(
            self.settings.topics.models,
            key=record.name.encode(),
            value=encode_serving(nxt),
            on_delivery=delivered,
        )
        left = producer.flush(30)
        if left or failed:
            logger.error(
                "rollout monitor: the decision to %s model=%s version=%s was not written: %s",
                action,
                record.name,
                rollout.candidate,
                failed[0].str() if failed else "timed out",
            )
            return
        logger.warning("model=%s %s", record.name, nxt.reason)
        with self._lock:
            # Until the record is read back: no second decision about this rollout.
            self.records[record.name] = nxt
            self.decisions.append(
                {"model": record.name, "action": nxt.action, "version": nxt.version, "reason": why}
            )
