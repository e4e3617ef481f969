"""In-process ``Engine.decide`` latency on the default bundle (``policies/``).

The request mix is every case of ``policies/tests/*.yaml``, cycled. After a warm-up
(see :func:`benchmarks._common.warm_up`), each call is timed on its own with
``time.perf_counter_ns``, twice over: as memo *hits* (every request was decided before
under this bundle) and as memo *misses* (the memo is emptied, untimed, before each call:
the first sight of a request, with the bundle's shapes and merged slices warm). For
reference, the same requests are also timed as a bare ``cedarpy.is_authorized`` call on
the policy set the engine would use (request already translated, same entities), with
the schema and without it: the floors that no engine overhead is added to.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cedarpy
import yaml

from benchmarks._common import as_dict, summarize, table, time_calls, warm_up
from engine import Engine, PolicyBundle, Request, RequestError
from engine._core.evaluate import _prepare

BUNDLE = Path(__file__).resolve().parent.parent / "policies"
ITERATIONS = 20_000
QUICK_ITERATIONS = 2_000
TARGET_P50_US = 60.0


def load_cases(bundle_dir: Path) -> list[tuple[str, Request, str]]:
    """(name, request, expected decision) of every case in the bundle's tests/*.yaml."""
    cases = []
    for path in sorted((bundle_dir / "tests").glob("*.y*ml")):
        data = yaml.safe_load(path.read_text()) or {}
        for case in data.get("cases", []):
            request = Request.model_validate(case["request"])
            cases.append((case["name"], request, case["expect"]["decision"]))
    return cases


CedarCall = tuple[dict[str, Any], cedarpy.PolicySet, cedarpy.Entities]


def _cedar_floor(bundle: PolicyBundle, requests: list[Request]) -> list[CedarCall]:
    """Per request, the arguments of the single cedarpy call a warm engine makes."""
    calls: list[CedarCall] = []
    for request in requests:
        prepared = _prepare(bundle, request)
        key = prepared.buckets
        if not key:
            policy_set = bundle.index.empty
        elif len(key) == 1:
            policy_set = bundle.index.buckets[key[0]].policy_set
        else:
            merged = bundle.index.merged(key)
            assert merged is not None, "warm-up left a merged slice unbuilt"
            policy_set = merged
        calls.append((prepared.cedar, policy_set, prepared.entities))
    return calls


def time_misses(
    engine: Engine, requests: list[Request], indices: list[int], now: datetime
) -> list[int]:
    """Each call timed on its own after emptying the memo (untimed): all misses."""
    gc.collect()
    clock = time.perf_counter_ns
    samples = []
    for index in indices:
        engine.forget()
        before = clock()
        engine.decide(requests[index], now=now)
        samples.append(clock() - before)
    return samples


def _verdict(p50: float) -> str:
    return f"{'MET' if p50 <= TARGET_P50_US else 'NOT MET'} ({p50:.1f} µs)"


