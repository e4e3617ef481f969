"""Every serving target of issue 15 in one run, side by side: a trivial grpcio server,
the previous Docket, this Docket and Cerbos, all up together, the load alternating
between them in rounds so that other load on the machine falls on all of them alike.

* **trivial grpcio**: a ``grpc.aio`` server in a process of its own
  (``python -m benchmarks.bench_serving trivial ADDRESS PAIRS``) that answers Authorize
  with the response bytes this Docket gave for the same body (a lookup by request
  bytes), nothing else: what gRPC itself costs in Python.
* **previous Docket**: ``$DOCKET_BENCH_PREVIOUS`` (default 13d259c, the commit before
  issue 15's work), exported as ``compare`` exports its base and run with this
  virtualenv (:func:`benchmarks.bench_compare.tree_command`), ``--workers 2``, a data
  directory of its own.
* **Docket**: this tree, ``--workers 2``, the durable audit log (the default).
* **Cerbos** with its audit log on (asynchronous, never fsynced), as ``cerbos`` runs it;
  the 40 cases of its agreement table must be decided alike before anything is timed.

Each Docket and the trivial server are sent ``grpc``'s Authorize mix (8 bodies, the
attested one with a device token from that server's CA; every answer checked first),
Cerbos the same 8 decisions as CheckResources of one resource. Per round and server:
16 connections with one call each, and 256 calls in flight (16 streams on each);
then BatchAuthorize against CheckResources with 10 and 100 resources per call (the
batches of ``cerbos``). Then each Docket at a fixed rate, half its median throughput at
256 in flight (open loop), once a round, for its p99 (the median of the rounds').
Figures: calls/s, server CPU µs per call (the CPU time of the server's process group
across the measured run over the calls answered), entries per commit (Docket's
``docket_audit_entries_per_commit``), p50/p99.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

from attestation._ca import CertificateAuthority
from benchmarks import _load, bench_cerbos
from benchmarks._common import H2LOAD_MISSING, skipped, table
from benchmarks._load import LoadResult, Stream
from benchmarks.bench_compare import export_base, tree_command
from benchmarks.bench_grpc import (
    AUTHORIZE,
    BATCH,
    CONNECTIONS_PER_BODY,
    DEEP_STREAMS,
    FULL,
    RATE_STREAMS,
    READY_TIMEOUT_S,
    ROOT,
    Case,
    Docket,
    Durations,
    Runner,
    bundle_cases,
    cores,
    docket_server,
    mix,
    verify_authorize,
)

PREVIOUS_ENV = "DOCKET_BENCH_PREVIOUS"
DEFAULT_PREVIOUS = "13d259c"
TRIVIAL = "trivial grpcio"
PREVIOUS = "previous Docket"
DOCKET = "Docket"
CERBOS = f"Cerbos {bench_cerbos.CERBOS_VERSION}"
SERVERS = (TRIVIAL, PREVIOUS, DOCKET, CERBOS)
SHALLOW = "16 x 1"
DEEP = f"{CONNECTIONS_PER_BODY * 8 * DEEP_STREAMS} in flight"

TARGET_VS_PREVIOUS = 2.5
TARGET_VS_CERBOS = 0.5
TARGET_P99_MS = 10.0
TARGET_CPU_VS_TRIVIAL = 2.5
TARGET_ENTRIES_PER_COMMIT = 8.0
SUSTAINED = 0.98  # of the offered rate answered, for a p99 to count
Batches = Callable[[], list[bench_cerbos.Batch]]  # the batch bodies, with a fresh token


# Seconds of each run (h2load takes whole seconds): the rounds' runs (authorize and
# batch), the warm-up before each, the fixed-rate runs (rate).
FULL_TIMES = Durations(warm_up=2, authorize=8, batch=8, rate=10, check=0)
QUICK_TIMES = Durations(warm_up=1, authorize=3, batch=3, rate=4, check=0)
ROUNDS, QUICK_ROUNDS = 3, 1
RESTARTS = 2
"""How many times a run starts the previous build again after its log refused."""


# --- the pure parts: figures, medians, targets ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured run of one load on one server (``round`` 0: a median over rounds)."""

    server: str
    load: str
    round: int
    calls_per_s: float
    decisions_per_call: int
    cpu_us: float | None  # server CPU µs per call
    per_commit: float | None  # audit entries per commit (Docket)
    p50_ms: float
    p99_ms: float
    answered: bool = True  # no call failed (HTTP, or a gRPC error: message bytes missing)


