"""``docket serve`` under gRPC load: Authorize (one call in flight per connection, and
256 in flight), BatchAuthorize, a fixed-rate latency run and Envoy ext_authz Check,
driven by h2load (see :mod:`benchmarks._load`). Each run says how many audit entries a
commit carried (the server's ``docket_audit_entries_per_commit``) and the server's CPU
per call.

The server runs as a subprocess on free 127.0.0.1 ports with a temporary data
directory, the default bundle and ``--workers 2``; the load generator shares the
machine with it. ``DOCKET_BENCH_SERVE`` replaces the ``.venv/bin/docket`` command (for
example ``python other_build.py``) to try the benchmark against another build.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2

from attestation._ca import CertificateAuthority
from attestation._posture import Posture
from benchmarks._common import H2LOAD_MISSING, skipped, table
from benchmarks._load import (
    LoadResult,
    Server,
    Stream,
    call,
    connections_per_process,
    frame,
    free_port,
    h2load_version,
    run_h2load,
    workdir,
)
from benchmarks.bench_decide import load_cases
from engine import Decision, Engine, PolicyBundle, Request
from engine._service.constants import ATTESTED_DEVICE_FIELDS
from sdk.v1 import decisions_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "policies"
WORKERS = 2
AUTHORIZE = "/docket.v1.Decisions/Authorize"
BATCH = "/docket.v1.Decisions/BatchAuthorize"
CHECK = "/envoy.service.auth.v3.Authorization/Check"
READY_TIMEOUT_S = 90.0

# The Authorize mix: cases of policies/tests/access.yaml, four allowed and four denied,
# users and workloads, reads, writes and deletes, internal to restricted data.
MIX = (
    "restricted-record-from-attested-encrypted-eu-device",
    "payroll-read-by-cleared-engineer-outside-hr",
    "ehr-gateway-reads-us-records-from-us-node",
    "confidential-read-without-mfa",
    "owner-writes-confidential-from-patched-device",
    "billing-api-may-not-delete-regulated-invoices",
    "any-cleared-user-reads-internal-directory",
    "web-frontend-may-not-read-other-namespace",
)
CONNECTIONS_PER_BODY = 2  # 8 bodies x 2 = 16 connections, one request in flight on each
DEEP_STREAMS = 16  # the deep run: 16 connections x 16 streams = 256 calls in flight
BATCH_SIZES = (100, 1000)
BATCH_CONNECTIONS = 8
RATE = 2000  # Authorize/s for the latency run: 16 connections x 125/s
RATE_STREAMS = 16  # streams a connection may have open, so a slow answer does not
# hold back the next scheduled request (no coordinated omission below 16 in flight)
CHECK_CONNECTIONS = 16
CHECK_PATH = "/records/quarterly-forecast"
CHECK_HOST = "records.docket.example"

TARGET_AUTHORIZE_PER_S = 5000
TARGET_BATCH_DECISIONS_PER_S = 25_000
TARGET_P99_MS = 10.0
TARGET_ENTRIES_PER_COMMIT = 8.0  # at 256 calls in flight (issue 15)


@dataclass(frozen=True, slots=True)
class Durations:
    """Seconds of each run (after its warm-up)."""

    warm_up: float
    authorize: float
    batch: float
    rate: float
    check: float


FULL = Durations(warm_up=2, authorize=15, batch=8, rate=15, check=10)
QUICK = Durations(warm_up=1, authorize=3, batch=3, rate=4, check=3)


# --- requests ----------------------------------------------------------------------------


def to_proto(request: Request) -> pb.AuthorizeRequest:
    """A Docket request as the wire's AuthorizeRequest (numbers travel as doubles)."""
    message = pb.AuthorizeRequest(
        principal=pb.EntityRef(type=request.principal.type, id=request.principal.id),
        action=pb.EntityRef(type=request.action.type, id=request.action.id),
        resource=pb.EntityRef(type=request.resource.type, id=request.resource.id),
    )
    message.context.update(request.context)
    for entity in request.entities:
        added = message.entities.add()
        added.uid.type = entity["uid"]["type"]
        added.uid.id = entity["uid"]["id"]
        added.attrs.update(entity.get("attrs", {}))
        for parent in entity.get("parents", []):
            added.parents.add(type=parent["type"], id=parent["id"])
    return message


