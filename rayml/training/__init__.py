"""Training: jobs from the jobs topic, run as Ray tasks, stored, and served if promoted.

* :mod:`~rayml.training.runner` -- ``JobRunner`` (a ``ConsumerLoop`` on ``ml.pipeline.jobs``);
* :mod:`~rayml.training.runner_actor` -- its Ray actor, started and drained by the executor;
* :mod:`~rayml.training.outputs` -- its producers for the delivery mode, a publisher per tenant;
* :mod:`~rayml.training.plan` -- a request becomes a job of trials (sweeps included);
* :mod:`~rayml.training.trials` -- trials as Ray tasks, retries, the copy of a sweep's best;
* :mod:`~rayml.training.ending` -- cancelled trials until their task has ended;
* :mod:`~rayml.training.watch` -- trial start times, time bounds, waiting for resources (pure);
* :mod:`~rayml.training.cluster` -- the cluster's free, total and per-node resources;
* :mod:`~rayml.training.publish` -- results, events, dead letters and serving records;
* :mod:`~rayml.training.replies` -- where a result goes: its ``reply_to`` if the broker has it;
* :mod:`~rayml.training.gate` -- the promotion gate: is a new version served?
* :mod:`~rayml.training.serving` -- what each model serves, followed from the models topic
  (the gate's and the ingest's);
* :mod:`~rayml.training.task` -- the Ray task that trains one trial and stores its model.

May import: ``delivery`` and the layers below; never ``executor``, ``autoscaling``, ``client``
or ``cli``.
"""
