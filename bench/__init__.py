"""Benchmarks of rayml against what users would pick instead (``make bench``).

``python -m bench`` starts one Kafka broker and one local Ray, stores the example XGBoost model
once, and runs the same single-row ``breast_cancer.predict`` workload through each contender:

* ``rayml`` -- the executor (ingest actor, micro-batches, ModelWorker pool), tuned settings;
* ``rayml, batch=1`` -- the same with batching disabled, to show what batching buys;
* ``Quix Streams`` -- a popular Python stream-processing library applying the model per message;
* ``original design`` -- one consumer that ``eval``-s a call built from each message, predicts
  one row, produces the result and commits synchronously per message.

Then it times a small hyperparameter sweep as parallel Ray tasks against one trial after another.
The table goes to stdout and to ``docs/benchmarks.md``.

Modules: :mod:`bench.cli` (orchestration), :mod:`bench.workload` (requests, producers, result
counter), :mod:`bench.clients` (the producers and the counter in processes of their own),
:mod:`bench.contenders`, :mod:`bench.original` and :mod:`bench.quix_app` (the
baselines' processes), :mod:`bench.memory`, :mod:`bench.training`, :mod:`bench.report`, and
:mod:`bench.profile_ingest` (cProfile of the ingest loop, run on its own).

Nothing here is imported at package import time: ``bench.quix_app`` runs in a separate virtual
environment (Quix Streams pins an older confluent-kafka and pydantic than rayml) and imports this
package too.
"""
