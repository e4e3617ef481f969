"""Shadow mode's overhead: ``docket serve`` without against with a shadow bundle.

Two servers of this tree side by side (one worker each, durable audit on SQLite, the
default bundle live): one without ``shadow_bundle``, one with a candidate beside it (the
default bundle and one more ``forbid`` that no request of the mix meets, so every
decision is made twice and agrees: the steady state of a candidate being vetted; a
disagreement adds only its annotation to the entry). h2load alternates between them in
rounds, as ``compare`` (b) does (:func:`benchmarks.bench_compare.compare_serve`, the same
mix and checks). Reported: Authorize calls/s and server CPU µs per call of each (medians
over the rounds), and their ratios. Each engine has its decision memo, so a request seen
before costs the candidate a lookup, as it costs the live bundle.
"""

from __future__ import annotations

import shutil
from typing import Any

from benchmarks._common import table
from benchmarks._load import h2load_version, workdir
from benchmarks.bench_compare import FULL, QUICK, ROOT, compare_serve
from benchmarks.bench_grpc import BUNDLE

CANDIDATE_POLICY = """
@id("candidate-forbids-mallory")
forbid (principal == Docket::User::"mallory", action, resource);
"""


def run(*, quick: bool = False) -> dict[str, Any]:
    """Run the comparison, print its table, return its figures."""
    if h2load_version() is None:
        print("  SKIPPED (h2load not found: apt-get install nghttp2-client)")
        return {"skipped": "no h2load"}
    with workdir("docket-bench-shadow-") as tmp:
        candidate = tmp / "candidate"
        shutil.copytree(BUNDLE, candidate)
        with (candidate / "guards.cedar").open("a") as handle:
            handle.write(CANDIDATE_POLICY)
        serve = compare_serve(
            ROOT,
            QUICK if quick else FULL,
            tmp,
            this_env={"DOCKET_SHADOW_BUNDLE": str(candidate)},
        )
    off, on = serve["calls_per_second"]["base"], serve["calls_per_second"]["this"]
    cpu_off, cpu_on = serve["cpu_us_per_call"]["base"], serve["cpu_us_per_call"]["this"]
    cpu_ratio = round(cpu_on / cpu_off, 3) if cpu_off and cpu_on else None
    print(
        table(
            ("docket serve Authorize", "no shadow", "shadow bundle", "ratio (shadow / none)"),
            [
                ("calls/s", off, on, f"{on / off:.3f}"),
                (
                    "server CPU µs/call",
                    cpu_off,
                    cpu_on,
                    "?" if cpu_ratio is None else f"{cpu_ratio:.3f}",
                ),
            ],
        )
    )
    return {
        "calls_per_second": {"none": off, "shadow": on},
        "cpu_us_per_call": {"none": cpu_off, "shadow": cpu_on},
        "rounds_per_second": {
            "none": serve["rounds_per_second"]["base"],
            "shadow": serve["rounds_per_second"]["this"],
        },
        "throughput_ratio": round(on / off, 3),
        "cpu_ratio": cpu_ratio,
    }
