"""A tiny upstream app for the Envoy example: it answers every request with the method,
path and headers it received, as JSON, so you can see what Envoy let through (and the
``x-docket-decision-id`` header Docket added).

    .venv/bin/python examples/envoy/upstream.py            # listens on 127.0.0.1:8080
    .venv/bin/python examples/envoy/upstream.py --port 8081

tests/e2e/test_envoy.py runs the same server in a thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class EchoServer(ThreadingHTTPServer):
    """Echoes requests; ``seen`` lists every request it received, oldest first."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], *, verbose: bool = False) -> None:
        super().__init__(address, _EchoHandler)
        self.verbose = verbose
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()


class _EchoHandler(BaseHTTPRequestHandler):
    server: EchoServer
    protocol_version = "HTTP/1.1"

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        received = {
            "method": self.command,
            "path": self.path,
            "headers": {key.lower(): value for key, value in self.headers.items()},
        }
        with self.server.lock:
            self.server.seen.append(received)
        body = json.dumps(received, indent=2).encode() + b"\n"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _echo

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    server = EchoServer((args.host, args.port), verbose=True)
    print(f"upstream: echoing requests on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
