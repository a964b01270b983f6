"""Rollouts of a candidate model version on live traffic (docs/rollouts.md).

* :mod:`rayml.rollouts.quality`: the bounded join of what each version answered with the labels
  that come later, and the figures per version (accuracy, error rate, p50/p99, agreement). Pure.
* :mod:`rayml.rollouts.policy`: promote or abort a rollout from those figures, by the rule of
  :class:`rayml.config.RolloutSettings`. Pure.
* :mod:`rayml.rollouts.drift`: the population-stability index of each version's inputs and
  outputs against the reference its training job stored with it, in a bounded window. Pure.
* :mod:`rayml.rollouts.reading`: one consumer over the shadow, feedback and models topics, from
  the window's start (so figures are rebuilt from the topics after a restart).
* :mod:`rayml.rollouts.status`: the figures ``rayml rollout status``, the client and the monitor
  show (no Ray: the client reads them too).
* :mod:`rayml.rollouts.monitor`: the thread in each executor's driver that keeps the figures,
  writes the policy's decisions to the models topic and exports per-version series.
"""
