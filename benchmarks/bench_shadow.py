"""Shadow mode's overhead: ``docket serve`` without against with a shadow bundle.

Two servers of this tree side by side (one worker each, durable audit on SQLite, the
default bundle live): one without ``shadow_bundle``, one with a candidate beside it (the
default bundle and one more ``forbid`` that no request of the mix meets, so every
decision is made twice and agrees: the steady state of a candidate being vetted; a
disagreement adds only its annotation to the entry). h2load alternates between them in
rounds, as ``compare`` (b) does (:func:`benchmarks.bench_compare.setting_compared`, the
same mix and checks). Reported: Authorize calls/s and server CPU µs per call of each
(medians over the rounds), and their ratios. Each engine has its decision memo, so a
request seen before costs the candidate a lookup, as it costs the live bundle.
"""

from __future__ import annotations

import shutil
from typing import Any

from benchmarks._load import h2load_version, workdir
from benchmarks.bench_compare import setting_compared
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
        return setting_compared(
            tmp,
            {"DOCKET_SHADOW_BUNDLE": str(candidate)},
            quick=quick,
            names=("none", "shadow"),
            labels=("no shadow", "shadow bundle"),
        )
