"""The Ray runtime that answers requests (``rayml serve``).

The flow of one request, a module a step: the ingest loop polls (:mod:`~rayml.executor.ingest`,
run by the ingest actors of :mod:`~rayml.executor.service`), :mod:`~rayml.executor.triage`
decides each record's first step, :mod:`~rayml.executor.batching` forms micro-batches,
:mod:`~rayml.executor.dispatch` sends them (one Ray call per batch) to the pool
(:mod:`~rayml.executor.pool`, :mod:`~rayml.executor.routing`) of
:mod:`~rayml.executor.worker` actors, and :mod:`~rayml.executor.answers` turns a finished
batch into results. The ingest writes through :mod:`~rayml.executor.outputs` (its producer,
the transaction exactly-once, the result writer), gives partitions back through
:mod:`~rayml.executor.drain` (revoke, shutdown) and reports through
:mod:`~rayml.executor.ingest_status` (status, metrics). :mod:`~rayml.executor.work` holds the
dataclasses passed between the steps, :mod:`~rayml.executor.membership` when an unserved ingest
leaves its group, and :mod:`~rayml.executor.version_follower` the served version of each model
(``ml.models``).

May import: ``autoscaling``, ``training``, ``delivery`` and the layers below; never ``client``
or ``cli``. ``triage``, ``answers``, ``batching``, ``routing``, ``membership`` and ``work`` are
pure (no ``ray``, no ``confluent_kafka``).
"""