def run(*, quick: bool = False) -> dict[str, Any]:
    """Run the benchmark, print its table, return its figures."""
    iterations = QUICK_ITERATIONS if quick else ITERATIONS
    bundle = PolicyBundle.load(BUNDLE)
    engine = Engine(bundle)
    now = datetime.now(UTC)
    cases, rejected = [], 0
    for name, request, expected in load_cases(BUNDLE):
        try:
            decision = engine.decide(request, now=now)
        except RequestError:
            rejected += 1
            continue
        cases.append((name, request, expected, decision.decision))
    if not cases:
        raise RuntimeError(f"no usable requests in {BUNDLE}/tests")
    requests = [request for _, request, _, _ in cases]
    agreeing = sum(expected == got for _, _, expected, got in cases)
    engine = Engine(bundle)  # the timed engine: no request seen, no shape learnt
    warm = warm_up(engine, requests, now)
    indices = [i % len(requests) for i in range(iterations)]

    stats = engine.memo_stats()
    samples, wall = time_calls(lambda i: engine.decide(requests[i], now=now), indices)
    hit = summarize(samples)
    hits = engine.memo_stats().hits - stats.hits
    miss_samples = time_misses(engine, requests, indices, now)
    miss = summarize(miss_samples)
    calls = _cedar_floor(bundle, requests)
    schema = bundle.schema

    def cedar_call(i: int) -> cedarpy.AuthzResult:
        request, policy_set, entities = calls[i]
        return cedarpy.is_authorized(request, policy_set, entities, schema=schema)

    def cedar_call_unchecked(i: int) -> cedarpy.AuthzResult:
        request, policy_set, entities = calls[i]
        return cedarpy.is_authorized(request, policy_set, entities)

    floor = summarize(time_calls(cedar_call, indices)[0])
    unchecked = summarize(time_calls(cedar_call_unchecked, indices)[0])
    evaluated = [engine.decide(r, now=now).policies_evaluated for r in requests]
    outcomes = Counter(engine.decide(r, now=now).decision for r in requests)

    print(
        f"bundle {BUNDLE.name}/: {len(bundle.policies)} policies in "
        f"{len(bundle.index.buckets)} buckets; {len(requests)} requests from tests/*.yaml "
        f"({rejected} rejected)"
    )
    print(
        f"  {agreeing}/{len(requests)} decide as their cases expect; {outcomes['allow']} allow, "
        f"{outcomes['deny']} deny; {sum(evaluated) / len(evaluated):.1f} policies evaluated "
        f"per request"
    )
    print(
        f"  warm-up {warm.seconds:.2f} s ({warm.multi_bucket_keys} merged slices); "
        f"timed: {iterations:,} hits ({hits:,} counted by the memo), then {iterations:,} "
        f"misses, requests cycled"
    )
    cold = summarize(warm.cold_ns)
    rows = [
        ("Engine.decide, memo hit", hit.p50_us, hit.p90_us, hit.p99_us, hit.mean_us),
        ("Engine.decide, memo miss", miss.p50_us, miss.p90_us, miss.p99_us, miss.mean_us),
        ("  first sight (warm-up pass 1)", cold.p50_us, cold.p90_us, cold.p99_us, cold.mean_us),
        ("cedarpy.is_authorized alone", floor.p50_us, floor.p90_us, floor.p99_us, floor.mean_us),
        (
            "  without the schema",
            unchecked.p50_us,
            unchecked.p90_us,
            unchecked.p99_us,
            unchecked.mean_us,
        ),
    ]
    print(table(("µs per call", "p50", "p90", "p99", "mean"), rows))
    per_second = iterations / wall
    met = hit.p50_us <= TARGET_P50_US
    print(f"decisions/s (one thread, memo hits, wall clock of the timed loop): {per_second:,.0f}")
    print(
        f"target: Engine.decide p50 ≤ {TARGET_P50_US:.0f} µs — hit: {_verdict(hit.p50_us)}; "
        f"miss: {_verdict(miss.p50_us)} (the cedarpy call alone is {floor.p50_us:.1f} µs, "
        f"{unchecked.p50_us:.1f} µs without the schema)"
    )
    return {
        "bundle": str(BUNDLE),
        "policies": len(bundle.policies),
        "buckets": len(bundle.index.buckets),
        "requests": len(requests),
        "rejected_requests": rejected,
        "agreeing_with_expectations": agreeing,
        "iterations": iterations,
        "mean_policies_evaluated": round(sum(evaluated) / len(evaluated), 2),
        "decide": as_dict(hit),
        "decide_miss": as_dict(miss),
        "memo_hits_counted": hits,
        "first_sight": as_dict(cold),
        "cedarpy_alone": as_dict(floor),
        "cedarpy_without_schema": as_dict(unchecked),
        "decisions_per_second": round(per_second),
        "target_p50_us": TARGET_P50_US,
        "target_met": met,
        "target_met_on_miss": miss.p50_us <= TARGET_P50_US,
    }
