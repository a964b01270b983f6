"""rayml's thin layer over confluent-kafka.

* :mod:`~rayml.kafka.clients` -- client factories (security settings in one place), commits
  with per-partition error checks, pause state;
* :mod:`~rayml.kafka.partitions` -- ``TP``, the one name for ``(topic, partition)``; pure;
* :mod:`~rayml.kafka.records` -- ``PolledRecord``, a consumed record as pure code reads it,
  its timestamp and headers; pure;
* :mod:`~rayml.kafka.topics` -- rayml's and the tenants' topics, their creation (replicas,
  ``min.insync.replicas``) and the single-replica warning;
* :mod:`~rayml.kafka.auth_errors` -- Kafka's refusals named (authentication or ACL, principal,
  operation, resource) and a fail-fast connect;
* :mod:`~rayml.kafka.topic_checks` -- is a failed write's topic to blame? (asked off the loop
  thread);
* :mod:`~rayml.kafka.lag` -- a consumer group's lag, from the broker or from a consumer.

May import: ``pipeline``, ``protocol``, ``config``, ``errors``; never ``ray``.
"""
