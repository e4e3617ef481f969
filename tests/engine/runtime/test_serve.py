"""``docket serve`` as a user runs it: a process, its output, its signals, its exit code."""

from __future__ import annotations

import json
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[3]
DOCKET = str(Path(sys.executable).parent / "docket")


FREE_ADMISSION = "--admission=127.0.0.1:0"


def _admission(args: list[str]) -> bool:
    return any(arg.startswith("--admission") for arg in args)


class Served:
    """A ``docket serve`` process; the addresses come from what it prints."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            # The webhook on a free port unless a test names one (8443 may be taken).
            [
                DOCKET,
                "serve",
                *(["--admission=127.0.0.1:0"] if not _admission(args) else []),
                *args,
            ],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._pump, daemon=True),
            threading.Thread(target=self._drain_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.printed = self.wait_for("metrics on", timeout=60)
        self.grpc = re.search(r"gRPC listening on (\S+)", self.printed)[1]  # type: ignore[index]
        self.metrics = re.search(r"metrics on (\S+)", self.printed)[1]  # type: ignore[index]

    def _pump(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as stream:
            for line in stream:
                self.lines.put(line)

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr as stream:
            self.stderr.extend(stream)

    def wait_for(self, needle: str, timeout: float) -> str:
        seen = ""
        deadline = time.monotonic() + timeout
        while needle not in seen:
            try:
                seen += self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.process.kill()
                raise AssertionError(f"no {needle!r} in {seen!r}; stderr: {self.stderr}") from None
        return seen

    def scrape(self, name: str) -> float:
        with urllib.request.urlopen(self.metrics, timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name)
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            for reader in self._readers:
                reader.join(timeout=10)


def struct(values: dict[str, object]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


ALLOW = pb.AuthorizeRequest(
    principal=pb.EntityRef(type="User", id="heidi"),
    action=pb.EntityRef(type="Action", id="read"),
    resource=pb.EntityRef(type="Data", id="public-website"),
)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", target)
    return target


@pytest.fixture
def served(request: pytest.FixtureRequest, bundle: Path, tmp_path: Path) -> Iterator[Served]:
    extra: list[str] = getattr(request, "param", [])
    args = ["--bundle", str(bundle), "--grpc", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]
    server = Served([*args, "--data-dir", str(tmp_path / "data"), *extra], tmp_path)
    try:
        yield server
    finally:
        server.stop()


def slow_batch() -> pb.BatchAuthorizeRequest:
    """A batch that takes a while: each request brings its own entity (a store copy each)."""
    requests = []
    for i in range(1000):
        request = pb.AuthorizeRequest()
        request.CopyFrom(ALLOW)
        request.entities.append(
            pb.Entity(uid=pb.EntityRef(type="Group", id=f"g{i}"), attrs=struct({}))
        )
        requests.append(request)
    return pb.BatchAuthorizeRequest(requests=requests)


def test_sigterm_drains_the_call_in_flight_and_exits_0(served: Served, tmp_path: Path) -> None:
    assert (tmp_path / "data").is_dir()  # serve creates the data directory
    with grpc.insecure_channel(served.grpc) as channel:
        stub = pb_grpc.DecisionsStub(channel)
        assert stub.Authorize(ALLOW, timeout=5).decision == pb.DECISION_ALLOW
        future = stub.BatchAuthorize.future(slow_batch(), timeout=60)
        deadline = time.monotonic() + 20
        while served.scrape('docket_in_flight_requests{api="batch_authorize"}') < 1:
            assert time.monotonic() < deadline, "the batch never started"
            time.sleep(0.01)
        served.process.send_signal(signal.SIGTERM)
        results = future.result().results
    assert len(results) == 1000
    assert all(r.decision == pb.DECISION_ALLOW for r in results)
    assert served.stop() == 0
    assert any("serve.stopped" in line for line in served.stderr)


def test_sigterm_with_a_health_watch_open_tells_it_and_exits_0(served: Served) -> None:
    with grpc.insecure_channel(served.grpc) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=60
        )
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        served.process.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert served.stop() == 0


def test_the_banner_names_the_jwks_endpoint_and_the_trusted_enforcement_points(
    served: Served,
) -> None:
    printed = served.printed + served.wait_for("trusted enforcement points", timeout=10)
    assert "trusted enforcement points: none (ext_authz Checks may not name a subject)" in printed
    url = re.search(r"device JWT-SVID keys on (\S+),", printed)[1]  # type: ignore[index]
    revocations = re.search(r"revocations on (\S+)", printed)[1]  # type: ignore[index]
    with urllib.request.urlopen(revocations, timeout=5) as response:
        assert response.status == 200
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["content-type"].startswith("application/json")
        assert response.read().startswith(b'{"keys"')
    metadata = re.search(r"AuthZEN 1.0 on \S+ \(metadata: (\S+)\)", printed)[1]  # type: ignore[index]
    with urllib.request.urlopen(metadata, timeout=5) as response:
        endpoint = json.loads(response.read())["access_evaluation_endpoint"]
    assert endpoint == metadata.replace(
        "/.well-known/authzen-configuration", "/access/v1/evaluation"
    )


@pytest.mark.parametrize("served", [["--workers", "2"]], indirect=True)
def test_workers_share_the_port_sum_metrics_and_reload_on_sighup(
    served: Served, bundle: Path
) -> None:
    assert "(plaintext, 2 workers)" in served.printed
    with grpc.insecure_channel(served.grpc) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service="docket.v1.Decisions"))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        before = pb_grpc.DecisionsStub(channel).Authorize(ALLOW, timeout=5).bundle_version
    # Separate connections are spread over the workers by the kernel.
    for _ in range(20):
        with grpc.insecure_channel(served.grpc) as channel:
            assert pb_grpc.DecisionsStub(channel).Authorize(ALLOW, timeout=5).decision == 1
    assert served.scrape('docket_decisions_total{api="authorize",decision="allow"}') == 21
    # AuthZEN on the shared HTTP port is decided in the workers too, and counted there.
    for _ in range(4):
        answer = httpx.post(
            served.metrics.removesuffix("/metrics") + "/access/v1/evaluation",
            json={
                "subject": {"type": "User", "id": "heidi"},
                "action": {"name": "read"},
                "resource": {"type": "Data", "id": "public-website"},
            },
            timeout=5,
        )
        assert answer.json() == {"decision": True}
    assert served.scrape('docket_decisions_total{api="authzen",decision="allow"}') == 4
    # Every entry (the 21 decisions, each worker's bundle entry) went through a commit
    # the entries-per-commit histogram saw.
    assert served.scrape("docket_audit_entries_per_commit_sum") == 27
    assert 1 <= served.scrape("docket_audit_entries_per_commit_count") <= 27
    # The same request again and again is answered from each worker's decision memo
    # (every answer still recorded above); the counters reach /metrics within a second.
    deadline = time.monotonic() + 20
    while served.scrape("docket_decision_memo_lookups_total") < 21:
        assert time.monotonic() < deadline, "memo lookups never reached /metrics"
        time.sleep(0.2)
    assert served.scrape('docket_decision_memo_lookups_total{result="hit"}') >= 19
    assert 1 <= served.scrape("docket_decision_memo_entries") <= 2

    (bundle / "extra.cedar").write_text(
        '@id("extra")\npermit (principal, action == Docket::Action::"share", resource)'
        " when { false };\n"
    )
    served.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    versions: set[str] = set()
    while versions != {"new"}:
        assert time.monotonic() < deadline, f"workers did not all reload: {versions}"
        versions = set()
        for _ in range(10):
            with grpc.insecure_channel(served.grpc) as channel:
                got = pb_grpc.DecisionsStub(channel).Authorize(ALLOW, timeout=5).bundle_version
                versions.add("old" if got == before else "new")
    assert served.stop() == 0


def serve_once(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``docket serve ARGS`` on free metrics and admission ports, run until it exits."""
    return subprocess.run(
        [DOCKET, "serve", "--metrics=127.0.0.1:0", FREE_ADMISSION,
         "--data-dir", str(data_dir), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(
            ["--grpc", "0.0.0.0:0"], "refusing plaintext gRPC", id="plaintext-off-loopback"
        ),
        pytest.param(["--grpc", "nonsense"], "expected HOST:PORT", id="bad-address"),
        pytest.param(["--tls-client-ca", "ca.pem"], "needs tls_cert", id="mtls-without-tls"),
        pytest.param(["--tls-cert", "missing.pem", "--tls-key", "k"], "missing.pem", id="no-file"),
        pytest.param(["--bundle", "nowhere"], "nowhere", id="no-bundle"),
    ],
)
def test_refuses_to_start(args: list[str], needle: str, tmp_path: Path) -> None:
    result = serve_once(tmp_path, *args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("docket: ")
    assert needle in lines[0]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_line_exit_2(workers: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve_once(tmp_path, "--grpc", f"127.0.0.1:{port}", "--workers", workers)
    assert result.returncode == 2, result
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("busy", ["grpc", "metrics", "admission"])
def test_a_serve_that_cannot_bind_writes_nothing_to_the_log(
    tmp_path: Path, busy: str, workers: str
) -> None:
    """A port in use stops `docket serve` with one line, exit 2, before anything is
    recorded: the audit log holds no bundle entry of a server that never served."""
    import sqlite3

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    addresses = {"grpc": "127.0.0.1:0", "metrics": "127.0.0.1:0", "admission": "127.0.0.1:0"}
    addresses[busy] = f"127.0.0.1:{port}"
    data = tmp_path / "data"
    try:
        done = subprocess.run(
            [DOCKET, "serve", "--bundle", str(ROOT / "policies"), "--data-dir", str(data),
             "--workers", workers,
             *(f"--{name}={address}" for name, address in addresses.items())],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        taken.close()
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("docket: ")
    assert str(port) in done.stderr
    with sqlite3.connect(data / "docket.db") as db:
        assert db.execute("SELECT count(*) FROM audit_entry").fetchone() == (0,)


def _remote(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCKET, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def test_decide_and_place_with_server_are_the_servers_decisions(
    served: Served, tmp_path: Path
) -> None:
    """`docket decide --server` sends the request to a running `docket serve`: the
    server decides from what it verifies, records the decision and names its audit
    entry, which `docket audit prove` then proves from the shell."""
    request = {
        "principal": {"type": "User", "id": "bob"},
        "action": {"type": "Action", "id": "read"},
        "resource": {"type": "Data", "id": "q3-forecast"},
        "context": {"mfa": True, "jurisdiction": "eu",
                    "device": {"disk_encrypted": True, "patch_age_days": 3, "managed": True}},
    }  # fmt: skip
    done = _remote("decide", "--server", served.grpc, "--json", stdin=json.dumps(request))
    assert done.returncode in (0, 1), done.stderr
    answer = json.loads(done.stdout)
    assert answer["decision_id"]
    index = answer["audit_index"]
    assert isinstance(index, int)
    proved = _remote("audit", "prove", str(index), "--data-dir", str(tmp_path / "data"), stdin="")
    assert proved.returncode == 0, proved.stderr
    entry = json.loads(proved.stdout)["entry"]
    assert entry["detail"]["decision_id"] == answer["decision_id"]
    assert entry["decision"] == answer["decision"]

    text = _remote("decide", "--server", served.grpc, stdin=json.dumps(request))
    assert f"audit entry {index + 1}" in text.stdout or "audit entry" in text.stdout

    # What only a verified credential may say is refused by the server, naming the field.
    forged = {**request, "context": {**request["context"], "device": {"attested": True}}}
    refused = _remote("decide", "--server", served.grpc, stdin=json.dumps(forged))
    assert refused.returncode == 2
    assert "context.device.attested" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    workload = (ROOT / "examples" / "quickstart" / "workload.json").read_text()
    placed = _remote("place", "--server", served.grpc, "--json", stdin=workload)
    assert placed.returncode in (0, 1), placed.stderr
    placement = json.loads(placed.stdout)
    assert placement["workload_id"] == "model-trainer"
    assert placement["receipt"]["index"] > index

    nowhere = _remote("decide", "--server", "127.0.0.1:1", stdin=json.dumps(request))
    assert nowhere.returncode == 2
    assert nowhere.stderr.startswith("docket: 127.0.0.1:1: ")
