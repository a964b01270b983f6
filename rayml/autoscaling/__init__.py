"""The pool autoscaler: how many model workers each ingest runs, from Kafka lag and load.

* :mod:`~rayml.autoscaling.policy` -- the pure policy (Ray Serve's formula with damping and
  up/down delays, plus the backlog a burst leaves in Kafka); no Ray, no Kafka.
* :mod:`~rayml.autoscaling.controller` -- ``PoolAutoscaler``, a thread in the executor's driver
  that reads the group's lag (:mod:`rayml.kafka.lag`) and the ingest actors' status, feeds the
  policy, resizes the pools and asks Ray's autoscaler for nodes ahead of demand. It is typed
  against the small ``ScalableExecutor`` Protocol, not the executor, so this package never
  imports :mod:`rayml.executor`.

May import: :mod:`rayml.delivery` and the layers below (``kafka``, ``models``, ``pipeline``,
``protocol``, ``config``, ``errors``); never ``executor``, ``training``, ``client`` or ``cli``.
"""