def cpu_us_per_call(cpu_seconds: float | None, calls: int) -> float | None:
    """Server CPU µs per call: its process group's CPU time across the run over the calls
    answered; None when the CPU time could not be read or nothing was answered."""
    if cpu_seconds is None or calls <= 0:
        return None
    return cpu_seconds * 1e6 / calls


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known and len(known) == len(values) else None


def medians(samples: Sequence[Sample]) -> list[Sample]:
    """One sample per (server, load), in order of first appearance: each figure the median
    over the rounds, None when a round lacks it."""
    groups: dict[tuple[str, str], list[Sample]] = {}
    for each in samples:
        groups.setdefault((each.server, each.load), []).append(each)
    return [
        Sample(
            server,
            load,
            0,
            statistics.median(s.calls_per_s for s in group),
            group[0].decisions_per_call,
            _median([s.cpu_us for s in group]),
            _median([s.per_commit for s in group]),
            statistics.median(s.p50_ms for s in group),
            statistics.median(s.p99_ms for s in group),
            all(s.answered for s in group),
        )
        for (server, load), group in groups.items()
    ]


def answered(result: LoadResult) -> bool:
    """The run's calls were answered: no more than 1 % failed at the HTTP level, and at
    least 99 % of the message bytes came (a gRPC error carries none)."""
    return result.failed <= 0.01 * result.measured_ok and result.data_ratio >= 0.99


def figure_of(
    figures: Sequence[Sample], server: str, load: str, value: Callable[[Sample], float | None]
) -> tuple[float | None, str]:
    """A median figure of ``server`` under ``load``, or None and why there is none (calls
    failed in one of its rounds: a figure of errors, not of answers)."""
    found = next((s for s in figures if (s.server, s.load) == (server, load)), None)
    if found is None or value(found) is None:
        return None, f"no figure for {server}"
    if not found.answered:
        return None, f"calls failed in a round of {server}"
    return value(found), ""


def samples_table(samples: Sequence[Sample], *, skipped: dict[str, str]) -> str:
    """The samples as a table (round ``median`` for medians), and a row per skipped server."""
    headers = (
        *("server", "load", "round", "calls/s", "decisions/s", "srv CPU µs/call"),
        *("entries/commit", "p50 ms", "p99 ms", "all OK"),
    )
    rows: list[tuple[object, ...]] = [
        (
            s.server,
            s.load,
            s.round or "median",
            round(s.calls_per_s),
            round(s.calls_per_s * s.decisions_per_call),
            "?" if s.cpu_us is None else round(s.cpu_us),
            "n/a" if s.per_commit is None else f"{s.per_commit:.1f}",
            f"{s.p50_ms:.2f}",
            f"{s.p99_ms:.2f}",
            "yes" if s.answered else "NO",
        )
        for s in samples
    ]
    rows += [(name, "SKIPPED", *["-"] * 8) for name in skipped]
    return table(headers, rows)


@dataclass(frozen=True, slots=True)
class Target:
    """One target of the issue: what it asks, the verdict and the figure behind it."""

    name: str
    goal: str
    verdict: str  # MET, NOT MET, NOT JUDGED
    figure: str


def round_ratios(
    samples: Sequence[Sample],
    load: str,
    mine: str,
    theirs: str,
    value: Callable[[Sample], float | None],
) -> list[float]:
    """``mine``'s figure over ``theirs`` under ``load`` in each round that has both, from
    calls all answered (the loads take turns within a round, so the two of a round share
    their minutes on the machine)."""
    rounds: dict[int, dict[str, float]] = {}
    for each in samples:
        if each.load != load or each.server not in (mine, theirs) or not each.answered:
            continue
        figure = value(each)
        if figure is not None:
            rounds.setdefault(each.round, {})[each.server] = figure
    return [
        pair[mine] / pair[theirs]
        for _, pair in sorted(rounds.items())
        if mine in pair and theirs in pair and pair[theirs]
    ]


