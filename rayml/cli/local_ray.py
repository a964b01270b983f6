"""The local Ray of ``rayml serve``, started apart from the serve's process group.

Why: ``ray.init()`` with no cluster to join starts the GCS, the raylet, the agents and monitors
as children of the calling process, in its process group and session (Ray 2.60's
``ray/_private/services.py: start_ray_process`` only blocks SIGINT in them; the raylet's
workers get process groups of their own, but stay in the session). A SIGTERM to the whole
group -- ``kill -TERM -<pgid>``, or a process manager that signals every process -- then reaches
the raylet and the GCS as well as ``rayml serve``: they shut down at once, the ingest actors
and workers die some seconds later, and a drain that lasts longer fails ("The actor ... is
unavailable"): answered requests stay uncommitted and are answered again after a restart.

So ``rayml serve`` without a Ray address starts its runtime from a helper process,
``python -m rayml.cli.local_ray``, in a session of its own (``start_new_session``: a new
session and process group, no controlling terminal), connects to it as to any cluster, and
ends it after the drain:

1. the helper calls ``ray.init(address="local")`` (always a new runtime, as the serve's own
   ``ray.init()`` did: same defaults, no dashboard), prints the runtime's address as one JSON
   line on its stdout, then reads its stdin to the end. Token authentication: ``ray.init()``
   turns it on for a new local runtime unless ``RAY_AUTH_MODE`` says otherwise, but a process
   that joins by address reads ``RAY_AUTH_MODE`` alone, once, when it imports Ray; so the
   serve sets ``RAY_AUTH_MODE=token`` where it is unset *before* it starts the helper and
   imports Ray, and both sides agree (``docs/security.md``);
2. the serve closes that pipe after its drain (:meth:`LocalRay.stop`); the helper calls
   ``ray.shutdown()``, which ends the processes it started, and exits;
3. the serve then waits up to ``grace_s`` for every process left in the helper's session (the
   raylet's workers exit once it is gone) and SIGKILLs, by pid, any still there.

If the serve dies without a drain (SIGKILL), the pipe closes all the same and its Ray goes down
with it. A signal sent to the helper's session, or to every process of a systemd unit
(``KillMode=control-group``, the default), still reaches Ray: the documented unit uses
``KillMode=mixed`` (see ``docs/service.md``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import psutil

from rayml.errors import InfrastructureError

logger = logging.getLogger(__name__)


def session_processes(sid: int) -> list[psutil.Process]:
    """The live processes (zombies excluded) whose session id is ``sid``."""
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except OSError:  # gone meanwhile
            continue
    return found


def end_session(sid: int, grace_s: float) -> list[int]:
    """Wait up to ``grace_s`` for the session's processes to exit; SIGKILL the rest by pid.

    Returns the pids that had to be killed.
    """
    deadline = time.monotonic() + grace_s
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed: list[int] = []
    for proc in left:
        try:
            proc.kill()
            killed.append(proc.pid)
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(left, timeout=5)
    return killed


@dataclass
class LocalRay:
    """A local Ray runtime in a session of its own; :meth:`start` it, :meth:`stop` it.

    Example:
        >>> local = LocalRay.start()                    # doctest: +SKIP
        >>> ray.init(address=local.address)             # doctest: +SKIP
        >>> ray.shutdown(); local.stop()                # doctest: +SKIP
    """

    address: str
    """The GCS address (``host:port``) to pass to ``ray.init``."""
    session_id: int
    """The session (and process group) of every process of this runtime: the helper's pid."""
    _helper: subprocess.Popen[bytes] = field(repr=False)

    @classmethod
    def start(cls, timeout_s: float = 120.0) -> LocalRay:
        """Start the helper and wait for the runtime's address.

        Raises:
            InfrastructureError: the runtime did not start within ``timeout_s``.
        """
        helper = subprocess.Popen(
            [sys.executable, "-m", "rayml.cli.local_ray"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert helper.stdout is not None
        ready, _, _ = select.select([helper.stdout], [], [], timeout_s)
        line = helper.stdout.readline() if ready else b""
        try:
            info = json.loads(line)
        except ValueError:
            cls._give_up(helper)
            why = "timed out" if not ready else f"exit code {helper.returncode}"
            raise InfrastructureError(
                f"the local Ray runtime did not start within {timeout_s:g}s ({why}); "
                "Ray's own messages are above"
            ) from None
        return cls(
            address=info["address"],
            session_id=helper.pid,
            _helper=helper,
        )

    @staticmethod
    def _give_up(helper: subprocess.Popen[bytes]) -> None:
        if helper.poll() is None:
            helper.kill()
        helper.wait()
        end_session(helper.pid, grace_s=0)

    def stop(self, grace_s: float = 30.0) -> list[int]:
        """End the runtime: the helper's ``ray.shutdown()``, then whatever of its session is
        left after ``grace_s`` is SIGKILLed. Returns the pids that had to be killed."""
        helper = self._helper
        if helper.stdin is not None and not helper.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                helper.stdin.close()  # the helper's signal to shut Ray down
        started = time.monotonic()
        try:
            helper.wait(grace_s)
        except subprocess.TimeoutExpired:
            logger.warning(
                "the local Ray (session %d) did not shut down within %.0fs; killing it",
                self.session_id,
                grace_s,
            )
            helper.kill()
            helper.wait()
        return end_session(self.session_id, max(0.0, grace_s - (time.monotonic() - started)))


def main() -> None:
    """The helper: start a local Ray, say where it is, and end it when stdin closes."""
    import ray

    # The serve decides when its Ray ends. A signal meant for the serve's terminal (Ctrl-C)
    # cannot reach this session anyway; a SIGTERM sent here on purpose keeps Ray's own
    # handler, which shuts Ray down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Ray and its children print on stdout: keep stdout for the one line the serve reads.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    ray.init(
        address="local",
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    out.write(json.dumps({"address": ray.get_runtime_context().gcs_address}) + "\n")
    out.flush()
    sys.stdin.buffer.read()  # returns when the serve closes the pipe, or dies
    ray.shutdown(wait_for_processes=True)


if __name__ == "__main__":
    main()
