"""``docket serve`` as a subprocess for the e2e tests, and the process helpers they share.

A process is started on free loopback ports, is ready when its log says so, and is
stopped by the test that started it, by PID (SIGTERM, then SIGKILL). Children also get
SIGTERM from the kernel if the test process dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from attestation._ca import CertificateAuthority
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DOCKET = str(Path(PYTHON).with_name("docket"))
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0  # docket serve drains for up to 10 s


def die_with_parent(
    command: Sequence[str | os.PathLike[str]], signal_name: str = "TERM"
) -> list[Any]:
    """``command`` run so that it gets SIGTERM (or ``signal_name``) if the test process
    dies first: on Linux, util-linux's ``setpriv`` sets the parent-death signal and
    execs it (same process, same pid). A command prefix, not a ``preexec_fn``: with one,
    subprocess fork()s the test process, and the fork handlers of its gRPC threads race
    the fork (grpc/grpc#43055: "epoll_wait error: Bad file descriptor", a collector
    that never started); without one it uses vfork and exec."""
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    if setpriv is None:
        return list(command)
    return [setpriv, "--pdeathsig", signal_name, "--", *command]


def stop(process: subprocess.Popen[bytes], what: str) -> int:
    """SIGTERM ``process`` by PID (if it still runs) and wait; SIGKILL if it will not stop."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            return process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"{what} (pid {process.pid}) ignored SIGTERM for {STOP_TIMEOUT} s")
    return process.returncode


def wait_for(
    what: str, process: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool]
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"{what} exited ({process.returncode}) while starting:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not ready after {START_TIMEOUT} s:\n{log.read_text()}")
        time.sleep(0.05)


@dataclass
class Docket:
    process: subprocess.Popen[bytes]
    grpc_port: int
    metrics_url: str
    log: Path
    admission_port: int | None = None
    """The webhook's HTTPS port (None with ``--admission off``)."""

    @property
    def data_dir(self) -> Path:
        return self.log.parent / "data"

    def admission_client(self) -> httpx.Client:
        """An HTTPS client of the webhook trusting only ``docket ca bundle`` (what goes
        in the webhook configuration's caBundle)."""
        bundle = subprocess.run(
            [DOCKET, "ca", "bundle", "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert self.admission_port is not None, self.log.read_text()
        return httpx.Client(
            base_url=f"https://localhost:{self.admission_port}",
            verify=ssl.create_default_context(cadata=bundle),
            timeout=10,
        )

    def audit_entries(self, *kinds: str) -> list[dict[str, Any]]:
        """The entries of these kinds in the server's audit log, in order, read with
        ``docket audit export`` as an auditor would."""
        export = self.log.parent / "audit-export.jsonl"
        subprocess.run(
            [DOCKET, "audit", "export", "--data-dir", str(self.data_dir), "-o", str(export)],
            capture_output=True,
            check=True,
        )
        records = [json.loads(line) for line in export.read_text().splitlines()]
        return [r["entry"] for r in records if r["type"] == "entry" and r["kind"] in kinds]

    def stop(self) -> int:
        """SIGTERM by PID and wait; the exit code (again on later calls)."""
        return stop(self.process, "docket serve")

    def decisions(self, decision: str) -> float:
        """``docket_decisions_total{api="ext_authz",decision=…}`` now."""
        text = httpx.get(self.metrics_url, timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "docket_decisions_total" and sample.labels == {
                    "api": "ext_authz",
                    "decision": decision,
                }:
                    return sample.value
        return 0.0


def start_docket(
    root: Path,
    *flags: str,
    bundle: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Docket:
    """``docket serve`` on a copy of ``bundle`` (default policies/), on free ports, with
    ``--data-dir root/data`` and any other ``flags``, and ``env`` (``DOCKET_*`` settings
    without a flag, e.g. ``DOCKET_TRUSTED_PEPS``) over this process's environment;
    returns once it listens (plaintext or TLS)."""
    root.mkdir(parents=True, exist_ok=True)
    copy = root / "policies"
    shutil.copytree(bundle or ROOT / "policies", copy)
    log = root / "docket.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            die_with_parent(
                [
                    DOCKET,
                    "serve",
                    "--bundle",
                    str(copy),
                    "--grpc",
                    "127.0.0.1:0",
                    "--metrics",
                    "127.0.0.1:0",
                    "--admission",
                    "127.0.0.1:0",
                    "--data-dir",
                    str(root / "data"),
                    *flags,
                ]
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=None if env is None else {**os.environ, **env},
        )
    found: dict[str, int] = {}
    scheme: list[str] = []

    def listening() -> bool:
        text = log.read_text()
        grpc_at = re.search(r"gRPC listening on 127\.0\.0\.1:(\d+)", text)
        metrics_at = re.search(r"metrics on (https?)://127\.0\.0\.1:(\d+)/metrics", text)
        admission_at = re.search(r"admission webhook on https://127\.0\.0\.1:(\d+)", text)
        if grpc_at and metrics_at:
            found.update(grpc=int(grpc_at[1]), metrics=int(metrics_at[2]))
            scheme.append(metrics_at[1])
            if admission_at:
                found["admission"] = int(admission_at[1])
        return bool(found)

    try:
        wait_for("docket serve", process, log, listening)
    except BaseException:
        stop(process, "docket serve")
        raise
    return Docket(
        process,
        found["grpc"],
        f"{scheme[-1]}://127.0.0.1:{found['metrics']}/metrics",
        log,
        found.get("admission"),
    )


def start_mtls_docket(
    root: Path,
    *flags: str,
    bundle: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Docket, CertificateAuthority]:
    """:func:`start_docket` over mTLS: its CA (trust domain ``docket.local``) is made
    first, the server's certificate is that CA's (for localhost and 127.0.0.1), and
    clients must present a certificate from it; ``flags`` are more of its flags. Returns
    the server and its CA."""
    now = datetime.now(UTC)
    ca = CertificateAuthority.init(root / "data" / "ca", "docket.local", now)
    credential = ca.issue_server_cert(["localhost", "127.0.0.1"], now=now)
    (root / "server.pem").write_bytes(credential.chain_pem())
    (root / "server.key").write_bytes(credential.key_pem())
    (root / "bundle.pem").write_bytes(ca.trust_bundle())
    docket = start_docket(
        root,
        "--tls-cert",
        str(root / "server.pem"),
        "--tls-key",
        str(root / "server.key"),
        "--tls-client-ca",
        str(root / "bundle.pem"),
        *flags,
        bundle=bundle,
        env=env,
    )
    return docket, ca


def authorize(server: Docket, principal: str, resource: str = "ledger") -> pb.AuthorizeResponse:
    """One plaintext Authorize of ``User::principal`` reading ``Data::resource``."""
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        answer: pb.AuthorizeResponse = pb_grpc.DecisionsStub(channel).Authorize(
            pb.AuthorizeRequest(
                principal=pb.EntityRef(type="User", id=principal),
                action=pb.EntityRef(type="Action", id="read"),
                resource=pb.EntityRef(type="Data", id=resource),
            ),
            timeout=10,
        )
    return answer


def decisions_per_pid(metrics_dir: Path, api: str) -> dict[int, float]:
    """``docket_decisions_total{api=…}`` of each worker process, read from the
    files prometheus_client's multiprocess mode keeps per process (``counter_<pid>.db``)."""
    from prometheus_client.mmap_dict import MmapedDict

    counts: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            _metric, name, labels, _help = json.loads(key)
            if name == "docket_decisions_total" and labels.get("api") == api:
                counts[pid] = counts.get(pid, 0.0) + value
    return counts


def children_of(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found