def ratio_target(
    name: str,
    factor: float,
    mine: tuple[str, float | None],
    theirs: tuple[str, float | None],
    unit: str,
    *,
    cost: bool = False,
    unjudged: str = "",
    rounds: Sequence[float] = (),
) -> Target:
    """``mine`` ≥ ``factor`` times ``theirs``, a figure of the same run (with ``cost``: ≤,
    lower is better). Not judged without both figures; ``unjudged`` says why. The verdict
    is the medians'; with two or more ``rounds`` (:func:`round_ratios`) the figure also
    shows the ratio of each round and in how many of them the target was met."""
    goal = f"{'≤' if cost else '≥'} {factor:g}x {theirs[0]}"
    if mine[1] is None or theirs[1] is None:
        return Target(name, goal, "NOT JUDGED", unjudged or "a figure is missing")

    def meets(ratio: float) -> bool:
        return ratio <= factor if cost else ratio >= factor

    ratio = mine[1] / theirs[1]
    figure = f"{mine[0]} {mine[1]:,.0f}{unit}, {theirs[0]} {theirs[1]:,.0f}{unit}: {ratio:.2f}x"
    figure += by_round([f"{r:.2f}x" for r in rounds], [meets(r) for r in rounds])
    return Target(name, goal, "MET" if meets(ratio) else "NOT MET", figure)


def by_round(figures: Sequence[str], met: Sequence[bool], unit: str = "") -> str:
    """``; by round A, B, C<unit>: met in N of 3`` for two or more rounds, else nothing:
    each round's figure beside a verdict that is the medians'."""
    if len(figures) < 2:
        return ""
    return f"; by round {', '.join(figures)}{unit}: met in {sum(met)} of {len(figures)}"


def latency_target(*, offered: int, runs: Sequence[tuple[float, float]]) -> Target:
    """p99 ≤ 10 ms at the offered rate: the median over the rounds of each run's p99, met
    only if the median rate answered was sustained. With several rounds, each round's
    p99 and in how many rounds it was met are printed too; the verdict is the medians'.
    ``runs``: (p99 ms, calls answered a second), one a round."""
    p99_ms = statistics.median(p99 for p99, _ in runs)
    answered = statistics.median(rate for _, rate in runs)

    def meets(p99: float, rate: float) -> bool:
        return rate >= SUSTAINED * offered and p99 <= TARGET_P99_MS

    figure = f"p99 {p99_ms:.2f} ms at {answered:,.0f}/s of {offered:,}/s offered" + (
        "" if answered >= SUSTAINED * offered else f": rate not sustained (< {SUSTAINED:.0%})"
    )
    figure += by_round([f"{p99:.2f}" for p99, _ in runs], [meets(*run) for run in runs], " ms")
    return Target(
        "Docket p99 at half its throughput",
        f"≤ {TARGET_P99_MS:g} ms",
        "MET" if meets(p99_ms, answered) else "NOT MET",
        figure,
    )


def rate_target(offered: int, results: Sequence[LoadResult]) -> Target:
    """:func:`latency_target` of a Docket's fixed-rate runs; not judged when calls failed
    in any of them."""
    target = latency_target(offered=offered, runs=[(r.p99_ms, r.per_second) for r in results])
    if not all(answered(result) for result in results):
        return replace(target, verdict="NOT JUDGED", figure="calls failed during a run")
    return target


def entries_target(per_commit: float | None, unjudged: str = "") -> Target:
    """≥ 8 audit entries per commit (one fsync) at 256 calls in flight."""
    name, goal = f"entries per commit at {DEEP}", f"≥ {TARGET_ENTRIES_PER_COMMIT:g}"
    if per_commit is None:
        why = unjudged or "no docket_audit_entries_per_commit figure"
        return Target(name, goal, "NOT JUDGED", why)
    met = per_commit >= TARGET_ENTRIES_PER_COMMIT
    return Target(name, goal, "MET" if met else "NOT MET", f"{per_commit:.1f}")


def target_line(target: Target) -> str:
    """``target: NAME GOAL — VERDICT (FIGURE)``."""
    return f"target: {target.name} {target.goal} — {target.verdict} ({target.figure})"


# --- the trivial grpcio server ------------------------------------------------------------


