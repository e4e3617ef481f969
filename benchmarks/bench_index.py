"""How decision cost grows with the policy count: indexed engine versus plain cedarpy.

For each N, a generated bundle (:mod:`benchmarks.generate`) is loaded with
``PolicyBundle.from_files`` (timed), the engine is warmed up on the request list, and
then every request is timed individually through

* **indexed**: ``Engine.decide`` (untyped-namespace request, as a client sends it);
* **plain**: ``cedarpy.is_authorized(request, policy_set, entities, schema=schema)`` with
  one ``cedarpy.PolicySet`` pre-parsed from the concatenated text of all N policies,
  the bundle's pre-parsed entities and schema, and fully qualified request types.

Every request's indexed decision and determining policies must equal plain cedarpy's
(plain reasons are mapped to policy ids through their ``@id`` annotations).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cedarpy

from benchmarks._common import WarmUp, as_dict, summarize, table, time_calls, warm_up
from benchmarks.generate import NAMESPACE, GeneratedBundle, generate
from engine import Decision, Engine, PolicyBundle, Request
from engine._core.evaluate import _prepare
from engine._core.index import MERGED_CACHE_SIZE

SIZES = (100, 1_000, 10_000)
REQUESTS = 2_000
QUICK_REQUESTS = 300
WIDE_SIZE = 10_000
WIDE_REQUESTS = 20_000
QUICK_WIDE_REQUESTS = 10_000
INDEXED_PASSES = 5
QUICK_INDEXED_PASSES = 2
PLAIN_WARM_UP = 20
NOW = datetime.now(UTC)
TARGET_GROWTH = 2.0


def qualified(request: dict[str, Any]) -> dict[str, Any]:
    """The request with fully qualified entity types, for plain cedarpy."""
    result = dict(request)
    for part in ("principal", "action", "resource"):
        uid = request[part]
        result[part] = {"type": f"{NAMESPACE}::{uid['type']}", "id": uid["id"]}
    return result


def _plain_reasons(result: cedarpy.AuthzResult) -> set[str]:
    """Determining policies of a plain result, as their ``@id`` annotations."""
    by_reason: dict[str, str] = result.diagnostics.id_annotations_by_reason
    reasons = set(result.diagnostics.reasons)
    missing = reasons - by_reason.keys()
    if missing:
        raise AssertionError(f"plain reasons without an @id annotation: {sorted(missing)}")
    return {by_reason[reason] for reason in reasons}


def compare(decisions: Sequence[Decision], plain: Sequence[cedarpy.AuthzResult]) -> None:
    """Raise unless indexed and plain agree exactly on every request."""
    problems = []
    for index, (decision, result) in enumerate(zip(decisions, plain, strict=True)):
        expected = "allow" if result.decision is cedarpy.Decision.Allow else "deny"
        reasons = _plain_reasons(result)
        if decision.decision != expected or set(decision.reasons) != reasons:
            problems.append(
                f"request {index}: indexed {decision.decision} {sorted(decision.reasons)}, "
                f"plain {expected} {sorted(reasons)}"
            )
        if decision.errors or result.diagnostics.errors:
            problems.append(
                f"request {index}: evaluation errors (indexed {list(decision.errors)}, "
                f"plain {result.diagnostics.errors})"
            )
    if problems:
        raise AssertionError(f"{len(problems)} disagreements, e.g.\n" + "\n".join(problems[:10]))


@dataclass(slots=True)
class Loaded:
    """One generated bundle, loaded and warmed up, and what its phases measured."""

    count: int
    generated: GeneratedBundle
    bundle: PolicyBundle
    engine: Engine
    requests: list[Request]
    load_s: float
    warm: WarmUp
    indexed_ns: list[int] = field(default_factory=list)


def load(count: int, requests: int) -> Loaded:
    """Generate and load (timed) a bundle of ``count`` policies; warm its engine up."""
    generated = generate(count, requests=requests)
    started = time.perf_counter()
    bundle = PolicyBundle.from_files(generated.files, source=f"<generated {count}>")
    load_s = time.perf_counter() - started
    engine = Engine(bundle, memo_entries=0)  # the index is measured: no decision memo
    typed = [Request.model_validate(r) for r in generated.requests]
    warm = warm_up(engine, typed, NOW)
    return Loaded(count, generated, bundle, engine, typed, load_s, warm)


def time_indexed(loaded: Loaded) -> None:
    """One timed pass of ``Engine.decide`` over the request list."""
    engine, requests = loaded.engine, loaded.requests
    samples, _ = time_calls(lambda i: engine.decide(requests[i], now=NOW), range(len(requests)))
    loaded.indexed_ns.extend(samples)


def time_plain(loaded: Loaded) -> tuple[list[int], list[cedarpy.AuthzResult], float]:
    """One timed pass of plain cedarpy over all N policies; durations, results, parse s."""
    started = time.perf_counter()
    policy_set = cedarpy.PolicySet.from_str("\n".join(loaded.generated.policy_texts))
    parse_s = time.perf_counter() - started
    cedar_requests = [qualified(r) for r in loaded.generated.requests]
    entities, schema = loaded.bundle.entities, loaded.bundle.schema
    results: list[cedarpy.AuthzResult] = []

    def call(i: int) -> None:
        results.append(
            cedarpy.is_authorized(cedar_requests[i], policy_set, entities, schema=schema)
        )

    for request in cedar_requests[:PLAIN_WARM_UP]:
        cedarpy.is_authorized(request, policy_set, entities, schema=schema)
    samples, _ = time_calls(call, range(len(cedar_requests)))
    return samples, results, parse_s


def figures(loaded: Loaded) -> dict[str, Any]:
    """Time plain cedarpy, cross-check it against the engine, and gather the figures."""
    plain_ns, plain, parse_s = time_plain(loaded)
    decisions = [loaded.engine.decide(r, now=NOW) for r in loaded.requests]
    compare(decisions, plain)
    buckets = [len(_key(loaded.bundle, r)) for r in loaded.requests]
    return {
        "policies": loaded.count,
        "requests": len(loaded.requests),
        "allowed": sum(d.decision == "allow" for d in decisions),
        "load_s": round(loaded.load_s, 3),
        "plain_parse_s": round(parse_s, 3),
        "buckets": len(loaded.bundle.index.buckets),
        "mean_buckets_reached": round(sum(buckets) / len(buckets), 2),
        "multi_bucket_keys": loaded.warm.multi_bucket_keys,
        "warm_up_s": round(loaded.warm.seconds, 2),
        "mean_policies_evaluated": round(
            sum(d.policies_evaluated for d in decisions) / len(decisions), 2
        ),
        "indexed_first_sight": as_dict(summarize(loaded.warm.cold_ns)),
        "indexed": as_dict(summarize(loaded.indexed_ns)),
        "plain": as_dict(summarize(plain_ns)),
        "agree": True,
    }


def _key(bundle: PolicyBundle, request: Request) -> tuple[int, ...]:
    return _prepare(bundle, request).buckets


def measure_wide(count: int, requests: int) -> dict[str, Any]:
    """Steady traffic whose bucket combinations outnumber the merged-slice cache.

    A fresh bundle gets the stream twice, back to back as continuous traffic: the first
    pass untimed, the second timed call by call. No pause lets background work finish,
    because steady traffic gives it none.
    """
    generated = generate(count, requests=requests)
    bundle = PolicyBundle.from_files(generated.files, source=f"<generated {count}>")
    engine = Engine(bundle, memo_entries=0)  # the stream's second pass would be all hits
    typed = [Request.model_validate(r) for r in generated.requests]
    keys = {_key(bundle, r) for r in typed}
    multi = sum(len(key) > 1 for key in keys)
    for request in typed:
        engine.decide(request, now=NOW)
    samples, wall = time_calls(lambda i: engine.decide(typed[i], now=NOW), range(len(typed)))
    return {
        "policies": count,
        "requests": len(typed),
        "multi_bucket_keys": multi,
        "merged_cache_size": MERGED_CACHE_SIZE,
        "indexed": as_dict(summarize(samples)),
        "decisions_per_second": round(len(typed) / wall),
    }


def run(*, quick: bool = False) -> dict[str, Any]:
    """Run the benchmark for every size, print its table, return its figures."""
    requests = QUICK_REQUESTS if quick else REQUESTS
    passes = QUICK_INDEXED_PASSES if quick else INDEXED_PASSES
    bundles = []
    for count in SIZES:
        loaded = load(count, requests)
        bundles.append(loaded)
        print(
            f"  N={count:,}: loaded in {loaded.load_s:.2f} s, "
            f"{len(loaded.bundle.index.buckets):,} buckets, warm-up {loaded.warm.seconds:.1f} s "
            f"({loaded.warm.multi_bucket_keys:,} merged slices)",
            flush=True,
        )
    for _ in range(passes):  # round-robin, so load on the machine hits every N alike
        for loaded in bundles:
            time_indexed(loaded)
    results = []
    for loaded in bundles:
        result = figures(loaded)
        results.append(result)
        print(
            f"  N={loaded.count:,}: plain cedarpy timed; {result['allowed']:,}/"
            f"{result['requests']:,} allowed; indexed = plain on every request",
            flush=True,
        )
    del bundles, loaded
    rows = [
        (
            r["policies"],
            r["load_s"],
            r["indexed"]["p50_us"],
            r["indexed"]["p99_us"],
            r["indexed_first_sight"]["p50_us"],
            r["indexed_first_sight"]["p99_us"],
            r["plain"]["p50_us"],
            r["plain"]["p99_us"],
            r["mean_buckets_reached"],
            r["mean_policies_evaluated"],
        )
        for r in results
    ]
    print(
        table(
            (
                "N",
                "load s",
                "indexed p50",
                "p99",
                "1st-sight p50",
                "p99",
                "plain p50",
                "p99",
                "buckets/req",
                "policies/req",
            ),
            rows,
        )
    )
    first, last = results[0], results[-1]
    growth_indexed = last["indexed"]["p50_us"] / first["indexed"]["p50_us"]
    growth_plain = last["plain"]["p50_us"] / first["plain"]["p50_us"]
    met = growth_indexed <= TARGET_GROWTH
    span = f"p50({last['policies']:,}) / p50({first['policies']:,})"
    print(f"latencies in µs; {requests:,} requests per N, indexed timed over {passes} pass(es)")
    print(f"growth {span}: indexed {growth_indexed:.2f}x, plain {growth_plain:.1f}x")
    print(
        f"target: indexed growth ≤ {TARGET_GROWTH:.0f}x — {'MET' if met else 'NOT MET'} "
        f"({growth_indexed:.2f}x)"
    )
    wide = measure_wide(WIDE_SIZE, QUICK_WIDE_REQUESTS if quick else WIDE_REQUESTS)
    same = next(r for r in results if r["policies"] == WIDE_SIZE)
    _print_wide(wide, first["indexed"]["p50_us"], same["indexed"]["p50_us"])
    return {
        "sizes": results,
        "wide_stream": wide,
        "requests_per_size": requests,
        "indexed_passes": passes,
        "growth_indexed": round(growth_indexed, 2),
        "growth_plain": round(growth_plain, 1),
        "target_growth": TARGET_GROWTH,
        "target_met": met,
    }


def _print_wide(wide: dict[str, Any], warm_small_us: float, warm_same_us: float) -> None:
    """The wide-stream figures, against the warm p50 of the smallest and the same N."""
    stats = wide["indexed"]
    print(
        f"wide stream, N={wide['policies']:,}: {wide['requests']:,} requests reaching "
        f"{wide['multi_bucket_keys']:,} multi-bucket combinations "
        f"(merged-slice cache holds {wide['merged_cache_size']:,}); second pass, indexed:"
    )
    print(
        f"  p50 {stats['p50_us']:.1f}  p90 {stats['p90_us']:.1f}  "
        f"p99 {stats['p99_us']:,.1f}  mean {stats['mean_us']:.1f} µs, "
        f"{wide['decisions_per_second']:,} decisions/s"
    )
    print(
        f"  p50 / warm p50 of the same N: {stats['p50_us'] / warm_same_us:.2f}x; "
        f"/ warm p50 of N={SIZES[0]:,}: {stats['p50_us'] / warm_small_us:.2f}x"
    )