@dataclass(frozen=True, slots=True)
class Case:
    """A request of the bundle's tests with the decision its case expects."""

    name: str
    message: pb.AuthorizeRequest
    expected: pb.Decision.ValueType  # DECISION_ALLOW or DECISION_DENY


def bundle_cases() -> list[Case]:
    """Every case of policies/tests/*.yaml as an AuthorizeRequest."""
    decisions = {"allow": pb.DECISION_ALLOW, "deny": pb.DECISION_DENY}
    return [
        Case(name, to_proto(request), decisions[expected])
        for name, request, expected in load_cases(BUNDLE)
    ]


def as_attested_device(case: Case, ca: CertificateAuthority) -> Case:
    """The case as an attested device sends it: the attested facts as a JWT-SVID from
    ``ca``, the inventory facts (an MDM's) left in ``context.device``."""
    message = pb.AuthorizeRequest()
    message.CopyFrom(case.message)
    device = message.context.fields.get("device")
    attested = device.struct_value.fields.get("attested") if device is not None else None
    if attested is None or attested.WhichOneof("kind") != "bool_value" or not attested.bool_value:
        return case  # a Value message is truthy even when it holds false
    for name in ATTESTED_DEVICE_FIELDS:
        if name in device.struct_value.fields:
            del device.struct_value.fields[name]
    posture = Posture(
        attested=True,
        device_class="dev",
        secure_boot=True,
        measured_boot_ok=True,
        firmware_version=0x20250101,
        tpm_manufacturer="bench",
        ek_hash=bytes(32),
    )
    message.device_token = ca.issue_jwt(
        f"spiffe://{ca.trust_domain}/device/{'0' * 64}",
        "docket",
        now=datetime.now(UTC),
        claims=posture.claims(),
    )
    return Case(case.name, message, case.expected)


def mix(cases: list[Case]) -> list[Case]:
    """The cases of :data:`MIX`, in its order."""
    by_name = {case.name: case for case in cases}
    missing = [name for name in MIX if name not in by_name]
    if missing:
        raise RuntimeError(f"policies/tests has no case named {', '.join(missing)}")
    return [by_name[name] for name in MIX]


def check_request() -> external_auth_pb2.CheckRequest:
    """An ext_authz CheckRequest as Envoy sends it for an unauthenticated GET. The load
    tool has no client certificate, so it is no trusted enforcement point: a subject
    (``source.principal``, JWT metadata) from it would be refused, not decided."""
    check = external_auth_pb2.CheckRequest()
    attributes = check.attributes
    attributes.request.http.method = "GET"
    attributes.request.http.path = CHECK_PATH
    attributes.request.http.host = CHECK_HOST
    attributes.context_extensions["resource_type"] = "Data"
    attributes.context_extensions["resource_id"] = "quarterly-forecast"
    return check


# --- the server --------------------------------------------------------------------------


def serve_command() -> list[str]:
    """``docket`` from the virtualenv, or ``$DOCKET_BENCH_SERVE``."""
    override = os.environ.get("DOCKET_BENCH_SERVE")
    if override:
        return shlex.split(override)
    return [str(Path(sys.executable).parent / "docket")]