def trivial_main(address: str, pairs_file: Path) -> None:
    """Serve Authorize on ``address``: the response bytes recorded for each request's
    bytes (``pairs_file``: JSON, hex request → hex response), nothing else."""
    pairs = {
        bytes.fromhex(request): bytes.fromhex(response)
        for request, response in json.loads(pairs_file.read_text()).items()
    }

    async def authorize(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return pairs[request]

    async def serve() -> None:
        server = grpc.aio.server()
        service, method = AUTHORIZE.strip("/").split("/")
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
            authorize
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {method: handler}),)
        )
        server.add_insecure_port(address)
        await server.start()
        print(f"trivial grpcio listening on {address}", flush=True)
        await server.wait_for_termination()

    asyncio.run(serve())


@contextmanager
def trivial_server(pairs: dict[bytes, bytes], tmp: Path) -> Iterator[tuple[str, int]]:
    """Start the trivial server; yield its address and process group; stop it after."""
    pairs_file = tmp / "trivial-pairs.json"
    pairs_file.write_text(json.dumps({k.hex(): v.hex() for k, v in pairs.items()}))
    address = f"127.0.0.1:{_load.free_port()}"
    argv = [sys.executable, "-m", "benchmarks.bench_serving", "trivial", address, str(pairs_file)]
    server = _load.Server(argv, cwd=ROOT, name=TRIVIAL)
    try:
        server.wait_for(r"listening", READY_TIMEOUT_S)
        yield address, server.proc.pid
    finally:
        server.stop()


# --- the servers, verified ------------------------------------------------------------------


@dataclass(slots=True)
class Peer:
    """A server under load: where to send what, and what each body's answer weighs."""

    name: str
    address: str
    pgid: int
    path: str
    bodies: list[bytes]
    sizes: list[int]
    runner: Runner | None = None  # a Docket: its per-run checks and metrics
    renew: Callable[[], None] | None = None  # a Docket: mint its device token again


@dataclass(slots=True)
class Bench:
    """The servers of one run, what was skipped and why, and what was measured."""

    times: Durations
    rounds: int
    tmp: Path
    up: dict[str, Peer] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # How to start a server again on a fresh data directory (the previous build), and
    # how many times that was done in this run.
    restart: dict[str, Callable[[], Peer]] = field(default_factory=dict)
    restarts: int = 0

    def restart_or_leave(self, name: str, why: str) -> bool:
        """``name`` failed (``why``): start it again on a fresh data directory when it
        can be (the previous build, at most :data:`RESTARTS` times a run) and say True;
        else leave it out of the rest of the run and say False. Either way with a
        warning, and its run's warnings kept."""
        old = self.up[name]
        self.warnings += old.runner.warnings if old.runner else []
        start = self.restart.get(name)
        if start is not None and self.restarts < RESTARTS:
            self.restarts += 1
            try:
                self.up[name] = start()
            except (RuntimeError, OSError) as exc:
                why += f"; could not be started again ({str(exc).splitlines()[0]})"
            else:
                self._warn(
                    f"{name} {why}; started again on a fresh data directory "
                    f"(restart {self.restarts} of at most {RESTARTS} a run)"
                )
                return True
        del self.up[name]
        self._warn(f"{name} {why}; left out of the rest of the run")
        return False

    def _warn(self, warning: str) -> None:
        print(f"  WARNING: {warning}", flush=True)
        self.warnings.append(warning)

    def measure(
        self,
        server: Peer,
        load: str,
        round_: int,
        streams: list[Stream],
        sizes: list[int],
        per_call: int = 1,
        path: str = "",
        seconds: float | None = None,
    ) -> LoadResult:
        """A warm-up run (figures discarded), then the measured one with the server's
        process-group CPU time read on both sides of it."""
        url = f"http://{server.address}{path or server.path}"
        if self.times.warm_up:
            _load.run_h2load(
                url,
                streams,
                duration_s=self.times.warm_up,
                warm_up_s=0,
                response_sizes=sizes,
                workdir=self.tmp,
            )
        before = _load.CpuSnapshot.take(server.pgid)
        label = f"{server.name}, {load}, round {round_}"
        if server.runner is not None:
            result = server.runner.measure(
                label, path or server.path, streams, sizes, seconds or self.times.authorize
            )
        else:
            result = _load.run_h2load(
                url,
                streams,
                duration_s=seconds or self.times.authorize,
                warm_up_s=0,
                response_sizes=sizes,
                workdir=self.tmp,
                server_pgid=server.pgid,
            )
            if not answered(result):
                self._warn(
                    f"{label}: {result.failed} failed, {result.data_ratio:.1%} of the "
                    "expected message bytes: some calls ended in an error"
                )
        after = _load.CpuSnapshot.take(server.pgid)
        cpu = None if after.group is None or before.group is None else after.group - before.group
        self.samples.append(
            Sample(
                server.name,
                load,
                round_,
                result.per_second,
                per_call,
                cpu_us_per_call(cpu, result.measured_ok),
                None if server.runner is None else server.runner.per_commit[label],
                result.p50_ms,
                result.p99_ms,
                answered(result),
            )
        )
        print(f"  {label}: {result.per_second:,.0f} calls/s, cores {cores(result)}", flush=True)
        return result


