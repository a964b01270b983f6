"""The contenders: rayml's executor in this process, and the baselines as consumer processes.

Each contender reads requests from its own input topic and writes one result per request, keyed
by request id, to its own output topic. ``start`` returns once it runs; readiness for traffic is
established by the warm-up run (which also loads the model), not here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.memory import GroupFn, process_group, rayml_groups

REPO = Path(__file__).resolve().parent.parent
QUIX_VERSION = "3.28.1"


@dataclass(frozen=True)
class Endpoint:
    """Where a contender reads and writes."""

    bootstrap: str
    input_topic: str
    output_topic: str
    group: str


class Contender(Protocol):
    key: str
    label: str

    def start(self, endpoint: Endpoint) -> None: ...

    def stop(self) -> None: ...

    def memory_groups(self) -> tuple[GroupFn, list[str]]:
        """Processes to sample, and the groups whose sum is the reported peak."""
        ...

    def describe(self) -> str: ...


class KafkaFloor:
    """Not a contender: the requests are read back from the input topic itself.

    Produce -> broker -> consume with no processing in between: the throughput and latency that
    the load generator, the result counter and the broker allow on this machine, i.e. the floor
    under every contender's latency and the ceiling over its throughput.
    """

    key = "kafka"
    label = "Kafka alone (no processing)"
    echo = True

    def start(self, endpoint: Endpoint) -> None:
        pass

    def stop(self) -> None:
        pass

    def memory_groups(self) -> tuple[GroupFn, list[str]]:
        return (dict, [])

    def describe(self) -> str:
        return "the result counter reads the input topic: producer -> broker -> consumer"


class RaymlContender:
    """The rayml executor (``Executor(settings).start()``) on the Ray runtime of this process.

    Args:
        key: Short name used in topic names and run tags.
        label: Row label in the table.
        models_root: The model store holding the example model.
        state_dir: Scratch directory for the executor's local state.
        executor: Overrides of :class:`rayml.config.ExecutorSettings` (the tuned settings).
        tracing: Overrides of :class:`rayml.config.TracingSettings` (default: off).
        traceparents: The load generator sends each request with a ``traceparent`` header,
            as rayml's clients do.
        shadow: A version of the example model to roll out as a shadow beside version
            000001 (served) before the burst (docs/rollouts.md).
    """

    def __init__(
        self,
        key: str,
        label: str,
        models_root: str,
        state_dir: Path,
        executor: dict[str, Any],
        tracing: dict[str, Any] | None = None,
        traceparents: bool = False,
        shadow: str | None = None,
    ) -> None:
        self.key = key
        self.shadow = shadow
        self.tracing = tracing or {}
        self.traceparents = traceparents
        self.label = label
        self._models_root = models_root
        self._state_dir = state_dir
        self.executor_overrides = executor
        self.executor: Any = None
        self.final_status: list[dict[str, Any]] = []
        # The labels its model gives each row, where that is not the example model.
        self.expected: Any = None

    def _settings(self, endpoint: Endpoint) -> Any:
        from rayml.config import TopicSettings, load_settings

        tag = uuid.uuid4().hex[:8]
        # Every topic role gets a name of its own (roles added to TopicSettings later included).
        topics: dict[str, Any] = {
            name: f"bench-{self.key}-{tag}.{name}"
            for name, default in TopicSettings().model_dump().items()
            if isinstance(default, str)
        }
        topics.update(
            input=endpoint.input_topic,
            output=endpoint.output_topic,
            input_partitions=4,
            output_partitions=4,
        )
        return load_settings(
            state_dir=self._state_dir,
            kafka={"bootstrap_servers": endpoint.bootstrap},
            topics=topics,
            executor={
                "group_id": endpoint.group,
                "jobs_group_id": f"{endpoint.group}-jobs",
                **self.executor_overrides,
            },
            models={"root": self._models_root},
            tracing=self.tracing,
            log_level="WARNING",
        )

    def start(self, endpoint: Endpoint) -> None:
        from rayml.executor.service import Executor

        settings = self._settings(endpoint)
        if self.shadow is not None:
            from rayml.client.promotion import promote
            from rayml.kafka.topics import create_topics

            create_topics(settings.kafka, settings.topics)
            promote(settings, "breast_cancer", "000001")
        self.executor = Executor(settings)
        self.executor.start()
        if self.shadow is not None:
            self._start_shadow(settings)

    def _start_shadow(self, settings: Any) -> None:
        from rayml.client.rollouts import start_rollout

        start_rollout(settings, "breast_cancer", self.shadow, "shadow")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every ingest follows the models topic
            statuses = self.executor.status(timeout_s=30)
            if all(
                "breast_cancer" in s.get("rollout", {}).get("under_rollout", {}) for s in statuses
            ):
                return
            time.sleep(0.2)
        raise RuntimeError("the ingests did not see the shadow rollout within 60 s")

    def stop(self) -> None:
        if self.executor is None:
            return
        try:
            self.final_status = self.executor.status(timeout_s=30)
        except Exception as exc:  # a status is nice to have; the drain below must happen
            print(f"bench: {self.label}: no final status ({type(exc).__name__}: {exc})")
        finally:
            self.executor.drain(30)
            self.executor = None

    def memory_groups(self) -> tuple[GroupFn, list[str]]:
        return rayml_groups, ["driver", "ingest", "workers"]

    def describe(self) -> str:
        described = ", ".join(f"{k}={v}" for k, v in self.executor_overrides.items())
        if self.traceparents:
            described += ", requests with a traceparent header"
        if self.tracing:
            described += ", tracing " + ", ".join(f"{k}={v}" for k, v in self.tracing.items())
        if self.shadow is not None:
            described += f", shadow of version {self.shadow} beside 000001"
        return described


class ProcessContender:
    """A baseline consumer started as ``python -m MODULE`` with the endpoint and model path."""

    def __init__(
        self,
        key: str,
        label: str,
        python: str,
        module: str,
        model_path: str,
        extra_args: list[str],
        description: str,
        log_dir: Path,
    ) -> None:
        self.key = key
        self.label = label
        self._python = python
        self._module = module
        self._model_path = model_path
        self._extra_args = extra_args
        self._description = description
        self._log_path = log_dir / f"{key}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, endpoint: Endpoint) -> None:
        cmd = [
            self._python,
            "-m",
            self._module,
            "--bootstrap",
            endpoint.bootstrap,
            "--input",
            endpoint.input_topic,
            "--output",
            endpoint.output_topic,
            "--group",
            endpoint.group,
            "--model",
            self._model_path,
            *self._extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["OMP_NUM_THREADS"] = "1"  # the model predicts one row at a time: one thread is best
        with self._log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self._log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{tail}")

    def memory_groups(self) -> tuple[GroupFn, list[str]]:
        assert self.proc is not None
        return process_group(self.proc.pid), ["process"]

    def describe(self) -> str:
        return self._description


def original_contender(model_path: str, log_dir: Path) -> ProcessContender:
    return ProcessContender(
        "original",
        "original design (eval)",
        sys.executable,
        "bench.original",
        model_path,
        [],
        "1 process, eval per message, sync commit per message",
        log_dir,
    )


def quix_contender(python: str, model_path: str, log_dir: Path) -> ProcessContender:
    return ProcessContender(
        "quix",
        "Quix Streams",
        python,
        "bench.quix_app",
        model_path,
        ["--extra-site", sysconfig.get_paths()["purelib"]],
        f"quixstreams {quix_version(python)}, 1 process, .apply() per message, "
        "at-least-once, commit every 5 s",
        log_dir,
    )


def quix_python(venv: Path) -> str:
    """The Python of a virtual environment holding Quix Streams, created on first use.

    Quix Streams cannot share rayml's environment: it pins ``confluent-kafka<2.13`` and
    ``pydantic<2.14`` while rayml needs newer ones (pip would otherwise fall back to an ancient,
    unrelated ``quixstreams 0.5``). So it gets an environment of its own under ``.rayml/``.
    """
    python = venv / "bin" / "python"
    if not python.exists() or quix_version(str(python)) != QUIX_VERSION:
        print(f"bench: installing quixstreams {QUIX_VERSION} into {venv} (first run only)")
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"quixstreams=={QUIX_VERSION}"],
            check=True,
        )
    return str(python)


def quix_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('quixstreams'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


def confluent_kafka_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('confluent-kafka'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"
