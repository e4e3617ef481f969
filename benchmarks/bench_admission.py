"""``docket serve``'s Kubernetes admission webhook under load: AdmissionReviews over HTTPS
(HTTP/1.1, keep-alive), driven by h2load (see :mod:`benchmarks._load`).

The server runs as a subprocess with the default bundle, a temporary SQLite data
directory and its admission port on a free 127.0.0.1 port, with ``--workers 2`` and then
``--workers 1``; h2load shares the machine with it. Every body is first sent with an
HTTPS client that verifies the webhook's certificate against ``docket ca bundle``, and
again after the load. ``DOCKET_BENCH_SERVE`` replaces the ``docket`` command, as for
``grpc``.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import jsonpatch

from audit import AuditLog
from benchmarks._common import import_path, summarize, table
from benchmarks._load import (
    LoadResult,
    Server,
    Stream,
    connections_per_process,
    free_port,
    h2load_version,
    run_h2load,
    workdir,
)
from benchmarks.bench_grpc import BUNDLE, READY_TIMEOUT_S, ROOT, cores, serve_command
from engine import BundleWatcher, Engine, PolicyBundle
from engine._runtime.logging_setup import configure_logging
from engine._service.admission import AdmissionController
from engine._service.decisions import DecisionService
from engine._service.metrics import Metrics

REVIEWS_HELPER = ROOT / "tests" / "admission_reviews.py"
JSON_HEADERS = ("content-type: application/json",)
Webhook = Literal["validate", "mutate"]
Expect = Literal["allow", "deny", "patch"]

TARGET_PER_S = 1000
TARGET_P99_MS = 20.0
RATE = 1000  # reviews/s offered in the latency run: 20 connections x 50/s
IN_PROCESS_CALLS = 200  # per body, after 20 untimed


@dataclass(frozen=True, slots=True)
class Body:
    """One body of the mix: which webhook, which object, what the answer must be, and the
    connections that send it. The API server calls /mutate and /validate for every object,
    so half of the connections mutate."""

    label: str
    webhook: Webhook
    fixture: str
    namespace: str
    expect: Expect
    connections: int


MIX = (
    Body("validate, allowed (deployment)", "validate", "deployment", "public-web", "allow", 5),
    Body("validate, denied (daemonset-privileged)", "validate", "daemonset-privileged",
         "clinical", "deny", 5),
    Body("mutate (deployment-restricted-eu)", "mutate", "deployment-restricted-eu", "clinical",
         "patch", 10),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Durations:
    """Seconds of each run (after its warm-up)."""

    warm_up: float
    load: float
    rate: float
    workers1: float
    healthz: float


FULL = Durations(warm_up=3, load=10, rate=10, workers1=8, healthz=5)
QUICK = Durations(warm_up=1, load=3, rate=3, workers1=3, healthz=2)


def reviews_module() -> ModuleType:
    """tests/admission_reviews.py, imported by path (tests/ is not a package on sys.path)."""
    return import_path("docket_bench_reviews", REVIEWS_HELPER)


def make_bodies() -> list[tuple[Body, dict[str, Any], bytes]]:
    """Each body of :data:`MIX` as the AdmissionReview (value and bytes) it sends."""
    reviews = reviews_module()
    made = []
    for item in MIX:
        sent = reviews.review(reviews.fixture(item.fixture), namespace=item.namespace)
        made.append((item, sent, reviews.body(sent)))
    return made


# --- the server --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hook:
    """A running ``docket serve`` with its admission webhook."""

    address: str  # host:port of the webhook
    pgid: int
    ca_file: Path

    @property
    def port(self) -> int:
        """The webhook's port."""
        return int(self.address.rsplit(":", 1)[1])