def docket_peer(name: str, server: Docket, data: Path, cases: list[Case], tmp: Path) -> Peer:
    """A running ``docket serve`` with its data directory ``data``, checked: every body of
    the mix (the attested one with a device token from its own CA) answers OK with the
    decision its case expects. A device token lives 5 minutes (``MAX_JWT_TTL``), less than
    a full run: :attr:`Peer.renew` mints the bodies again, and checks them again."""
    ca = CertificateAuthority.load(data / "ca")
    runner = Runner(server, tmp, replace(FULL, warm_up=0))  # warm-ups: Bench.measure's
    peer = Peer(name, server.grpc, server.pgid, AUTHORIZE, [], [], runner)

    def renew() -> None:
        sent = [bench_cerbos.on_the_wire(case, ca) for case in cases]
        peer.sizes = [verify_authorize(server.grpc, case) for case in sent]
        peer.bodies = [case.message.SerializeToString() for case in sent]

    renew()
    peer.renew = renew
    print(f"  verified: {name} answers the {len(cases)} mix bodies OK as their cases expect")
    return peer


def start_trivial(bench: Bench, stack: ExitStack) -> None:
    """The trivial server, answering each of this Docket's bodies with the bytes this
    Docket answered; checked to do so."""
    docket = bench.up[DOCKET]
    pairs = {body: _load.call(docket.address, AUTHORIZE, body).message for body in docket.bodies}
    address, pgid = stack.enter_context(trivial_server(pairs, bench.tmp))
    for body, reply in pairs.items():
        answer = _load.call(address, AUTHORIZE, body)
        if answer.code != grpc.StatusCode.OK or answer.message != reply:
            raise RuntimeError(f"{TRIVIAL}: {answer.code.name}, not Docket's answer")
    print(f"  verified: {TRIVIAL} on {address} answers every mix body with Docket's bytes")
    bench.up[TRIVIAL] = Peer(TRIVIAL, address, pgid, AUTHORIZE, list(docket.bodies), docket.sizes)


def start_previous(bench: Bench, stack: ExitStack, cases: list[Case]) -> str:
    """The previous build, or a reason in ``bench.skipped``; its revision's sha."""
    revision = os.environ.get(PREVIOUS_ENV, DEFAULT_PREVIOUS)
    try:
        sha, tree = export_base(revision)
        print(f"  {PREVIOUS}: {revision} = {sha[:12]} ({tree.relative_to(ROOT)})")
        running = ExitStack()
        stack.callback(running.close)
        started = 0

        def start() -> Peer:
            # The server before (if any) is stopped first: its ports and CPU are freed.
            nonlocal started
            running.close()
            started += 1
            data = bench.tmp / ("previous" if started == 1 else f"previous-{started}")
            with ExitStack() as attempt:
                server = attempt.enter_context(docket_server(data, command=tree_command(tree)))
                peer = docket_peer(PREVIOUS, server, data, cases, bench.tmp)
                running.enter_context(attempt.pop_all())
            return peer

        bench.up[PREVIOUS] = start()
        bench.restart[PREVIOUS] = start
        return sha
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        bench.skipped[PREVIOUS] = f"{revision}: {str(exc).splitlines()[0]}"
        print(f"  {PREVIOUS}: SKIPPED ({bench.skipped[PREVIOUS]})")
        return revision


