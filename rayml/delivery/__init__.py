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
  topic or an authorised ``reply_to``), dead letters, failed deliveries (at-least-once);
* :mod:`~rayml.delivery.transactions` -- ``TransactionalOutput``: results and input offsets in
  one Kafka transaction (exactly-once).

May import: ``kafka``, ``models`` and the layers below; never ``ray`` (nothing here runs on
Ray), ``executor``, ``training``, ``autoscaling``, ``client`` or ``cli``.
"""
