"""Real bundle sources for the tests: a static HTTP server (``http.server``, in-test, with
ETags) and an OCI registry (Debian's ``docker-registry``, started on a free port with a
configuration in a temporary directory and stopped by PID), and signed bundles to put in
them."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sample_bundle import ACCESS, bundle_files

from audit.note import SignerKey
from engine._core.bundle import bundle_version
from engine._core.signing import sign_bundle
from engine._service.bundle_source import pack

SIGNER = SignerKey.generate("docket-bundle")
OTHER_SIGNER = SignerKey.generate("docket-bundle")
REGISTRY = shutil.which("docker-registry")


def signed_files(
    revision: int,
    *,
    extra: str = "",
    signer: SignerKey = SIGNER,
    changes: Mapping[str, str | bytes | None] | None = None,
) -> dict[str, bytes]:
    """The sample bundle as revision ``revision`` of ``acme``, ``extra`` added to its
    policies, signed by ``signer``."""
    files = bundle_files(
        {
            "10-access.cedar": ACCESS + extra,
            "bundle.toml": f'[bundle]\nname = "acme"\nrevision = {revision}\n',
            **(changes or {}),
        }
    )
    note = sign_bundle(bundle_version(files), signer, name="acme", revision=revision)
    return {**files, "bundle.sig": note.encode()}


def signed_archive(revision: int, **kwargs: Any) -> bytes:
    """:func:`signed_files` as the ``.tar.gz`` a push publishes."""
    return pack(signed_files(revision, **kwargs))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class StaticServer:
    """A static HTTP server of ``files`` (path → bytes) in a thread, with strong ETags and
    ``If-None-Match``; ``PUT`` stores a file. It counts what it sends, and can misbehave:
    ``cut_after`` bytes of a body sent then the connection closed (the full
    ``Content-Length`` announced); ``no_length`` sends no length (close-delimited).

    With ``long_poll``, it answers OPA's long polling: a ``GET`` with ``Prefer:
    wait=N`` and the ETag of the file held waits up to N seconds for :meth:`put` to
    change the file, and says ``Preference-Applied: wait=N`` (RFC 7240)."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: int | None = None
    no_length: bool = False
    answers: list[tuple[str, int]] = field(default_factory=list)
    body_bytes: int = 0
    long_poll: bool = False
    changed: threading.Condition = field(default_factory=threading.Condition)

    def put(self, path: str, data: bytes) -> None:
        """Serve ``data`` at ``path`` from now on, waking the long polls."""
        with self.changed:
            self.files[path] = data
            self.changed.notify_all()

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                data = server.files.get(self.path)
                if data is None:
                    self._answer(404, b"")
                    return
                etag = _etag(data)
                wait = self.headers.get("Prefer", "").removeprefix("wait=")
                applied = server.long_poll and wait.isdigit()
                if applied and self.headers.get("If-None-Match") == etag:
                    with server.changed:
                        server.changed.wait_for(
                            lambda: server.files.get(self.path) != data, timeout=int(wait)
                        )
                    data = server.files.get(self.path, data)
                    etag = _etag(data)
                self.applied = f"wait={wait}" if applied else None
                if self.headers.get("If-None-Match") == etag:
                    self._answer(304, b"", etag=etag)
                    return
                self._answer(200, data, etag=etag)

            def do_PUT(self) -> None:
                length = int(self.headers["Content-Length"])
                server.put(self.path, self.rfile.read(length))
                self._answer(201, b"")

            def _answer(self, status: int, body: bytes, *, etag: str | None = None) -> None:
                server.answers.append((self.command, status))
                self.send_response(status)
                if getattr(self, "applied", None):
                    self.send_header("Preference-Applied", self.applied)
                if etag is not None:
                    self.send_header("ETag", etag)
                if status == 304:
                    self.end_headers()
                    return
                if server.no_length and status == 200:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None and status == 200:
                    body = body[: server.cut_after]
                    self.close_connection = True
                self.wfile.write(body)
                server.body_bytes += len(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def url(self, path: str = "/bundle.tar.gz") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        """Stop serving (again: only let go of the port held by :meth:`go_away`)."""
        held = getattr(self, "_held", None)
        if held is not None:
            held.close()
            self._held = None
            return
        if getattr(self, "_stopped", False):
            return
        self._stopped = True
        self.httpd.shutdown()
        self.httpd.server_close()

    def go_away(self) -> None:
        """Stop serving, and keep the port bound without listening until :meth:`stop`:
        a connection to it is refused (another test's server cannot take the port over
        and answer in its place)."""
        port = self.port
        self.stop()
        held = socket.socket()
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", port))
        self._held: socket.socket | None = held


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


@dataclass
class Registry:
    """A ``docker-registry`` process on loopback, stopped by PID."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def reference(self, repository: str = "acme/policies", tag: str = "latest") -> str:
        return f"oci://127.0.0.1:{self.port}/{repository}:{tag}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_registry(root: Path) -> Registry:
    """``docker-registry serve`` with its storage under ``root``, on a free port; returns
    once ``/v2/`` answers. Without the program: a skip, except in CI (nothing may skip
    there; ``.ci/install-test-deps`` installs it)."""
    if REGISTRY is None:
        why = "no docker-registry (apt-get install docker-registry; make test does)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(why)
        pytest.skip(why)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = root / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [REGISTRY, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    registry = Registry(process, port, log)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                return registry
        except (urllib.error.URLError, OSError):
            if process.poll() is not None or time.monotonic() > deadline:
                registry.stop()
                raise AssertionError(f"docker-registry did not start:\n{log.read_text()}") from None
            time.sleep(0.05)
