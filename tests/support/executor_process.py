"""Run ``rayml serve`` as a real OS process (to SIGKILL or SIGTERM it in tests)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rayml.config import Settings

REPO = Path(__file__).resolve().parents[2]


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``RAYML_*`` environment variables (nested form, JSON for lists/dicts)."""
    env: dict[str, str] = {}
    dumped: dict[str, Any] = settings.model_dump(mode="json")
    for section, values in dumped.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if value is None:
                    continue
                if key == "sasl_password" or key == "ssl_key_password":
                    secret = getattr(getattr(settings, section), key)
                    value = secret.get_secret_value()
                env[f"RAYML_{section.upper()}__{key.upper()}"] = (
                    json.dumps(value) if isinstance(value, list | dict) else str(value)
                )
        elif values is not None:
            env[f"RAYML_{section.upper()}"] = str(values)
    return env


class ExecutorProcess:
    """``python -m rayml.cli.main serve`` joined to the test session's Ray cluster.

    Its ingest actors and workers are owned by this process, so a SIGKILL takes the whole
    executor down (driver and its Ray workers), as a crashed node would.
    """

    def __init__(self, settings: Settings, ray_address: str, *extra_args: str) -> None:
        self.settings = settings
        self.ray_address = ray_address
        self.extra_args = extra_args
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._ready = threading.Event()

    def start(self, timeout_s: float = 120.0) -> ExecutorProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAYML_")}
        env.update(settings_env(self.settings))
        env["PYTHONPATH"] = str(REPO)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rayml.cli.main",
                "--log-level",
                "INFO",
                "serve",
                "--ray-address",
                self.ray_address,
                *self.extra_args,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout_s):
            self.kill()
            raise AssertionError("rayml serve did not get ready:\n" + "\n".join(self.log[-40:]))
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            if line.strip() == "READY":
                self._ready.set()

    def wait_for_log(self, pattern: str, timeout_s: float = 30.0) -> str:
        """The first log line matching the regex ``pattern``, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = next((line for line in list(self.log) if re.search(pattern, line)), None)
            if line is not None:
                return line
            time.sleep(0.1)
        raise AssertionError(f"no log line matching {pattern!r} in {timeout_s}s:\n{self.notable()}")

    def notable(self, limit: int = 60) -> str:
        """Its last warnings, errors and rebalance lines: what a failed assertion should show."""
        keep = ("WARNING", "ERROR", "drain", "revoking", "let go", "assigned", "lost", "stopped")
        lines = [line for line in self.log if any(k in line for k in keep)]
        return "\n".join(lines[-limit:])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no drain, no commit, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def terminate(self, timeout_s: float = 60.0) -> float:
        """SIGTERM and wait; returns the seconds it took to exit."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout_s)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(60)
            except subprocess.TimeoutExpired:
                self.kill()
