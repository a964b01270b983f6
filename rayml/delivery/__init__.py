"""What may be committed, and how results go out.

* :mod:`~rayml.delivery.consumer_loop` -- ``ConsumerLoop``, the consumer-group skeleton the
  ingest and the job runner share (subscribe, pause state, bounded revoke, lost, commits);
* :mod:`~rayml.delivery.screening` -- a consumed request's first look (dead letter, error
  answer, or the request), shared the same way; pure;
* :mod:`~rayml.delivery.offsets` -- the per-partition commit watermark; pure, property-tested;
* :mod:`~rayml.delivery.reorder` -- exactly-once: results released in offset order; pure;
* :mod:`~rayml.delivery.sink` -- the ``ResultSink`` Protocol the executor's pure steps write
  through;
* :mod:`~rayml.delivery.result_writer` -- ``ResultWriter``: results (on the tenant's result
  topic or an authorised ``reply_to``) and dead letters, staged (exactly-once) or handed to
  the at-least-once output;
* :mod:`~rayml.delivery.at_least_once` -- ``AtLeastOnceOutput``: each write produced, its record
  done on the broker's acknowledgement, and where a failed write goes;
* :mod:`~rayml.delivery.result_routes` -- ``ResultRoutes``: a result's topic, its ``reply_to``
  or its tenant's result topic; pure;
* :mod:`~rayml.delivery.redo` -- ``RedoLessons``, exactly-once: what an aborted transaction's
  failed writes teach its redo;
* :mod:`~rayml.delivery.failure_counts` -- failed deliveries and error results, counted under
  bounded labels; pure;
* :mod:`~rayml.delivery.transactions` -- ``TransactionalOutput``: results and input offsets in
  one Kafka transaction (exactly-once);
* :mod:`~rayml.delivery.outside_writes` -- ``OutsideWrites``, exactly-once: the writes to
  topics outside the transaction (``reply_to``), at-least-once, acknowledged before their
  offsets commit, and why;
* :mod:`~rayml.delivery.txn_errors` -- the errors a transaction ends in
  (``TransactionAbortedError``, ``ProducerFencedError``) and the Kafka errors they are read from.

May import: ``kafka``, ``models`` and the layers below; never ``ray`` (nothing here runs on
Ray), ``executor``, ``training``, ``autoscaling``, ``client`` or ``cli``.
"""
