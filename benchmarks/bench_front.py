"""The gRPC front, measured: Docket's own Authorize and BatchAuthorize behind grpc.aio
(what ``docket serve`` runs) and behind pyvoy (Envoy's HTTP/2 in C++, Python called once
per RPC through ASGI: :mod:`benchmarks._pyvoy_front`), side by side with the servers of
issue 15's targets — the trivial grpcio server, the previous Docket and Cerbos — in one
run, the load alternating between them in rounds, as ``serving`` runs them: 256 calls in
flight, BatchAuthorize x10 and x100 against CheckResources, then each Docket at half its
throughput for its p99.

Issue 15 asks, where pure Python cannot reach a target, for the native piece (an
existing, maintained library) that would close it. This is the measurement behind
naming pyvoy: both Dockets run the same servicer, decision path and durable audit log
(2 processes each on one port, each committing its own entries, an fsync per group
commit); only the front differs. Each target is printed for both.

pyvoy is installed from the package registry into a virtualenv of its own
(``benchmarks/.out/pyvoy-venv``, as Cerbos comes from npm); it is skipped, with the
reason, when it cannot be.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from attestation._ca import CertificateAuthority
from audit._store import Store
from benchmarks import _load, bench_cerbos
from benchmarks._common import H2LOAD_MISSING, skipped
from benchmarks.bench_grpc import (
    AUTHORIZE,
    BATCH,
    BUNDLE,
    CONNECTIONS_PER_BODY,
    DEEP_STREAMS,
    ROOT,
    Case,
    bundle_cases,
    docket_server,
    mix,
    verify_authorize,
)
from benchmarks.bench_serving import (
    CERBOS,
    DEEP,
    DOCKET,
    FULL_TIMES,
    PREVIOUS,
    QUICK_TIMES,
    TARGET_CPU_VS_TRIVIAL,
    TARGET_VS_CERBOS,
    TARGET_VS_PREVIOUS,
    TRIVIAL,
    Batches,
    Bench,
    Latencies,
    Peer,
    Sample,
    Target,
    conclude,
    docket_peer,
    figure_of,
    latency,
    measure_mix,
    medians,
    rate_target,
    ratio_target,
    renew,
    round_ratios,
    samples_table,
    start_cerbos,
    start_previous,
    start_trivial,
)

PYVOY = "Docket on pyvoy"
PYVOY_VERSION = "1.3.0"
PROCESSES = 2  # as docket serve --workers 2
VENV = Path(__file__).resolve().parent / ".out" / "pyvoy-venv"
INSTALL_TIMEOUT_S = 600.0
READY_TIMEOUT_S = 60.0
ROUNDS, QUICK_ROUNDS = 3, 1


def pyvoy_command() -> tuple[Path | None, str]:
    """pyvoy's command (installed on first use), or None and the reason."""
    command = VENV / "bin" / "pyvoy"
    if command.exists():
        return command, ""
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True)
        uvloop = _installed("uvloop")
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "--quiet", f"pyvoy=={PYVOY_VERSION}",
             *([f"uvloop=={uvloop}"] if uvloop else [])],
            check=True, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:] or [str(exc)]
        return None, f"cannot install pyvoy=={PYVOY_VERSION}: {last[0]}"
    except subprocess.TimeoutExpired:
        return None, f"pip install pyvoy did not finish within {INSTALL_TIMEOUT_S:.0f} s"
    return (command, "") if command.exists() else (None, "pyvoy installed no `pyvoy` command")


