"""A software TPM (swtpm) for tests and fixture scripts, driven with tpm2-tools.

``SoftwareTpm.start(state_dir)`` runs ``swtpm socket`` on a free TCP port pair of
127.0.0.1 and waits until it listens; :meth:`SoftwareTpm.run` runs a tpm2-tools command
against it and then flushes transient objects (swtpm has three slots and no resource
manager); :meth:`SoftwareTpm.stop` stops it by its PID.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

TOOLS = ("swtpm", "tpm2_createek", "tpm2_createak", "tpm2_activatecredential", "tpm2_quote")


class SoftwareTpmError(RuntimeError):
    """swtpm did not start (its stderr says why)."""


def free_port_pair() -> int:
    """A port P with P and P+1 free on 127.0.0.1 (swtpm's server and control ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise SoftwareTpmError("no two consecutive free ports on 127.0.0.1")


@dataclass
class SoftwareTpm:
    """A running swtpm and the environment that points tpm2-tools at it."""

    process: subprocess.Popen[bytes]
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, state: Path, *, timeout: float = 10.0) -> SoftwareTpm:
        """Start swtpm with its state in ``state``. Raises :class:`SoftwareTpmError`."""
        port = free_port_pair()
        process = subprocess.Popen(
            [
                "swtpm",
                "socket",
                "--tpm2",
                "--tpmstate",
                f"dir={state}",
                "--server",
                f"type=tcp,port={port},bindaddr=127.0.0.1",
                "--ctrl",
                f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                "--flags",
                "not-need-init,startup-clear",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        tpm = cls(
            process, port, dict(os.environ, TPM2TOOLS_TCTI=f"swtpm:host=127.0.0.1,port={port}")
        )
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                tpm.stop()
                raise SoftwareTpmError(f"swtpm exited with {process.returncode}: {stderr}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return tpm
            except OSError:
                if time.monotonic() > deadline:
                    tpm.stop()
                    raise SoftwareTpmError(f"swtpm did not listen within {timeout} s") from None
                time.sleep(0.05)

    def run(self, *argv: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a tpm2-tools command, then flush its transient objects."""
        try:
            return subprocess.run(
                argv, cwd=cwd, env=self.env, capture_output=True, text=True, check=check
            )
        finally:
            subprocess.run(
                ["tpm2_flushcontext", "-t"], cwd=cwd, env=self.env, capture_output=True, check=True
            )

    def stop(self) -> None:
        """Stop swtpm by its PID (SIGTERM, then SIGKILL after 10 s)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