def start_cerbos(bench: Bench, stack: ExitStack, cases: list[Case]) -> Batches:
    """Cerbos, once it decides the 40 cases of its agreement table as Docket does, with
    the mix as CheckResources of one resource; and what makes the batches (a fresh
    device token), checked on both, each time it is called."""
    binary, reason = bench_cerbos.cerbos_binary()
    if binary is None:
        bench.skipped[CERBOS] = reason
        print(f"  {CERBOS}: SKIPPED ({reason})")
        return list
    docket = bench.up[DOCKET]
    ca = CertificateAuthority.load(bench.tmp / "docket" / "ca")
    requests = {name: request for name, request, _ in bench_cerbos.data_cases()}
    try:
        with ExitStack() as attempt:
            address, pgid = attempt.enter_context(
                bench_cerbos.cerbos_server(binary, bench.tmp / "cerbos-audit")
            )
            rows = bench_cerbos.agreement(docket.address, address, ca)
            print(bench_cerbos.agreement_table(rows))
            bench_cerbos.require_agreement(rows)
            print(f"  verified: Docket and Cerbos decide all {len(rows)} Data cases alike")
            bodies = [bench_cerbos.single_check(requests[case.name]) for case in cases]
            sizes = []
            for body in bodies:
                answer = _load.call(address, bench_cerbos.CHECK_RESOURCES, body)
                if answer.code != grpc.StatusCode.OK:
                    raise RuntimeError(f"CheckResources: {answer.code.name}: {answer.details}")
                sizes.append(len(_load.frame(answer.message)))
            main = next(case for case in bundle_cases() if case.name == bench_cerbos.CASE)

            def batches() -> list[bench_cerbos.Batch]:
                on_wire = bench_cerbos.on_the_wire(main, ca)
                return [
                    bench_cerbos.batch(docket.address, address, on_wire, requests[main.name], n)
                    for n in bench_cerbos.BATCH_SIZES
                ]

            batches()
            print(
                f"  verified: BatchAuthorize and CheckResources x"
                f"{' and x'.join(map(str, bench_cerbos.BATCH_SIZES))} agree on every resource"
            )
            stack.enter_context(attempt.pop_all())
    except RuntimeError as exc:
        bench.skipped[CERBOS] = str(exc).splitlines()[0]
        print(f"  {CERBOS}: SKIPPED ({bench.skipped[CERBOS]})")
        return list
    bench.up[CERBOS] = Peer(CERBOS, address, pgid, bench_cerbos.CHECK_RESOURCES, bodies, sizes)
    return batches


def rounds(bench: Bench, batches: Batches) -> None:
    """The alternating rounds: each load on every server in turn, the order rotated every
    round; then the batches on Docket and Cerbos. Each round starts with fresh device
    tokens, checked."""
    names = [name for name in SERVERS if name in bench.up]
    for number in range(1, bench.rounds + 1):
        renew(bench)
        shift = (number - 1) % len(names)
        order = names[shift:] + names[:shift]
        for load, depth in ((SHALLOW, 1), (DEEP, DEEP_STREAMS)):
            for name in (n for n in order if n in bench.up):
                measure_mix(bench, name, load, number, depth)
        for each in batches():
            for name in (n for n in order if n in (DOCKET, CERBOS)):
                docket = name == DOCKET
                bench.measure(
                    bench.up[name],
                    f"x{each.size}",
                    number,
                    [
                        Stream(
                            each.docket if docket else each.cerbos, bench_cerbos.BATCH_CONNECTIONS
                        )
                    ],
                    [each.docket_reply if docket else each.cerbos_reply],
                    per_call=each.size,
                    path=BATCH if docket else "",
                    seconds=bench.times.batch,
                )


def measure_mix(bench: Bench, name: str, load: str, number: int, depth: int) -> LoadResult:
    """The mix at ``depth`` streams a connection on server ``name``. When calls failed on
    the previous build (whose log can refuse for good: its false truncation alarm, fixed
    since, see benchmarks/README.md), it is started again and the load measured again,
    the failed run's figures dropped and its warnings kept; or, past the restarts a run
    allows, it is left out of the rest of the run. The last run's result."""
    for attempt in range(2):
        peer = bench.up[name]
        streams = [Stream(body, CONNECTIONS_PER_BODY, streams=depth) for body in peer.bodies]
        result = bench.measure(peer, load, number, streams, peer.sizes)
        if bench.samples[-1].answered or name != PREVIOUS or attempt:
            break
        if not bench.restart_or_leave(name, f"had calls fail at {load}, round {number}"):
            break
        bench.samples.pop()
    return result