@dataclass(frozen=True, slots=True)
class Docket:
    """A running ``docket serve``: its addresses and process group."""

    grpc: str
    metrics: str
    pgid: int

    @property
    def port(self) -> int:
        """The gRPC port."""
        return int(self.grpc.rsplit(":", 1)[1])

    def calls(self) -> Counter[str] | None:
        """Calls the server has counted so far by gRPC status (its Prometheus
        ``docket_requests_total``, every API); None when the metrics say nothing."""
        text = self._scrape()
        if text is None:
            return None
        counts: Counter[str] = Counter()
        for found in _REQUESTS_TOTAL.finditer(text):
            code = re.search(r'code="([^"]*)"', found.group(1))
            counts[code.group(1) if code else "?"] += round(float(found.group(2)))
        return counts or None

    def commits(self) -> tuple[float, float] | None:
        """Audit entries committed so far and the commits that carried them (the
        server's ``docket_audit_entries_per_commit`` sum and count); None when its
        metrics have no such histogram (a build before issue 15)."""
        found = dict(_COMMITS.findall(self._scrape() or ""))
        if "sum" not in found or "count" not in found:
            return None
        return float(found["sum"]), float(found["count"])

    def _scrape(self) -> str | None:
        """The server's ``/metrics`` text, or None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            return None


_REQUESTS_TOTAL = re.compile(r"^docket_requests_total\{([^}]*)\} (\S+)$", re.M)
_COMMITS = re.compile(r"^docket_audit_entries_per_commit_(sum|count) (\S+)$", re.M)


@contextmanager
def docket_server(
    state: Path, *, workers: int = WORKERS, command: list[str] | None = None
) -> Iterator[Docket]:
    """Start ``docket serve`` on free ports; yield it; stop it (SIGTERM, wait) after.
    ``command`` runs another build of ``docket`` (default :func:`serve_command`)."""
    grpc_addr = f"127.0.0.1:{free_port()}"
    metrics_addr = f"127.0.0.1:{free_port()}"
    argv = [
        *(command or serve_command()),
        "serve",
        "--bundle",
        str(BUNDLE),
        "--grpc",
        grpc_addr,
        "--metrics",
        metrics_addr,
        "--admission",
        "off",
        "--data-dir",
        str(state),
        "--workers",
        str(workers),
    ]
    print(f"  server: {shlex.join(argv)}", flush=True)
    server = Server(argv, cwd=ROOT, name="docket serve")
    try:
        line = server.wait_for(r"listening", READY_TIMEOUT_S)
        print(f"  {line.strip()}", flush=True)
        yield Docket(grpc_addr, metrics_addr, server.proc.pid)
    finally:
        code = server.stop()
        print(f"  server stopped (exit {code})", flush=True)


def expect_ok(address: str, method: str, message: Message, reply_type: type[Message]) -> Message:
    """One call; raise unless its gRPC status is OK. Returns the decoded reply."""
    answer = call(address, method, message.SerializeToString())
    if answer.code != grpc.StatusCode.OK:
        raise RuntimeError(f"{method}: gRPC status {answer.code.name}: {answer.details}")
    reply = reply_type()
    reply.ParseFromString(answer.message)
    return reply


def verify_authorize(address: str, case: Case) -> int:
    """Check the server's answer to a case; return the framed response size in bytes."""
    reply = expect_ok(address, AUTHORIZE, case.message, pb.AuthorizeResponse)
    assert isinstance(reply, pb.AuthorizeResponse)
    if reply.decision != case.expected:
        raise RuntimeError(
            f"Authorize {case.name}: {pb.Decision.Name(reply.decision)}, expected "
            f"{pb.Decision.Name(case.expected)} (reasons {list(reply.reasons)}, "
            f"errors {[e.message for e in reply.errors]})"
        )
    return len(frame(reply.SerializeToString()))


def _answers_as_expected(address: str, case: Case) -> bool:
    try:
        verify_authorize(address, case)
    except RuntimeError:
        return False
    return True


def verify_batch(address: str, cases: list[Case], size: int) -> tuple[bytes, int]:
    """A BatchAuthorize body of ``size`` cases (cycled), checked; body and reply size."""
    chosen = [cases[i % len(cases)] for i in range(size)]
    message = pb.BatchAuthorizeRequest(requests=[case.message for case in chosen])
    reply = expect_ok(address, BATCH, message, pb.BatchAuthorizeResponse)
    assert isinstance(reply, pb.BatchAuthorizeResponse)
    if len(reply.results) != size:
        raise RuntimeError(f"BatchAuthorize of {size}: {len(reply.results)} results")
    wrong = [
        case.name
        for case, result in zip(chosen, reply.results, strict=True)
        if result.decision != case.expected
    ]
    if wrong:
        raise RuntimeError(f"BatchAuthorize: unexpected decisions for {sorted(set(wrong))}")
    return message.SerializeToString(), len(frame(reply.SerializeToString()))


def check_expected() -> Decision:
    """What the engine decides, in-process, for the request :func:`check_request` maps to:
    the anonymous user reads (GET) the data, with the HTTP attributes as context and no
    device posture."""
    request = Request.model_validate(
        {
            "principal": {"type": "User", "id": "anonymous"},
            "action": {"type": "Action", "id": "read"},
            "resource": {"type": "Data", "id": "quarterly-forecast"},
            "context": {"http": {"method": "GET", "path": CHECK_PATH, "host": CHECK_HOST}},
        }
    )
    return Engine(PolicyBundle.load(BUNDLE)).decide(request, now=datetime.now(UTC))


