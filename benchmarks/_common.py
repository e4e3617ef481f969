"""Shared pieces of the benchmarks: machine description, warm-up, percentiles, tables,
importing tests/ helpers by path."""

from __future__ import annotations

import gc
import importlib.util
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

from engine import Engine, Request
from engine._core.evaluate import _prepare  # the engine's own request → bucket lookup

WARM_UP_TIMEOUT_S = 120.0
H2LOAD_MISSING = "h2load not found: install it with `apt-get install nghttp2-client`"


def skipped(reason: str) -> dict[str, Any]:
    """Print that a benchmark is skipped and why; its figures: the reason."""
    print(f"SKIPPED: {reason}")
    return {"skipped": reason}


def machine() -> dict[str, Any]:
    """The machine and software the figures were taken on."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    loadavg = Path("/proc/loadavg")
    load = loadavg.read_text().split()[:3] if loadavg.exists() else []
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "cedarpy": version("cedarpy"),
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": " ".join(load),
    }


def machine_line(info: dict[str, Any]) -> str:
    """One readable line describing the machine."""
    return (
        f"{info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"cedarpy {info['cedarpy']}, {info['platform']}, {info['date']}, "
        f"load average at start {info['loadavg_at_start']}"
    )


@dataclass(frozen=True, slots=True)
class Summary:
    """Latency figures of individually timed calls, in microseconds."""

    samples: int
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    max_us: float


def import_path(name: str, path: Path) -> ModuleType:
    """The Python file ``path`` imported as module ``name`` (tests/ helpers: tests/ is not a
    package on sys.path), registered in ``sys.modules`` (dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def percentile(ordered: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(samples_ns: Sequence[int]) -> Summary:
    """p50/p90/p99/mean/max of per-call durations given in nanoseconds."""
    ordered = sorted(samples_ns)
    return Summary(
        samples=len(ordered),
        p50_us=percentile(ordered, 0.50) / 1000,
        p90_us=percentile(ordered, 0.90) / 1000,
        p99_us=percentile(ordered, 0.99) / 1000,
        mean_us=sum(ordered) / len(ordered) / 1000,
        max_us=ordered[-1] / 1000,
    )


def as_dict(summary: Summary) -> dict[str, Any]:
    """A summary as JSON-ready figures (rounded to 0.1 µs)."""
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in asdict(summary).items()}


def time_calls(call: Callable[[int], object], indices: Sequence[int]) -> tuple[list[int], float]:
    """Time ``call(i)`` for each index individually; return durations (ns) and wall seconds."""
    gc.collect()
    samples: list[int] = []
    clock = time.perf_counter_ns
    started = clock()
    for index in indices:
        before = clock()
        call(index)
        samples.append(clock() - before)
    return samples, (clock() - started) / 1e9


@dataclass(frozen=True, slots=True)
class WarmUp:
    """What warming an engine up took, and the first-sight latencies it saw."""

    cold_ns: list[int]
    multi_bucket_keys: int
    seconds: float


def warm_up(engine: Engine, requests: Sequence[Request], now: datetime) -> WarmUp:
    """Decide every request twice, waiting in between until every merged slice is built.

    The first pass is timed call by call: it is the first-sight (cold) cost, when a
    request reaching several buckets is evaluated bucket by bucket while the merged
    policy set is built in the background. The engine is warm once every multi-bucket
    key of the request list has its merged set; then a second pass runs untimed.
    """
    bundle = engine.bundle
    assert bundle is not None
    started = time.perf_counter()
    cold, _ = time_calls(lambda i: engine.decide(requests[i], now=now), range(len(requests)))
    keys = {_prepare(bundle, request).buckets for request in requests}
    multi = [key for key in keys if len(key) > 1]
    while not all(bundle.index.merged(key) is not None for key in multi):
        if time.perf_counter() - started > WARM_UP_TIMEOUT_S:
            raise RuntimeError("merged policy sets were not built within the warm-up timeout")
        time.sleep(0.05)
    time.sleep(0.1)
    for request in requests:
        engine.decide(request, now=now)
    time.sleep(0.1)
    return WarmUp(cold, len(multi), time.perf_counter() - started)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[c]) for row in cells) for c in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0])]
        parts.extend(value.rjust(widths[c]) for c, value in enumerate(row) if c > 0)
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value < 100_000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
