"""An OTLP/HTTP trace receiver for the tracing row of ``python -m bench``: it accepts what an
OpenTelemetry Collector would (POST ``/v1/traces``, protobuf), counts the spans, and answers
``GET /count`` with that count. Run as ``python -m bench.otlp_sink``: it prints its port.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_lock = threading.Lock()
_spans = 0
_REPLY = ExportTraceServiceResponse().SerializeToString()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        global _spans
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with _lock:
            _spans += n
        self._reply(_REPLY, "application/x-protobuf")

    def do_GET(self) -> None:
        with _lock:
            count = _spans
        self._reply(str(count).encode(), "text/plain")

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class OtlpSink:
    """The receiver in a process of its own (its CPU is not the contender's), for one bench."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.otlp_sink"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def spans(self) -> int:
        """Spans received so far."""
        with urllib.request.urlopen(f"{self.url}/count", timeout=10) as reply:
            return int(reply.read())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    print(server.server_address[1], flush=True)
    # Ends with its parent: stdin closes when the bench process exits.
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