def verify_check(address: str, check: external_auth_pb2.CheckRequest) -> tuple[str, int]:
    """Check's answer (``allow``/``deny``, from its status code), which must be the
    engine's own decision, and the framed response size."""
    reply = expect_ok(address, CHECK, check, external_auth_pb2.CheckResponse)
    assert isinstance(reply, external_auth_pb2.CheckResponse)
    if reply.status.code not in (code_pb2.OK, code_pb2.PERMISSION_DENIED):
        raise RuntimeError(f"Check: status {reply.status.code}, not a decision: {reply}")
    verdict = "allow" if reply.status.code == code_pb2.OK else "deny"
    expected = check_expected()
    if verdict != expected.decision:
        raise RuntimeError(
            f"Check: {verdict} (status {reply.status.code}), the engine decides "
            f"{expected.decision} ({', '.join(expected.reasons) or 'no policy'})"
        )
    return verdict, len(frame(reply.SerializeToString()))


# --- the runs ----------------------------------------------------------------------------


@dataclass(slots=True)
class Runner:
    """Runs h2load against one server and keeps what each run's checks found."""

    server: Docket
    tmp: Path
    times: Durations
    warnings: list[str] = field(default_factory=list)
    not_ok: dict[str, int | None] = field(default_factory=dict)
    split: dict[str, list[int] | None] = field(default_factory=dict)
    per_commit: dict[str, float | None] = field(default_factory=dict)

    def measure(
        self, label: str, path: str, streams: list[Stream], sizes: list[int], seconds: float
    ) -> LoadResult:
        """One h2load run, checked: HTTP failures, message bytes, the server's own count
        of calls that were not OK, and how the connections were spread over the workers."""
        before = self.server.calls()
        codes = ""
        commits_before = self.server.commits()
        result = run_h2load(
            f"http://{self.server.grpc}{path}",
            streams,
            duration_s=seconds,
            warm_up_s=self.times.warm_up,
            response_sizes=sizes,
            workdir=self.tmp,
            probe=lambda: connections_per_process(self.server.port, self.server.pgid),
            server_pgid=self.server.pgid,
        )
        after = self.server.calls()
        commits_after = self.server.commits()
        self.per_commit[label] = None
        if commits_before is not None and commits_after is not None:
            entries = commits_after[0] - commits_before[0]
            commits = commits_after[1] - commits_before[1]
            self.per_commit[label] = entries / commits if commits else None
        self.split[label] = result.probe if isinstance(result.probe, list) else None
        if before is not None and after is not None:
            delta = after - before
            self.not_ok[label] = sum(n for code, n in delta.items() if code != "OK")
            codes = ", ".join(f"{code} {n:,}" for code, n in delta.items() if code != "OK")
        else:
            self.not_ok[label] = None
        found = []
        if result.failed:
            found.append(f"{label}: {result.failed:,} requests failed at HTTP/2 level")
        if not result.data_ratio >= 0.99:
            found.append(
                f"{label}: responses carried {result.data_ratio:.1%} of the expected message "
                "bytes: some calls ended in a gRPC error"
            )
        if self.not_ok[label]:
            found.append(
                f"{label}: the server counted {self.not_ok[label]:,} calls not OK ({codes})"
            )
        for warning in found:  # now, in case a later step fails
            print(f"  WARNING: {warning}", flush=True)
        self.warnings += found
        return result