@contextmanager
def docket_webhook(state: Path, *, workers: int) -> Iterator[Hook]:
    """Start ``docket serve`` with the webhook on free ports; yield it; stop it after."""
    admission = f"127.0.0.1:{free_port()}"
    argv = [
        *serve_command(),
        "serve",
        *("--bundle", str(BUNDLE)),
        *("--grpc", f"127.0.0.1:{free_port()}"),
        *("--metrics", f"127.0.0.1:{free_port()}"),
        *("--admission", admission),
        *("--data-dir", str(state)),
        *("--workers", str(workers)),
    ]
    print(f"  server: {' '.join(argv)}", flush=True)
    server = Server(argv, cwd=ROOT, name="docket serve")
    try:
        line = server.wait_for(r"admission webhook on", READY_TIMEOUT_S)
        print(f"  {line.strip()}", flush=True)
        server.wait_for_port(admission, READY_TIMEOUT_S)
        bundle = subprocess.run(
            [*serve_command(), "ca", "bundle", "--data-dir", str(state)],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        ca_file = state.parent / f"ca-bundle-{workers}.pem"
        ca_file.write_bytes(bundle)
        yield Hook(admission, server.proc.pid, ca_file)
    finally:
        code = server.stop()
        print(f"  server stopped (exit {code})", flush=True)


def verify(hook: Hook, bodies: list[tuple[Body, dict[str, Any], bytes]]) -> list[int]:
    """Send each body once over HTTPS, verifying the certificate against Docket's CA bundle,
    and check the answer; return each answer's body size in bytes (what h2load's DATA bytes
    are checked against). Raises RuntimeError on a wrong answer."""
    context = ssl.create_default_context(cafile=str(hook.ca_file))
    host, port = hook.address.rsplit(":", 1)
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
    sizes = []
    try:
        for item, sent, data in bodies:
            connection.request(
                "POST", f"/{item.webhook}", body=data, headers={"Content-Type": "application/json"}
            )
            reply = connection.getresponse()
            raw = reply.read()
            if reply.status != 200:
                raise RuntimeError(f"{item.label}: HTTP {reply.status}: {raw[:300]!r}")
            check_answer(item, sent, json.loads(raw))
            sizes.append(len(raw))
    finally:
        connection.close()
    return sizes


def check_answer(item: Body, sent: dict[str, Any], answer: dict[str, Any]) -> None:
    """An AdmissionReview v1 response to ``sent`` with the outcome ``item`` expects."""
    reviews = sys.modules["docket_bench_reviews"]
    response = answer.get("response") or {}
    problems = []
    if (answer.get("apiVersion"), answer.get("kind")) != ("admission.k8s.io/v1", "AdmissionReview"):
        problems.append(
            f"not an AdmissionReview v1: {answer.get('apiVersion')} {answer.get('kind')}"
        )
    if response.get("uid") != sent["request"]["uid"]:
        problems.append(f"uid {response.get('uid')!r}, sent {sent['request']['uid']!r}")
    if item.expect == "deny":
        if (
            response.get("allowed") is not False
            or (response.get("status") or {}).get("code") != 403
        ):
            problems.append(f"expected a denial with code 403: {response}")
    elif response.get("allowed") is not True:
        problems.append(f"expected allowed: {response}")
    if item.expect == "patch":
        operations = reviews.patch_of(answer)
        if not operations:
            problems.append("no JSONPatch")
        else:
            try:
                jsonpatch.apply_patch(sent["request"]["object"], operations)
            except jsonpatch.JsonPatchException as exc:
                problems.append(f"the JSONPatch does not apply: {exc}")
    if problems:
        raise RuntimeError(f"{item.label}: {'; '.join(problems)}")


# --- the runs ----------------------------------------------------------------------------


@dataclass(slots=True)
class Runner:
    """Runs h2load against one server and keeps what each run's checks found."""

    hook: Hook
    tmp: Path
    warm_up: float
    warnings: list[str] = field(default_factory=list)
    split: dict[str, list[int] | None] = field(default_factory=dict)

    def measure(
        self, label: str, streams: list[Stream], sizes: list[int], seconds: float
    ) -> LoadResult:
        """One h2load run over HTTP/1.1 + TLS, checked: every answer HTTP 200 and exactly
        the size of the verified answer (a review the audit log could not take is answered
        200 too, as a denial with another message and size)."""
        result = run_h2load(
            f"https://{self.hook.address}",
            streams,
            duration_s=seconds,
            warm_up_s=self.warm_up,
            response_sizes=sizes,
            workdir=self.tmp,
            probe=lambda: connections_per_process(self.hook.port, self.hook.pgid),
            server_pgid=self.hook.pgid,
            http1=True,
        )
        self.split[label] = result.probe if isinstance(result.probe, list) else None
        found = []
        if result.failed:
            found.append(f"{label}: {result.failed:,} requests were not answered HTTP 200")
        # Responses in flight when h2load stops may be in one count and not the other.
        slack = result.connections * max(sizes)
        if abs(result.data_bytes - result.expected_bytes) > slack:
            found.append(
                f"{label}: answers carried {result.data_bytes:,} body bytes, "
                f"{result.expected_bytes:,} expected: some answers differ from the verified ones"
            )
        for warning in found:
            print(f"  WARNING: {warning}", flush=True)
        self.warnings += found
        return result


def review_streams(
    bodies: list[tuple[Body, dict[str, Any], bytes]], rps: int | None
) -> list[Stream]:
    """One h2load process per body of the mix, one request in flight per connection."""
    return [
        Stream(data, item.connections, rps=rps, headers=JSON_HEADERS, path=f"/{item.webhook}")
        for item, _, data in bodies
    ]


def in_process(
    tmp: Path, bodies: list[tuple[Body, dict[str, Any], bytes]]
) -> list[tuple[str, Any]]:
    """``AdmissionController.review`` of each body without HTTP, one thread, a durable
    SQLite audit log as the server has: each call timed on its own."""
    configure_logging("json", "warning")  # the server logs decisions at debug: not printed
    engine = Engine(PolicyBundle.load(BUNDLE))
    data = tmp / "in-process"
    data.mkdir()
    log = AuditLog.open(f"sqlite:///{data / 'docket.db'}", keys=data / "keys").start()
    try:
        service = DecisionService(engine, BundleWatcher(engine, BUNDLE), Metrics(), log)
        controller = AdmissionController(service, trust_domain="docket.local")
        rows = []
        for item, sent, raw in bodies:
            for _ in range(20):
                status, answer = controller.review(item.webhook, raw)
                assert status == 200
                check_answer(item, sent, answer)
            samples = []
            for _ in range(IN_PROCESS_CALLS):
                started = time.perf_counter_ns()
                controller.review(item.webhook, raw)
                samples.append(time.perf_counter_ns() - started)
            rows.append((item.label, summarize(samples)))
        return rows
    finally:
        log.close()


def run(*, quick: bool = False) -> dict[str, Any]:
    """Run the benchmark, print its tables, return its figures."""
    version = h2load_version()
    if version is None:
        reason = "h2load not found: install it with `apt-get install nghttp2-client`"
        print(f"SKIPPED: {reason}")
        return {"skipped": reason}
    times = QUICK if quick else FULL
    bodies = make_bodies()
    connections = sum(item.connections for item in MIX)
    per_connection = RATE // connections
    offered = per_connection * connections
    results: dict[str, LoadResult] = {}
    labels: dict[str, str] = {}
    splits: dict[str, list[int] | None] = {}
    warnings: list[str] = []
    with workdir("docket-bench-admission-") as tmp:
        with docket_webhook(tmp / "data-2", workers=2) as hook:
            runner = Runner(hook, tmp, times.warm_up)
            sizes = verify(hook, bodies)
            print(
                f"  verified over HTTPS (certificate checked against `docket ca bundle`): "
                f"{', '.join(item.label for item in MIX)}: uid echoed, allowed / denied 403 / "
                "JSONPatch applies"
            )
            labels["load"] = "mix, closed loop, 2 workers"
            results["load"] = runner.measure(
                labels["load"], review_streams(bodies, None), sizes, times.load
            )
            labels["rate"] = f"mix at {offered:,}/s offered, 2 workers"
            results["rate"] = runner.measure(
                labels["rate"], review_streams(bodies, per_connection), sizes, times.rate
            )
            labels["healthz"] = f"GET /healthz, {connections} connections, 2 workers"
            results["healthz"] = runner.measure(
                labels["healthz"],
                [Stream(None, connections, headers=(), path="/healthz")],
                [len(b"ok\n")],
                times.healthz,
            )
            labels["healthz1"] = "GET /healthz, 1 connection, 2 workers"
            results["healthz1"] = runner.measure(
                labels["healthz1"],
                [Stream(None, 1, headers=(), path="/healthz")],
                [len(b"ok\n")],
                times.healthz,
            )
            verify(hook, bodies)
            print("  verified again after the load")
            splits.update(runner.split)
            warnings += runner.warnings
        with docket_webhook(tmp / "data-1", workers=1) as hook:
            runner = Runner(hook, tmp, times.warm_up)
            sizes = verify(hook, bodies)
            labels["workers1"] = "mix, closed loop, 1 worker"
            results["workers1"] = runner.measure(
                labels["workers1"], review_streams(bodies, None), sizes, times.workers1
            )
            verify(hook, bodies)
            print("  verified (before and after the load)")
            splits.update(runner.split)
            warnings += runner.warnings
        inline = in_process(tmp, bodies)

    headers = (
        *("run", "conns", "per worker", "reviews/s", "p50 ms", "p90 ms", "p99 ms"),
        *("max ms", "not 200", "cores srv/h2load/other"),
    )
    rows = [
        (
            labels[key],
            result.connections,
            "?"
            if splits.get(labels[key]) is None
            else "/".join(map(str, splits[labels[key]] or [])),
            round(result.per_second),
            f"{result.p50_ms:.2f}",
            f"{result.p90_ms:.2f}",
            f"{result.p99_ms:.2f}",
            f"{result.max_ms:.2f}",
            result.failed,
            cores(result),
        )
        for key, result in results.items()
    ]
    print(table(headers, rows))
    by_path = table(
        ("body", "conns", *(f"reviews/s {key}" for key in ("load", "rate", "workers1"))),
        [
            (item.label, item.connections,
             *(round(results[key].stream_ok[index] / results[key].seconds)
               for key in ("load", "rate", "workers1")))
            for index, item in enumerate(MIX)
        ],
    )  # fmt: skip
    print(by_path)
    print(
        f"tool: {version}, HTTP/1.1 over TLS (--h1, keep-alive), one request in flight per "
        f"connection; the load generator runs on the same machine; one h2load process per "
        f"body; {times.warm_up:g} s warm-up, then {times.load:g}/{times.rate:g}/"
        f"{times.healthz:g}/{times.workers1:g} s measured (mix/rate/healthz/1 worker); fixed "
        f"rate: --rps {per_connection} per connection; latencies from h2load's per-request "
        "log; 'not 200': requests h2load logged with another status; 'cores': average cores "
        "busy during the run (server processes / h2load / everything else)"
    )
    print(table(
        ("AdmissionController.review, in-process, 1 thread", "p50 ms", "p99 ms", "mean ms",
         "reviews/s"),
        [(label, f"{s.p50_us / 1000:.2f}", f"{s.p99_us / 1000:.2f}", f"{s.mean_us / 1000:.2f}",
          round(1e6 / s.mean_us)) for label, s in inline],
    ))  # fmt: skip
    print(
        f"in-process: {IN_PROCESS_CALLS} calls per body after 20 untimed, each audited "
        "(SQLite, WAL, synchronous=FULL) before it returns, as in the server"
    )
    load, rated = results["load"], results["rate"]
    sustained = rated.per_second >= 0.98 * offered
    rate_note = "" if sustained else f", only {rated.per_second:,.0f}/s answered"
    targets = [
        ("AdmissionReviews", load.per_second >= TARGET_PER_S, f"≥ {TARGET_PER_S:,}/s",
         f"{load.per_second:,.0f}/s, 2 workers"),
        (f"p99 at {offered:,}/s", sustained and rated.p99_ms <= TARGET_P99_MS,
         f"≤ {TARGET_P99_MS:g} ms", f"{rated.p99_ms:.2f} ms{rate_note}"),
    ]  # fmt: skip
    for name, met, target, got in targets:
        print(f"target: {name} {target} — {'MET' if met else 'NOT MET'} ({got})")
    killed = {labels[key]: r.unfinished for key, r in results.items() if r.unfinished}
    if killed:
        print(f"h2load processes killed after their time (nghttp2 #2250; counted from their "
              f"logs, DATA bytes unchecked): {killed}")  # fmt: skip
    for warning in warnings:
        print(f"WARNING: {warning}")
    return {
        "tool": version,
        "runs": {
            key: {
                **result.figures(),
                "per_stream_ok": list(result.stream_ok),
                "connections_per_worker": splits.get(labels[key]),
            }
            for key, result in results.items()
        },
        "rate_offered_per_second": offered,
        "in_process_ms": {
            label: {"p50": s.p50_us / 1000, "p99": s.p99_us / 1000, "mean": s.mean_us / 1000}
            for label, s in inline
        },
        "targets": {name: met for name, met, _, _ in targets},
        "warnings": warnings,
    }
