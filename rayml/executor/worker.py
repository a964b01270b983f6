"""ModelWorker: a Ray actor that keeps models in memory and runs batched inference.

A worker is given whole micro-batches (one Ray call per batch). It imports pipelines by their
import path (never a pickled closure), loads models from the store into an LRU cache, and
answers with one outcome per request. When a pipeline raises for a batch, the worker bisects
the batch locally so that only the requests that fail get an error and their batch-mates still
get their outputs, without extra Ray round trips.

Before it runs a batch on a given version, the worker checks that the version may run
(:func:`rayml.models.versions.pin_verdict`): it exists (else ``version_not_found``) and, if a
training job stored it, it was promoted (else ``version_not_allowed``, unless
``models.allow_unpromoted_pins``). The ingest cannot tell the worker whether a request pinned
the version or was given the served one, and the served one is always promoted, so the rule is
the same for both. Verdicts are cached per (model, version) (:class:`~rayml.models.versions.
VerdictCache`): a refusal for ``models.version_check_ttl_s``, so a flood of requests pinning a
version that does not exist costs one store read per interval, not one per batch.

The class is plain Python; :mod:`rayml.executor.pool` turns it into an actor. That keeps it testable
without Ray.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from pydantic import BaseModel

from rayml import logs
from rayml.errors import DeadlineExceededError, ModelNotFoundError, RecordError
from rayml.executor.gc_pauses import tune_for_throughput
from rayml.executor.work import BatchOutcome, ItemError
from rayml.metrics import WorkerMetrics
from rayml.models.cache import ModelCache
from rayml.models.store import LoadedModel, ModelStore, validate_version
from rayml.models.versions import (
    VerdictCache,
    VersionNotAllowedError,
    VersionNotFoundError,
    newest_servable,
    pin_verdict,
)
from rayml.pipeline import (
    InferenceContext,
    PipelineSpec,
    load_spec_by_path,
    run_inference,
    validate_batch_params,
)

logger = logging.getLogger(__name__)

# Estimated in-memory size of a model whose artifact size is unknown.
_DEFAULT_MODEL_BYTES = 16 * 1024 * 1024


class ModelWorker:
    """Holds loaded models and runs batches of one pipeline at a time.

    Args:
        worker_id: A stable name used in routing, logs and results.
        store_root: Model store root (local path or fsspec URL).
        allow_pickle: Passed to the store.
        cache_items: Models kept in memory at most.
        cache_bytes: Memory budget of the cache (estimated from artifact sizes).
        threads: Size of the BLAS/OpenMP thread pools in this process.
        log_level: rayml's log level in this process (its own, as a Ray actor).
        allow_unpromoted_pins: Run any stored version asked for, promoted or not.
        version_check_ttl_s: How long a refused version stays refused without a store read.
        tune_gc: Tune this process's garbage collector for throughput
            (:func:`~rayml.executor.gc_pauses.tune_for_throughput`): for a worker actor, which
            has its process to itself.
        device: The device its pipelines are told to use (``"cuda"`` in a pool whose workers
            reserve a GPU), handed to a pipeline that takes a ``ctx``.
    """

    def __init__(
        self,
        worker_id: str,
        store_root: str,
        *,
        allow_pickle: bool = False,
        cache_items: int = 4,
        cache_bytes: int = 2 * 1024**3,
        threads: int = 1,
        log_level: str | None = None,
        allow_unpromoted_pins: bool = False,
        version_check_ttl_s: float = 2.0,
        tune_gc: bool = False,
        device: str = "cpu",
    ) -> None:
        if log_level is not None:
            logs.configure(log_level)
        # BLAS/OpenMP pools are sized by the first library load in a process; on a busy node a
        # pool per core makes single-row predictions slower, not faster. Fix the size up front.
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        self._thread_limits = threadpool_limits(limits=threads)
        self.worker_id = worker_id
        self.context = InferenceContext(nthread=max(1, threads), device=device)
        self.store = ModelStore(store_root, allow_pickle=allow_pickle)
        self.cache = ModelCache(cache_items, cache_bytes)
        self.allow_unpromoted_pins = allow_unpromoted_pins
        self.verdicts = VerdictCache(version_check_ttl_s)
        self.version_checks = 0  # store reads to check a version (not one per batch)
        self.versions_refused = 0  # batches refused: version_not_found / version_not_allowed
        self._specs: dict[str, PipelineSpec] = {}
        self.batches = 0
        self.requests = 0
        self.model_loads = 0
        self.metrics = WorkerMetrics(worker_id)
        if tune_gc:
            tune_for_throughput()

    def _spec(self, import_path: str) -> PipelineSpec:
        spec = self._specs.get(import_path)
        if spec is None:
            spec = load_spec_by_path(import_path)
            self._specs[import_path] = spec
        return spec

    def _version(self, name: str, version: str | None) -> str:
        """The version a batch runs: the one it was given if it may run, else (``None``) the
        newest the store alone serves.

        Raises:
            ModelNotFoundError: ``None`` given and no version may be served.
            VersionNotFoundError: No such version.
            VersionNotAllowedError: A version a training job stored, never promoted.
        """
        if version is None:
            found = newest_servable(self.store, name)
            if found is None:
                raise ModelNotFoundError(name)
            return found.version
        # One cache entry per model version however the request spelled it ("3", "000003").
        version = validate_version(version)
        key = (name, version)
        now = time.monotonic()
        verdict = self.verdicts.get(key, now)
        if verdict is None:
            self.version_checks += 1
            verdict = pin_verdict(
                self.store, name, version, allow_unpromoted=self.allow_unpromoted_pins
            )
            self.verdicts.put(key, verdict, now)
        if verdict == "not_found":
            raise VersionNotFoundError(name, version)
        if verdict == "not_allowed":
            raise VersionNotAllowedError(name, version)
        return version

    def _model(self, name: str, version: str) -> LoadedModel:
        key = (name, version)
        loaded = self.cache.get(key)
        if loaded is None:
            started = time.perf_counter()
            try:
                loaded = self.store.load(name, version)
            except ModelNotFoundError:
                # Deleted since its verdict was cached: a refusal from now on.
                self.verdicts.put(key, "not_found", time.monotonic())
                raise VersionNotFoundError(name, version) from None
            self.model_loads += 1
            self.metrics.model_loaded(name)
            size = loaded.metadata.get("size_bytes") or _DEFAULT_MODEL_BYTES
            evicted = self.cache.put(key, loaded, int(size))
            logger.info(
                "worker=%s loaded model=%s version=%s in %.0f ms (evicted %s)",
                self.worker_id,
                name,
                version,
                (time.perf_counter() - started) * 1000,
                evicted or "nothing",
            )
        else:
            self.metrics.cache_hit(name)
        assert isinstance(loaded, LoadedModel)  # the cache holds only what we put in it
        return loaded

    def run_batch(
        self,
        import_path: str,
        model_version: str | None,
        params: list[dict[str, Any]],
        deadlines_ms: list[float | None] | None = None,
    ) -> BatchOutcome:
        """Run one micro-batch; never raises for a record failure.

        Params arrive as plain JSON values and are validated here, the batch in one pydantic
        call (:func:`~rayml.pipeline.validate_batch_params`): a request whose params do not
        validate gets an ``invalid_params`` error naming the field, and only the valid ones
        reach the pipeline. (Validating on the workers rather than in the ingest
        keeps the ingest, the one serial step, cheap, and ships plain lists through Ray, which
        pickles far faster than pydantic objects.)

        Args:
            import_path: The pipeline's ``module:qualname``.
            model_version: The version to use (checked, see the module docstring); ``None``
                means the newest the store alone serves.
            params: Each request's raw ``params``.
            deadlines_ms: Each request's deadline (wall clock ms), if any has one: a request
                whose deadline has passed once the model is loaded is answered
                ``deadline_exceeded`` without running.
        """
        started = time.perf_counter()
        spec = self._spec(import_path)
        self.batches += 1
        self.requests += len(params)
        outputs: list[Any] = [None] * len(params)
        valid: list[BaseModel] = []
        positions: list[int] = []
        for i, checked in enumerate(validate_batch_params(spec, params)):
            if isinstance(checked, RecordError):
                outputs[i] = ItemError(checked.type, str(checked), checked.details)
            else:
                valid.append(checked)
                positions.append(i)
        try:
            loaded = self._model(spec.model, self._version(spec.model, model_version))
        except RecordError as exc:
            if isinstance(exc, VersionNotFoundError | VersionNotAllowedError):
                self.versions_refused += 1
            error = ItemError(exc.type, str(exc), exc.details)
            for i in positions:
                outputs[i] = error
            return BatchOutcome(
                spec.model, model_version, outputs, _ms_since(started), self.worker_id
            )
        if deadlines_ms is not None:
            valid, positions = self._drop_expired(valid, positions, deadlines_ms, outputs)
        if valid:
            for i, output in zip(
                positions, self._run_bisecting(spec, loaded.model, valid), strict=True
            ):
                outputs[i] = output
        return BatchOutcome(spec.model, loaded.version, outputs, _ms_since(started), self.worker_id)

    @staticmethod
    def _drop_expired(
        valid: list[BaseModel],
        positions: list[int],
        deadlines_ms: list[float | None],
        outputs: list[Any],
    ) -> tuple[list[BaseModel], list[int]]:
        now_ms = time.time() * 1000.0
        keep_valid: list[BaseModel] = []
        keep_positions: list[int] = []
        for params, i in zip(valid, positions, strict=True):
            deadline = deadlines_ms[i]
            if deadline is not None and deadline < now_ms:
                outputs[i] = ItemError(
                    DeadlineExceededError.type,
                    "the request's deadline passed before it could run",
                    {"deadline_ms": deadline},
                )
            else:
                keep_valid.append(params)
                keep_positions.append(i)
        return keep_valid, keep_positions

    def _run_bisecting(self, spec: PipelineSpec, model: Any, params: list[BaseModel]) -> list[Any]:
        try:
            return run_inference(spec, model, params, self.context)
        except RecordError as exc:
            if len(params) == 1:
                return [ItemError(exc.type, str(exc), exc.details)]
        # Some request(s) made the pipeline raise: split and retry each half, so that only the
        # requests that really fail get an error. Costs O(k log n) pipeline calls for k bad rows.
        middle = len(params) // 2
        return self._run_bisecting(spec, model, params[:middle]) + self._run_bisecting(
            spec, model, params[middle:]
        )

    def stats(self) -> dict[str, Any]:
        """Counters for status and metrics."""
        return {
            "worker_id": self.worker_id,
            "pid": os.getpid(),
            "node_id": _node_id(),
            "device": self.context.device,
            "batches": self.batches,
            "requests": self.requests,
            "model_loads": self.model_loads,
            "models": [f"{key[0]}@{key[1]}" for key in self.cache.cached()],  # type: ignore[index]
            "cache_hits": self.cache.stats.hits,
            "cache_misses": self.cache.stats.misses,
            "version_checks": self.version_checks,
            "versions_refused": self.versions_refused,
        }

    def ping(self) -> str:
        """Liveness check (a dead actor raises instead of answering)."""
        return self.worker_id


def _node_id() -> str | None:
    """The Ray node this worker runs on (``None`` outside Ray)."""
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else None
    except Exception:
        return None


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