def run(*, quick: bool = False) -> dict[str, Any]:
    """Run the benchmark, print its table, return its figures."""
    version = h2load_version()
    if version is None:
        return skipped(H2LOAD_MISSING)
    times = QUICK if quick else FULL
    check = check_request()
    with workdir("docket-bench-grpc-") as tmp, docket_server(tmp / "data") as server:
        address = server.grpc
        ca = CertificateAuthority.load(tmp / "data" / "ca")
        # Attested facts travel as a device token: a caller may not send them (issue 13).
        every = [as_attested_device(case, ca) for case in bundle_cases()]
        authorize_cases = mix(every)
        # The batches: the cases a caller can send as they are over the wire (a case
        # whose device is unattested but carries attested facts cannot be).
        cases = [case for case in every if _answers_as_expected(address, case)]
        left_out = sorted(case.name for case in every if case not in cases)
        runner = Runner(server, tmp, times)
        sizes = [verify_authorize(address, case) for case in authorize_cases]
        allowed = sum(case.expected == pb.DECISION_ALLOW for case in authorize_cases)
        print(
            f"  verified: Authorize of the {len(authorize_cases)} mix bodies answers OK with "
            f"the expected decisions ({allowed} allow, {len(authorize_cases) - allowed} deny)"
        )
        bodies = [case.message.SerializeToString() for case in authorize_cases]

        # (a) Authorize, closed loop, one h2load process per body.
        streams = [Stream(body, CONNECTIONS_PER_BODY) for body in bodies]
        labels = {"authorize": f"Authorize, mix of {len(bodies)}"}
        authorize = runner.measure(labels["authorize"], AUTHORIZE, streams, sizes, times.authorize)

        # (a') Authorize, closed loop, 256 calls in flight: what fills a group commit.
        deep_streams = [Stream(body, CONNECTIONS_PER_BODY, streams=DEEP_STREAMS) for body in bodies]
        in_flight = len(bodies) * CONNECTIONS_PER_BODY * DEEP_STREAMS
        labels["deep"] = f"Authorize, {in_flight} in flight"
        deep = runner.measure(labels["deep"], AUTHORIZE, deep_streams, sizes, times.authorize)

        # (b) BatchAuthorize, closed loop, per batch size.
        batches: dict[int, LoadResult] = {}
        for size in BATCH_SIZES:
            body, reply_size = verify_batch(address, cases, size)
            labels[f"batch{size}"] = f"BatchAuthorize x{size}"
            batches[size] = runner.measure(
                labels[f"batch{size}"],
                BATCH,
                [Stream(body, BATCH_CONNECTIONS)],
                [reply_size],
                times.batch,
            )
        print(
            f"  verified: BatchAuthorize of {' and '.join(map(str, BATCH_SIZES))} requests "
            f"({len(cases)} of the {len(every)} cases of policies/tests, cycled) answers as the "
            f"cases expect; left out: {', '.join(left_out) or 'none'}"
        )

        # (c) Authorize at a fixed rate (open loop), the same bodies and connections.
        per_connection = RATE // (len(bodies) * CONNECTIONS_PER_BODY)
        offered = per_connection * len(bodies) * CONNECTIONS_PER_BODY
        rate_streams = [
            Stream(body, CONNECTIONS_PER_BODY, streams=RATE_STREAMS, rps=per_connection)
            for body in bodies
        ]
        labels["rate"] = f"Authorize at {offered:,}/s offered"
        rated = runner.measure(labels["rate"], AUTHORIZE, rate_streams, sizes, times.rate)

        # (d) ext_authz Check, closed loop.
        verdict, check_size = verify_check(address, check)
        print(
            f"  verified: ext_authz Check answers OK, {verdict} as the engine decides "
            "(anonymous GET quarterly-forecast, no device posture)"
        )
        labels["check"] = f"ext_authz Check ({verdict})"
        checked = runner.measure(
            labels["check"],
            CHECK,
            [Stream(check.SerializeToString(), CHECK_CONNECTIONS)],
            [check_size],
            times.check,
        )

        for case in authorize_cases:  # still answering correctly after the load
            verify_authorize(address, case)
        print("  verified again after the load: every mix body answers OK as expected")

    results = {
        "authorize": (authorize, 1),
        "deep": (deep, 1),
        **{f"batch{size}": (batches[size], size) for size in BATCH_SIZES},
        "rate": (rated, 1),
        "check": (checked, 1),
    }
    rows = [
        _row(
            labels[key],
            result,
            per_call,
            runner.not_ok[labels[key]],
            runner.split[labels[key]],
            runner.per_commit[labels[key]],
        )
        for key, (result, per_call) in results.items()
    ]
    headers = (
        *("run", "conns", "per worker", "calls/s", "decisions/s"),
        *("p50 ms", "p90 ms", "p99 ms", "max ms", "not OK", "cores srv/h2load/other"),
        *("entries/commit", "srv CPU µs/call"),
    )
    print(table(headers, rows))
    print(
        f"tool: {version}; closed loop: one call in flight per connection; Authorize: one "
        f"h2load process per body, {CONNECTIONS_PER_BODY} connections each; fixed rate: "
        f"--rps {per_connection} per connection, up to {RATE_STREAMS} streams each; "
        f"{times.warm_up:g} s warm-up, then {times.authorize:g}/{times.batch:g}/{times.rate:g}/"
        f"{times.check:g} s measured (Authorize/Batch/rate/Check); latencies from h2load's "
        "per-request log; 'per worker': connections each server process held mid-run; "
        "'not OK': calls the server's metrics counted with another gRPC status; 'cores': "
        "average cores busy during the run (server processes / h2load / everything else); "
        f"'{labels['deep']}': {CONNECTIONS_PER_BODY} connections per body with "
        f"{DEEP_STREAMS} streams each; 'entries/commit': audit entries per commit (one "
        "transaction, one fsync) during the run, from the server's metrics (n/a: a build "
        "without them); 'srv CPU µs/call': server CPU time per call answered"
    )
    batch_rate = max(result.per_second * size for size, result in batches.items())
    sustained = rated.per_second >= 0.98 * offered
    rate_note = "" if sustained else f", only {rated.per_second:,.0f}/s answered"
    deep_per_commit = runner.per_commit[labels["deep"]]
    targets = [
        ("Authorize", authorize.per_second >= TARGET_AUTHORIZE_PER_S,
         f"≥ {TARGET_AUTHORIZE_PER_S:,}/s", f"{authorize.per_second:,.0f}/s"),
        ("BatchAuthorize", batch_rate >= TARGET_BATCH_DECISIONS_PER_S,
         f"≥ {TARGET_BATCH_DECISIONS_PER_S:,} decisions/s", f"{batch_rate:,.0f} decisions/s"),
        (f"p99 at {RATE:,}/s", sustained and rated.p99_ms <= TARGET_P99_MS,
         f"≤ {TARGET_P99_MS:g} ms", f"{rated.p99_ms:.2f} ms{rate_note}"),
        (f"entries per commit at {in_flight} in flight",
         deep_per_commit is not None and deep_per_commit >= TARGET_ENTRIES_PER_COMMIT,
         f"≥ {TARGET_ENTRIES_PER_COMMIT:g}",
         "n/a" if deep_per_commit is None else f"{deep_per_commit:.1f}"),
    ]  # fmt: skip
    for name, met, target, got in targets:
        print(f"target: {name} {target} — {'MET' if met else 'NOT MET'} ({got})")
    for warning in runner.warnings:
        print(f"WARNING: {warning}")

    def figures_of(key: str) -> dict[str, Any]:
        result, per_call = results[key]
        return {
            **result.figures(),
            "decisions_per_second": round(result.per_second * per_call, 1),
            "calls_per_server_core_second": (
                None if per_core(result) is None else round(per_core(result) or 0, 1)
            ),
            "server_not_ok": runner.not_ok[labels[key]],
            "entries_per_commit": runner.per_commit[labels[key]],
            "server_cpu_us_per_call": cpu_us(result),
            "connections_per_worker": runner.split[labels[key]],
        }

    return {
        "tool": version,
        "workers": WORKERS,
        "authorize": figures_of("authorize"),
        "authorize_deep": {"in_flight": in_flight, **figures_of("deep")},
        "batch": {str(size): figures_of(f"batch{size}") for size in BATCH_SIZES},
        "rate": {"offered_per_second": offered, **figures_of("rate")},
        "ext_authz_check": {"verdict": verdict, **figures_of("check")},
        "targets": {name: met for name, met, _, _ in targets},
        "warnings": runner.warnings,
    }


