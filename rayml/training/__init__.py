"""Training: jobs from the jobs topic, run as Ray tasks, stored and announced.

* :mod:`~rayml.training.runner` -- ``JobRunner`` (a ``ConsumerLoop`` on ``ml.pipeline.jobs``)
  and its actor;
* :mod:`~rayml.training.plan` -- a request becomes a job of trials (sweeps included);
* :mod:`~rayml.training.trials` -- trials as Ray tasks, retries, promotion of a sweep's best;
* :mod:`~rayml.training.publish` -- results, events, dead letters and announcements;
* :mod:`~rayml.training.task` -- the Ray task that trains one trial and stores its model.

May import: ``delivery`` and the layers below; never ``executor``, ``autoscaling``, ``client``
or ``cli``.
"""