def _installed(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """``values`` in the environment while inside (a server started inside inherits
    them), the environment as it was after."""
    kept = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in kept.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_pyvoy(bench: Bench, stack: ExitStack, cases: list[Case]) -> Batches:
    """:data:`PROCESSES` pyvoy processes on one port (Envoy's listeners set SO_REUSEPORT),
    in one process group, serving Docket from a data directory ``docket serve``
    prepared; checked as every Docket is: each body of the mix answers as its case
    expects. Returns what makes its batches (a fresh device token), each checked against
    Cerbos as Docket's are (none without Cerbos)."""
    command, reason = pyvoy_command()
    if command is None:
        bench.skipped[PYVOY] = reason
        print(f"  {PYVOY}: SKIPPED ({reason})")
        return list
    data = bench.tmp / "pyvoy"
    with docket_server(data):
        pass  # the data directory: CA, keys, the audit log
    address = f"127.0.0.1:{_load.free_port()}"
    one = shlex.join(
        [str(command), "--address", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
         "--loop", "uvloop", "--log-level", "warning", "benchmarks._pyvoy_front:app"]
    )  # fmt: skip
    script = f'trap "kill 0" TERM; for i in $(seq {PROCESSES}); do {one} & done; wait'
    with _environment(
        DOCKET_FRONT_DATA=str(data),
        DOCKET_FRONT_BUNDLE=str(BUNDLE),
        # The project virtualenv's packages, for the app (see benchmarks/_pyvoy_front.py);
        # the repository, for pyvoy to find the app.
        DOCKET_FRONT_PATHS=sysconfig.get_paths()["purelib"],
        PYTHONPATH=str(ROOT),
    ):
        server = _load.Server(["sh", "-c", script], cwd=ROOT, name=PYVOY)
    stack.callback(server.stop)
    server.wait_for(r"pyvoy listening", READY_TIMEOUT_S)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while sum("pyvoy listening" in line for line in list(server.lines)) < PROCESSES:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{PYVOY}: not every process listens:\n" + "\n".join(server.lines))
        time.sleep(0.2)
    ca = CertificateAuthority.load(data / "ca")
    peer = Peer(PYVOY, address, server.proc.pid, AUTHORIZE, [], [])

    def renew() -> None:
        sent = [bench_cerbos.on_the_wire(case, ca) for case in cases]
        peer.sizes = [verify_authorize(address, case) for case in sent]
        peer.bodies = [case.message.SerializeToString() for case in sent]

    renew()
    peer.renew = renew
    print(f"  verified: {PYVOY} ({PROCESSES} processes on {address}) answers the "
          f"{len(cases)} mix bodies OK as their cases expect")  # fmt: skip
    bench.up[PYVOY] = peer
    if CERBOS not in bench.up:
        return list
    cerbos = bench.up[CERBOS].address
    main = next(case for case in bundle_cases() if case.name == bench_cerbos.CASE)
    request = next(r for name, r, _ in bench_cerbos.data_cases() if name == main.name)

    def batches() -> list[bench_cerbos.Batch]:
        on_wire = bench_cerbos.on_the_wire(main, ca)
        return [
            bench_cerbos.batch(address, cerbos, on_wire, request, n)
            for n in bench_cerbos.BATCH_SIZES
        ]

    batches()
    print(f"  verified: {PYVOY}'s BatchAuthorize and CheckResources agree on every resource")
    return batches


def check_logged(database: Path, answered: int) -> None:
    """Every call pyvoy's Docket answered in the measured runs has its entry in the log
    (it holds more: the warm-ups', the verifications', its bundle loads)."""
    store = Store(f"sqlite:///{database}", create=False)
    try:
        size = store.head().size
    finally:
        store.close()
    if size < answered:
        raise RuntimeError(f"{PYVOY}: {answered} calls answered, {size} entries in its log")
    print(f"  verified: {PYVOY}'s audit log holds {size:,} entries, the {answered:,} calls "
          "answered in the measured runs among them")  # fmt: skip


def run(*, quick: bool = False) -> dict[str, Any]:
    """Start every server, verify them, run the rounds (256 in flight, then the batches),
    then each Docket at half its throughput; print the tables and each target for both
    fronts; return the figures."""
    version = _load.h2load_version()
    if version is None:
        return skipped(H2LOAD_MISSING)
    times = QUICK_TIMES if quick else FULL_TIMES
    cases = mix(bundle_cases())
    with _load.workdir("docket-bench-front-") as tmp:
        with ExitStack() as stack:
            bench = Bench(times, QUICK_ROUNDS if quick else ROUNDS, tmp)
            docket = stack.enter_context(docket_server(tmp / "docket"))
            bench.up[DOCKET] = docket_peer(DOCKET, docket, tmp / "docket", cases, tmp)
            start_trivial(bench, stack)
            previous = start_previous(bench, stack, cases)
            batches = {DOCKET: start_cerbos(bench, stack, cases)}
            batches[PYVOY] = start_pyvoy(bench, stack, cases)
            answered = rounds(bench, batches)
            latencies = latency(bench, [name for name in (DOCKET, PYVOY) if name in bench.up])
            answered += sum(r.measured_ok for r in latencies[PYVOY][1]) if PYVOY in latencies else 0
        if PYVOY in bench.up:
            check_logged(tmp / "pyvoy" / "docket.db", answered)
    return report(bench, version, previous, latencies)


def rounds(bench: Bench, batches: dict[str, Batches]) -> int:
    """The alternating rounds: 256 in flight on every server in turn, the order rotated
    every round; then the batches on both Dockets and Cerbos. How many decisions pyvoy's
    Docket answered in the measured runs."""
    names = list(bench.up)
    answered = 0
    for number in range(1, bench.rounds + 1):
        renew(bench)
        shift = (number - 1) % len(names)
        order = names[shift:] + names[:shift]
        for name in (n for n in order if n in bench.up):
            result = measure_mix(bench, name, DEEP, number, DEEP_STREAMS)
            answered += result.measured_ok if name == PYVOY else 0
        made = {name: make() for name, make in batches.items()}
        for index, size in enumerate(bench_cerbos.BATCH_SIZES):
            for name in (n for n in order if n in (DOCKET, PYVOY, CERBOS)):
                each = made[DOCKET if name == CERBOS else name]
                if len(each) <= index:
                    continue  # no batches: Cerbos was skipped
                docket = name != CERBOS
                result = bench.measure(
                    bench.up[name],
                    f"x{size}",
                    number,
                    [_load.Stream(each[index].docket if docket else each[index].cerbos,
                                  bench_cerbos.BATCH_CONNECTIONS)],
                    [each[index].docket_reply if docket else each[index].cerbos_reply],
                    per_call=size,
                    path=BATCH if docket else "",
                    seconds=bench.times.batch,
                )  # fmt: skip
                answered += result.measured_ok * size if name == PYVOY else 0
    return answered


def report(bench: Bench, version: str, previous: str, latencies: Latencies) -> dict[str, Any]:
    """Print the tables and the targets for both fronts; the figures as JSON-ready values."""
    absent = {f"{name} ({previous})" if name == PREVIOUS else name: why
              for name, why in bench.skipped.items()}  # fmt: skip
    print(f"\nper round ({bench.rounds} round(s) of {bench.times.authorize} s):")
    print(samples_table(bench.samples, skipped=absent))
    middle = medians(bench.samples)
    print(f"\nside by side (median over {bench.rounds} round(s)):")
    print(samples_table(middle, skipped=absent))
    print(
        f"tool: {version}; the Authorize mix, {CONNECTIONS_PER_BODY} connections per body, "
        f"{DEEP_STREAMS} streams each; batches: {bench_cerbos.BATCH_CONNECTIONS} connections, "
        f"one call each; {DOCKET}: docket serve --workers 2 (grpc.aio); {PYVOY}: pyvoy "
        f"{PYVOY_VERSION}, {PROCESSES} processes, the same servicer and durable audit log "
        f"(benchmarks/_pyvoy_front.py); {PREVIOUS} = {previous}; {TRIVIAL}: grpc.aio, one "
        "process; srv CPU µs/call: the server's process group"
    )

    def of(value: str) -> Callable[[Sample], float | None]:
        if value == "cpu":
            return lambda s: s.cpu_us
        return lambda s: s.calls_per_s * s.decisions_per_call

    def figure(server: str, load: str, value: str) -> tuple[float | None, str]:
        if server in bench.skipped:
            return None, f"{server} SKIPPED: {bench.skipped[server]}"
        return figure_of(middle, server, load, of(value))

    def versus(mine: str, what: str, load: str, factor: float, other: str, value: str,
               unit: str, cost: bool = False) -> Target:  # fmt: skip
        ours, why_ours = figure(mine, load, value)
        theirs, why_theirs = figure(other, load, value)
        each = round_ratios(bench.samples, load, mine, other, of(value))
        return ratio_target(f"{what} ({mine})", factor, (mine, ours), (other, theirs), unit,
                            cost=cost, unjudged=why_theirs or why_ours, rounds=each)  # fmt: skip

    targets = []
    for mine in (DOCKET, PYVOY):
        throughput = f"durable Authorize throughput at {DEEP}"
        targets += [
            versus(mine, throughput, DEEP, TARGET_VS_PREVIOUS, PREVIOUS, "calls", "/s"),
            versus(mine, throughput, DEEP, TARGET_VS_CERBOS, CERBOS, "calls", "/s"),
            versus(mine, f"CPU per durable Authorize at {DEEP}", DEEP, TARGET_CPU_VS_TRIVIAL,
                   TRIVIAL, "cpu", " µs", cost=True),
            *(versus(mine, f"BatchAuthorize x{n} decisions/s", f"x{n}", 1, CERBOS, "calls",
                     "/s") for n in bench_cerbos.BATCH_SIZES),
        ]  # fmt: skip
        if mine in latencies:
            target = rate_target(*latencies[mine])
            targets.append(replace(target, name=f"p99 at half its throughput ({mine})"))
    targets.append(
        versus(PYVOY, "durable Authorize throughput, the fronts", DEEP, 1, DOCKET, "calls", "/s")
    )
    return {"pyvoy": PYVOY_VERSION, **conclude(bench, version, previous, latencies, targets)}