def _row(
    label: str,
    result: LoadResult,
    per_call: int,
    not_ok: int | None,
    split: list[int] | None,
    per_commit: float | None,
) -> tuple[object, ...]:
    cpu = cpu_us(result)
    return (
        label,
        result.connections,
        "?" if split is None else "/".join(map(str, split + [0] * (WORKERS - len(split)))),
        round(result.per_second),
        round(result.per_second * per_call),
        f"{result.p50_ms:.2f}",
        f"{result.p90_ms:.2f}",
        f"{result.p99_ms:.2f}",
        f"{result.max_ms:.2f}",
        "n/a" if not_ok is None else not_ok,
        cores(result),
        "n/a" if per_commit is None else f"{per_commit:.1f}",
        "?" if cpu is None else f"{cpu:,.0f}",
    )


def per_core(result: LoadResult) -> float | None:
    """Calls answered per second of server CPU time: less sensitive to a busy machine."""
    cpu = result.cpu
    return result.per_second / cpu.server if cpu is not None and cpu.server > 0 else None


def cpu_us(result: LoadResult) -> float | None:
    """Microseconds of server CPU time per call answered."""
    calls = per_core(result)
    return None if calls is None or calls <= 0 else round(1e6 / calls, 1)


def cores(result: LoadResult) -> str:
    """Average cores used during a run by the server, h2load and everything else."""
    cpu = result.cpu
    return "?" if cpu is None else f"{cpu.server:.1f}/{cpu.load:.1f}/{cpu.other:.1f}"