def renew(bench: Bench) -> None:
    """Every Docket's bodies with a fresh device token, checked again. The previous
    build, when it no longer answers them OK, is started again on a fresh data directory
    or, past the restarts a run allows, left out of the rest of the run, with a warning
    (its rounds so far stay; a past release's failure is a figure of the run, not the end
    of it); any other Docket's failure ends the run."""
    for name, peer in list(bench.up.items()):
        if peer.renew is None:
            continue
        try:
            peer.renew()
        except RuntimeError as exc:
            if name != PREVIOUS:
                raise
            bench.restart_or_leave(name, f"no longer answers the mix OK ({exc})")


Latencies = dict[str, tuple[int, list[LoadResult]]]
"""Each Docket's fixed-rate runs: the rate offered, and the result of each round."""


def latency(bench: Bench, names: Sequence[str] = (DOCKET, PREVIOUS)) -> Latencies:
    """Each Docket (``names``) at half its median throughput at 256 in flight, open loop:
    the same bodies and connections, ``--rps`` per connection, up to 16 streams each; one
    run a round, the servers' order rotated each round, as the other loads are."""
    deep = {s.server: s.calls_per_s for s in medians(bench.samples) if s.load == DEEP}
    names = [name for name in names if name in bench.up and name in deep]
    found: Latencies = {}
    for number in range(1, bench.rounds + 1):
        renew(bench)
        shift = (number - 1) % max(1, len(names))
        for name in names[shift:] + names[:shift]:
            if name not in bench.up:
                continue
            peer = bench.up[name]
            connections = len(peer.bodies) * CONNECTIONS_PER_BODY
            per_connection = max(1, round(deep[name] / 2 / connections))
            offered = per_connection * connections
            streams = [
                Stream(body, CONNECTIONS_PER_BODY, streams=RATE_STREAMS, rps=per_connection)
                for body in peer.bodies
            ]
            result = bench.measure(
                peer, f"{offered:,}/s offered", number, streams, peer.sizes,
                seconds=bench.times.rate,
            )  # fmt: skip
            found.setdefault(name, (offered, []))[1].append(result)
    return found


def run(*, quick: bool = False) -> dict[str, Any]:
    """Start every server, verify them, run the rounds and the latency runs, print the
    tables and the targets; return the figures."""
    version = _load.h2load_version()
    if version is None:
        return skipped(H2LOAD_MISSING)
    times = QUICK_TIMES if quick else FULL_TIMES
    number = QUICK_ROUNDS if quick else ROUNDS
    cases = mix(bundle_cases())
    with _load.workdir("docket-bench-serving-") as tmp, ExitStack() as stack:
        bench = Bench(times, number, tmp)
        docket = stack.enter_context(docket_server(tmp / "docket"))
        bench.up[DOCKET] = docket_peer(DOCKET, docket, tmp / "docket", cases, tmp)
        start_trivial(bench, stack)
        previous = start_previous(bench, stack, cases)
        batches = start_cerbos(bench, stack, cases)
        rounds(bench, batches)
        latencies = latency(bench)
    return report(bench, version, previous, latencies)


