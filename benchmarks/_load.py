"""Load generation over gRPC (or plain HTTP) with h2load, and the server processes it is
aimed at.

h2load (Debian/Ubuntu package ``nghttp2-client``) speaks gRPC when it posts a framed
message (``0x00``, 4-byte big-endian length, serialized protobuf) with the headers
``content-type: application/grpc`` and ``te: trailers``. It posts one body file per
process, so a mix of requests is several h2load processes in parallel, one per body;
their per-request logs (``--log-file``: start time, HTTP status, microseconds until the
end of the response) are merged to compute percentiles.

h2load counts HTTP status only, and a gRPC error is HTTP 200 with a ``grpc-status``
trailer and, usually, no message at all. Two checks guard the figures: every body is
sent once with a real gRPC client before and after the load (status and answer
checked), and the DATA bytes h2load received are compared with what the number of
successful responses should have carried (:attr:`LoadResult.data_ratio`).

A :class:`Stream` with ``headers`` posts its body as it is (no gRPC framing) with those
headers instead, and one without a body sends GETs; ``run_h2load(..., http1=True)`` runs
h2load with ``--h1`` (HTTP/1.1, keep-alive; over TLS for an ``https`` URL, where h2load
does not verify the server's certificate). The DATA bytes are then the response bodies.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc

from benchmarks._common import percentile

H2LOAD = "h2load"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
STOP_TIMEOUT_S = 20.0
H1_GRACE_S = 3.0  # h2load --h1 -D sometimes never exits once its time is up (a race in
# its duration mode, nghttp2 issue 2250): it is then killed and its log alone is used


def frame(message: bytes) -> bytes:
    """A serialized protobuf message as one gRPC length-prefixed frame (uncompressed)."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def h2load_version() -> str | None:
    """h2load's version line, or None when it is not installed."""
    if shutil.which(H2LOAD) is None:
        return None
    result = subprocess.run(
        [H2LOAD, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    return result.stdout.strip() or None


# --- one call with a real gRPC client --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One unary call's outcome: gRPC status code and the raw response message."""

    code: grpc.StatusCode
    details: str
    message: bytes


def call(address: str, method: str, request: bytes, *, timeout: float = 10.0) -> Answer:
    """Send serialized ``request`` to ``/service/Method`` and return status and reply."""
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        stub: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        try:
            reply, rpc = stub.with_call(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            return Answer(code, details or "", b"")
        return Answer(rpc.code(), rpc.details() or "", bytes(reply))


# --- h2load runs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stream:
    """One h2load process of a run: its body, connections and (optionally) rate.

    Without ``headers``, ``body`` is a serialized gRPC request (framed and sent with
    :data:`GRPC_HEADERS`); with them, it is sent as it is with these headers. A ``None``
    body makes the requests GETs."""

    body: bytes | None
    clients: int
    streams: int = 1  # concurrent streams per connection (-m; HTTP/1.1: pipelining depth)
    rps: int | None = None  # requests per second per connection (--rps)
    headers: tuple[str, ...] | None = None  # None: a gRPC call
    path: str = ""  # appended to the run's URL


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a run of one or more parallel h2load processes measured."""

    processes: int
    connections: int
    seconds: float  # measured time (after the warm-up)
    measured_ok: int  # h2load's count of 2xx responses in its measured window
    latencies_us: tuple[int, ...]  # of the HTTP 200 responses h2load logged, sorted
    failed: int  # requests h2load logged with another status (-1: the stream failed)
    data_bytes: int  # DATA bytes h2load received
    expected_bytes: int  # HTTP 2xx responses x the expected response size
    commands: tuple[str, ...] = ()
    probe: object = None
    cpu: CpuUse | None = None
    stream_ok: tuple[int, ...] = ()  # measured_ok of each stream (h2load process)
    unfinished: int = 0  # h2load --h1 processes killed after their time (DATA not counted)

    @property
    def per_second(self) -> float:
        """Successful calls per second of measured time."""
        return self.measured_ok / self.seconds

    @property
    def data_ratio(self) -> float:
        """DATA bytes received / the bytes the successful responses should have carried:
        below 1, some calls ended in a gRPC error (HTTP 200 with no message)."""
        return self.data_bytes / self.expected_bytes if self.expected_bytes else math.nan

    def ms(self, fraction: float) -> float:
        """A latency percentile (nearest rank) in milliseconds."""
        return percentile(self.latencies_us, fraction) / 1000

    @property
    def p50_ms(self) -> float:
        """Median latency, ms."""
        return self.ms(0.50)

    @property
    def p90_ms(self) -> float:
        """90th percentile latency, ms."""
        return self.ms(0.90)

    @property
    def p99_ms(self) -> float:
        """99th percentile latency, ms."""
        return self.ms(0.99)

    @property
    def max_ms(self) -> float:
        """Slowest response, ms."""
        return self.latencies_us[-1] / 1000

    def figures(self) -> dict[str, object]:
        """JSON-ready figures."""
        return {
            "processes": self.processes,
            "connections": self.connections,
            "seconds": round(self.seconds, 2),
            "succeeded": self.measured_ok,
            "latency_samples": len(self.latencies_us),
            "failed": self.failed,
            "per_second": round(self.per_second, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "data_ratio": round(self.data_ratio, 4),
            "h2load_killed_after_time": self.unfinished,
            "cpu_cores": None if self.cpu is None else self.cpu.figures(),
            "commands": list(self.commands),
        }


def merge(results: Sequence[LoadResult]) -> LoadResult:
    """Several runs of the same load (rounds) as one: counts and times added up,
    latencies pooled, CPU use averaged over the runs' measured time."""
    first = results[0]
    seconds = sum(r.seconds for r in results)
    cpus = [(r.cpu, r.seconds) for r in results if r.cpu is not None]
    cpu = None
    if len(cpus) == len(results):
        cpu = CpuUse(
            server=sum(c.server * t for c, t in cpus) / seconds,
            load=sum(c.load * t for c, t in cpus) / seconds,
            other=sum(c.other * t for c, t in cpus) / seconds,
        )
    return LoadResult(
        processes=first.processes,
        connections=first.connections,
        seconds=seconds,
        measured_ok=sum(r.measured_ok for r in results),
        latencies_us=tuple(sorted(v for r in results for v in r.latencies_us)),
        failed=sum(r.failed for r in results),
        data_bytes=sum(r.data_bytes for r in results),
        expected_bytes=sum(r.expected_bytes for r in results),
        commands=tuple(c for r in results for c in r.commands),
        probe=[r.probe for r in results],
        cpu=cpu,
        stream_ok=tuple(map(sum, zip(*(r.stream_ok for r in results), strict=True))),
        unfinished=sum(r.unfinished for r in results),
    )


@dataclass(frozen=True, slots=True)
class CpuUse:
    """Average cores busy during a run: the server, h2load, and everything else."""

    server: float
    load: float
    other: float

    def figures(self) -> dict[str, float]:
        """JSON-ready figures."""
        return {"server": round(self.server, 2), "h2load": round(self.load, 2),
                "other": round(self.other, 2)}  # fmt: skip

    def line(self) -> str:
        """``server 1.6, h2load 0.3, other 0.1`` (cores)."""
        return f"server {self.server:.1f}, h2load {self.load:.1f}, other {self.other:.1f}"


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds so far: the machine (all cores), one process group, our children."""

    wall: float
    machine: float | None
    group: float | None
    children: float
    itself: float

    @classmethod
    def take(cls, pgid: int | None) -> CpuSnapshot:
        """Read /proc (Linux); the machine and group figures are None elsewhere."""
        tick = os.sysconf("SC_CLK_TCK")
        machine = group = None
        with contextlib.suppress(OSError, ValueError):
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
            machine = (user + nice + system + irq + softirq + steal) / tick
        if pgid is not None and machine is not None:
            group = 0.0
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(stat[2]) == pgid:  # pgrp; utime and stime are fields 14 and 15
                        group += (int(stat[11]) + int(stat[12])) / tick
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        itself = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            wall=time.monotonic(),
            machine=machine,
            group=group,
            children=children.ru_utime + children.ru_stime,
            itself=itself.ru_utime + itself.ru_stime,
        )

    def since(self, before: CpuSnapshot) -> CpuUse | None:
        """Average cores used between ``before`` and this snapshot."""
        if self.machine is None or before.machine is None:
            return None
        if self.group is None or before.group is None:
            return None
        wall = self.wall - before.wall
        server = self.group - before.group
        load = self.children - before.children  # h2load: the children waited for
        ours = self.itself - before.itself
        other = (self.machine - before.machine) - server - load - ours
        return CpuUse(server / wall, load / wall, max(0.0, other) / wall)


_TRAFFIC = re.compile(r"^traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers.*?\((\d+)\) data", re.M)


def run_h2load(
    url: str,
    streams: Sequence[Stream],
    *,
    duration_s: float,
    warm_up_s: float,
    response_sizes: Sequence[int],
    workdir: Path,
    probe: Callable[[], object] | None = None,
    server_pgid: int | None = None,
    http1: bool = False,
) -> LoadResult:
    """Run one h2load process per stream in parallel for ``warm_up_s`` (figures
    discarded), then again for ``duration_s``, and merge what the second run measured.

    The warm-up is a run of its own rather than h2load's ``--warm-up-time``, whose
    requests are left out of h2load's counts and log but not out of its DATA byte count.
    ``response_sizes[i]`` is the size in bytes of the response that stream i's body gets
    (from a verified call; the gRPC frame, or the HTTP body for a stream with
    ``headers``); it is what the DATA bytes are checked against.
    ``probe``, if given, is called once halfway through the measured time; what it
    returns is kept as :attr:`LoadResult.probe`. With ``server_pgid``, the CPU time of
    the server's process group, of h2load and of everything else is measured. With
    ``http1``, h2load speaks HTTP/1.1 (``--h1``).
    """
    bodies: list[Path | None] = []
    for index, stream in enumerate(streams):
        if stream.body is None:
            bodies.append(None)
            continue
        body = workdir / f"body-{index}.bin"
        body.write_bytes(frame(stream.body) if stream.headers is None else stream.body)
        bodies.append(body)
    if warm_up_s > 0:
        _h2load(url, streams, bodies, warm_up_s, workdir / "warm-up", None, http1)
    cpu_before = CpuSnapshot.take(server_pgid)
    runs, probed = _h2load(url, streams, bodies, duration_s, workdir / "measured", probe, http1)
    cpu = CpuSnapshot.take(server_pgid).since(cpu_before)
    latencies: list[int] = []
    failed = 0
    data_bytes = 0
    expected_bytes = 0
    stream_ok = []
    unfinished = 0
    for index, (text, log) in enumerate(runs):
        traffic = _TRAFFIC.search(text)
        rows = _rows(log)
        if traffic is None and not http1:
            raise RuntimeError(f"h2load printed no traffic line: {text[-500:]}")
        if traffic is None:  # killed after its time (H1_GRACE_S): its log alone counts
            unfinished += 1
            stream_ok.append(sum(200 <= status < 300 for status, _ in rows))
            latencies += [micros for status, micros in rows if status == 200]
            failed += sum(status != 200 for status, _ in rows)
            continue
        data_bytes += int(traffic.group(3))
        ok_count = _count(r"^status codes: (\d+) 2xx", text)
        if http1:  # h2load counts a status when the headers come, and over HTTP/1.1 they
            # may come well before the body: count the completed responses it logged
            ok_count = sum(200 <= status < 300 for status, _ in rows)
        stream_ok.append(ok_count)
        expected_bytes += ok_count * response_sizes[index]
        for status, micros in rows:
            if status == 200:
                latencies.append(micros)
            else:
                failed += 1
    if not latencies:
        raise RuntimeError("h2load logged no successful response")
    return LoadResult(
        processes=len(streams),
        connections=sum(s.clients for s in streams),
        seconds=duration_s,
        measured_ok=sum(stream_ok),
        latencies_us=tuple(sorted(latencies)),
        failed=failed,
        data_bytes=data_bytes,
        expected_bytes=expected_bytes,
        commands=tuple(_commands(url, streams, bodies, duration_s, workdir / "measured", http1)),
        probe=probed,
        cpu=cpu,
        stream_ok=tuple(stream_ok),
        unfinished=unfinished,
    )


def _commands(
    url: str,
    streams: Sequence[Stream],
    bodies: Sequence[Path | None],
    seconds: float,
    prefix: Path,
    http1: bool,
) -> list[str]:
    """The h2load command line of each stream (as :func:`_h2load` runs them)."""
    return [
        shlex.join(_argv(url, stream, body, seconds, Path(f"{prefix}-{index}.log"), http1))
        for index, (stream, body) in enumerate(zip(streams, bodies, strict=True))
    ]


def _argv(
    url: str, stream: Stream, body: Path | None, seconds: float, log: Path, http1: bool
) -> list[str]:
    headers = GRPC_HEADERS if stream.headers is None else stream.headers
    argv = [
        H2LOAD,
        f"--duration={seconds:g}",
        f"--clients={stream.clients}",
        f"--max-concurrent-streams={stream.streams}",
        *([] if body is None else [f"--data={body}"]),
        *(f"--header={header}" for header in headers),
        f"--log-file={log}",
    ]
    if http1:
        argv.append("--h1")
    if stream.rps is not None:
        argv.append(f"--rps={stream.rps}")
    argv.append(url + stream.path)
    return argv


def _h2load(
    url: str,
    streams: Sequence[Stream],
    bodies: Sequence[Path | None],
    seconds: float,
    prefix: Path,
    probe: Callable[[], object] | None,
    http1: bool,
) -> tuple[list[tuple[str, Path]], object]:
    """Run the h2load processes in parallel; (output, log file) of each, and the probe's
    result. Raises when one fails; none outlives this call."""
    procs: list[tuple[subprocess.Popen[str], Path, Path]] = []
    probed: object = None
    started = time.monotonic()
    try:
        for index, (stream, body) in enumerate(zip(streams, bodies, strict=True)):
            log = Path(f"{prefix}-{index}.log")
            log.unlink(missing_ok=True)  # h2load appends to its log file
            out = Path(f"{prefix}-{index}.out")
            with out.open("w") as sink:
                proc = subprocess.Popen(
                    _argv(url, stream, body, seconds, log, http1),
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            procs.append((proc, log, out))
        if probe is not None:
            time.sleep(max(0.0, started + seconds / 2 - time.monotonic()))
            probed = probe()
        deadline = started + seconds + (H1_GRACE_S if http1 else 30.0)
        late = contextlib.suppress(subprocess.TimeoutExpired) if http1 else contextlib.nullcontext()
        for proc, _, _ in procs:
            with late:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc, _, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    runs = []
    for proc, log, out in procs:
        text = out.read_text()
        if proc.returncode != 0 and not (http1 and proc.returncode == -signal.SIGKILL):
            raise RuntimeError(f"h2load exited {proc.returncode}: {text[-500:]}")
        runs.append((text, log))
    return runs, probed


def _rows(log: Path) -> list[tuple[int, int]]:
    """(HTTP status, µs to the end of the response) of each request h2load logged."""
    rows = []
    for line in log.read_text().splitlines():
        _start, status, micros = line.split("\t")[:3]
        rows.append((int(status), int(micros)))
    return rows


def _count(pattern: str, text: str) -> int:
    """The number h2load printed where ``pattern`` (one group) matches, else 0."""
    found = re.search(pattern, text, re.M)
    return int(found.group(1)) if found else 0


# --- server processes -------------------------------------------------------------------


class Server:
    """A server subprocess in its own process group, its output drained by a thread.

    :meth:`wait_for` blocks until a line matches; :meth:`stop` sends SIGTERM to the
    process, waits, then SIGKILLs whatever of its group is left (worker processes).
    """

    def __init__(self, argv: Sequence[str], *, cwd: Path | None = None, name: str = "") -> None:
        self.name = name or Path(argv[0]).name
        self.argv = list(argv)
        self.lines: deque[str] = deque(maxlen=200)
        self._seen = threading.Condition()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _drain(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> str:
        """The first output line matching ``pattern``; raise if the process exits first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        checked = 0
        with self._seen:
            while True:
                lines = list(self.lines)
                for line in lines[checked:]:
                    if regex.search(line):
                        return line
                checked = len(lines)
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(
                        f"{self.name} exited {self.proc.returncode} before it was ready:\n"
                        + "\n".join(lines[-20:])
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(
                        f"{self.name} not ready within {timeout:.0f} s:\n" + "\n".join(lines[-20:])
                    )
                self._seen.wait(min(remaining, 0.5))

    def wait_for_port(self, address: str, timeout: float) -> None:
        """Block until ``HOST:PORT`` accepts TCP connections; raise if the process exits
        first or the time runs out."""
        host, port = address.rsplit(":", 1)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited {self.proc.returncode} before it was ready:\n"
                    + "\n".join(list(self.lines)[-20:])
                )
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} not listening on {address} within {timeout:.0f} s:\n"
                        + "\n".join(list(self.lines)[-20:])
                    ) from None
                time.sleep(0.1)
            else:
                return

    def stop(self) -> int | None:
        """SIGTERM, wait, then SIGKILL the process group's leftovers; the exit code."""
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)  # worker processes left behind, if any
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def connections_per_process(port: int, pgid: int) -> list[int] | None:
    """Established TCP connections to local ``port`` held by each process of group
    ``pgid``, largest first (Linux /proc); None when it cannot be read."""
    try:
        inodes = set()
        for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError):
                for line in Path(table_path).read_text().splitlines()[1:]:
                    fields = line.split()
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    if local_port == port and fields[3] == "01":  # ESTABLISHED
                        inodes.add(fields[9])
        counts = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                    continue
                held = sum(
                    os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes
                    for fd in (entry / "fd").iterdir()
                )
                if held:
                    counts.append(held)
    except OSError:
        return None
    return sorted(counts, reverse=True)


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary directory for body files, logs and server state, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)
