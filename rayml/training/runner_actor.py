"""The job runner as a Ray actor: :class:`JobRunnerActor`, started and drained by the executor.

:class:`JobRunnerActor` wraps a :class:`~rayml.training.runner.JobRunner` (``num_cpus=0``):
the loop runs in a thread so that ``status`` and ``drain`` calls are served meanwhile. The
training tasks are the actor's children: if the runner (or the executor that owns it) dies, Ray
ends them too, and their jobs, never committed, run again after the restart. The actors are
named ``RUNNER_ACTOR_PREFIX + runner id``, so ``rayml status`` finds them on the cluster.

Example:
    >>> from rayml.config import load_settings
    >>> runners = start_job_runners(load_settings(), "ex-1")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import ray

from rayml import logs
from rayml.config import Settings
from rayml.pipeline import Registry
from rayml.tenancy.rules import Tenancy
from rayml.training.runner import JobRunner

logger = logging.getLogger(__name__)

__all__ = [
    "RUNNER_ACTOR_PREFIX",
    "JobRunnerActor",
    "start_job_runners",
]

# Runner actors are named "<RUNNER_ACTOR_PREFIX><runner id>" in the Ray namespace (`rayml status`
# finds them by it).
RUNNER_ACTOR_PREFIX = "rayml-jobs:"


class JobRunnerActor:
    """Ray actor body around :class:`JobRunner`: the loop runs in a thread, control calls on
    other actor threads. A crashed loop exits the process so Ray restarts the actor, which
    re-joins the group and re-runs the uncommitted jobs.
    """

    def __init__(self, settings: Settings, runner_id: str) -> None:
        logs.configure(settings.log_level)
        registry = Registry()
        registry.discover(settings.executor.pipeline_modules)
        self.runner = JobRunner(settings, runner_id, registry)
        self._thread = threading.Thread(target=self._run, name=f"jobs-{runner_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException:
            logger.exception("job runner loop crashed; restarting the actor")
            os._exit(1)

    def ready(self) -> str:
        return self.runner.runner_id

    def status(self) -> dict[str, Any]:
        return self.runner.status()

    def drain(self, timeout_s: float) -> bool:
        return self.runner.stop(timeout_s)


def start_job_runners(settings: Settings, instance_id: str, timeout_s: float = 120.0) -> list[Any]:
    """Start ``settings.training.job_runners`` runner actors and wait until they are up (none
    when no tenant may train)."""
    if not Tenancy(settings).training_topics:
        logger.info("executor=%s starts no job runner: no tenant has a training topic", instance_id)
        return []
    actor_cls = ray.remote(JobRunnerActor)
    actors: list[Any] = []
    for n in range(settings.training.job_runners):
        runner_id = f"{instance_id}-j{n}"
        actor = actor_cls.options(
            num_cpus=0,  # IO-bound: the CPUs are for its training tasks and the model workers
            max_concurrency=4,
            max_restarts=-1,
            # Named, so `rayml status` finds them on the cluster.
            name=f"{RUNNER_ACTOR_PREFIX}{runner_id}",
            namespace=settings.ray.namespace,
        ).remote(settings, runner_id)
        actors.append(actor)
    ray.get([a.ready.remote() for a in actors], timeout=timeout_s)
    logger.info("executor=%s started %d job runners", instance_id, len(actors))
    return actors