def report(bench: Bench, version: str, previous: str, latencies: Latencies) -> dict[str, Any]:
    """Print the tables, the targets and the warnings; the figures as JSON-ready values."""
    absent = {f"{name} ({previous})" if name == PREVIOUS else name: why
               for name, why in bench.skipped.items()}  # fmt: skip
    print(
        f"\nper round ({bench.rounds} round(s) of {bench.times.authorize} s, each after "
        f"a {bench.times.warm_up} s warm-up; fixed-rate runs {bench.times.rate} s):"
    )
    print(samples_table(bench.samples, skipped=absent))
    middle = medians(bench.samples)
    print(f"\nside by side (median over {bench.rounds} round(s)):")
    print(samples_table(middle, skipped=absent))
    for name, why in absent.items():
        print(f"  {name}: SKIPPED — {why}")
    print(
        f"tool: {version}; Authorize: the mix of {len(bench.up[DOCKET].bodies)} bodies, "
        f"{CONNECTIONS_PER_BODY} connections each; '{SHALLOW}': one call in flight per "
        f"connection; '{DEEP}': {DEEP_STREAMS} streams per connection; Cerbos: the same "
        "decisions as CheckResources of one resource; batches: one body per size, "
        f"{bench_cerbos.BATCH_CONNECTIONS} connections, one call each (x10: BatchAuthorize of "
        "10 against CheckResources of 10 resources; decisions/s = calls/s x size); "
        f"'N/s offered': --rps per connection, up to {RATE_STREAMS} streams each; "
        f"{PREVIOUS} = {previous} with --workers 2; {DOCKET} with --workers 2 and its "
        f"durable audit log; {TRIVIAL}: grpc.aio, one process; srv CPU µs/call: the server's "
        "process group's CPU time across the measured run / calls answered"
    )

    def versus(
        name: str,
        factor: float,
        load: str,
        value: Callable[[Sample], float | None],
        other: str,
        unit: str,
        *,
        cost: bool = False,
    ) -> Target:
        mine, why_mine = figure_of(middle, DOCKET, load, value)
        theirs, why_theirs = figure_of(middle, other, load, value)
        if other in bench.skipped:
            why_theirs = f"{other} SKIPPED: {bench.skipped[other]}"
        return ratio_target(
            name,
            factor,
            (DOCKET, mine),
            (other, theirs),
            unit,
            cost=cost,
            unjudged=why_theirs or why_mine,
            rounds=round_ratios(bench.samples, load, DOCKET, other, value),
        )

    def calls(s: Sample) -> float:
        return s.calls_per_s

    def decisions(s: Sample) -> float:
        return s.calls_per_s * s.decisions_per_call

    def cpu(s: Sample) -> float | None:
        return s.cpu_us

    throughput = f"durable Authorize throughput at {DEEP}"
    targets = [
        versus(throughput, TARGET_VS_PREVIOUS, DEEP, calls, PREVIOUS, "/s"),
        versus(throughput, TARGET_VS_CERBOS, DEEP, calls, CERBOS, "/s"),
    ]  # fmt: skip
    if DOCKET in latencies:
        targets.append(rate_target(*latencies[DOCKET]))
    targets += [
        versus(f"CPU per durable Authorize at {DEEP}", TARGET_CPU_VS_TRIVIAL, DEEP, cpu, TRIVIAL,
               " µs", cost=True),
        entries_target(*figure_of(middle, DOCKET, DEEP, lambda s: s.per_commit)),
        *(versus(f"BatchAuthorize x{n} decisions/s", 1, f"x{n}", decisions, CERBOS, "/s")
          for n in bench_cerbos.BATCH_SIZES),
    ]  # fmt: skip
    return conclude(bench, version, previous, latencies, targets)


def conclude(
    bench: Bench,
    version: str,
    previous: str,
    latencies: Latencies,
    targets: Sequence[Target],
) -> dict[str, Any]:
    """Print the targets and every warning of the run (the runners' too); the figures as
    JSON-ready values."""
    warnings = bench.warnings + [
        w for p in bench.up.values() if p.runner for w in p.runner.warnings
    ]
    for line in [*map(target_line, targets), *(f"WARNING: {w}" for w in warnings)]:
        print(line)
    return {
        "tool": version,
        "previous": previous,
        "rounds": bench.rounds,
        "seconds": bench.times.authorize,
        "skipped": bench.skipped,
        "samples": [asdict(s) for s in bench.samples],
        "medians": [asdict(s) for s in medians(bench.samples)],
        "latency": {
            name: {"offered_per_second": offered, "rounds": [r.figures() for r in results]}
            for name, (offered, results) in latencies.items()
        },
        "targets": [asdict(t) for t in targets],
        "warnings": warnings,
    }


if __name__ == "__main__":
    if sys.argv[1:2] != ["trivial"] or len(sys.argv) != 4:
        raise SystemExit("usage: python -m benchmarks.bench_serving trivial ADDRESS PAIRS")
    trivial_main(sys.argv[2], Path(sys.argv[3]))
