"""The side-by-side benchmark (benchmarks/bench_serving.py): its arithmetic, the medians
over rounds, and how each target is judged and printed. Nothing here is timed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from benchmarks import bench_serving as bs
from benchmarks._load import LoadResult, call
from benchmarks.bench_grpc import AUTHORIZE


def sample(server: str, round_: int, calls: float, **figures: float | None) -> bs.Sample:
    return bs.Sample(
        server=server,
        load="256 in flight",
        round=round_,
        calls_per_s=calls,
        decisions_per_call=1,
        cpu_us=figures.get("cpu_us"),
        per_commit=figures.get("per_commit"),
        p50_ms=figures.get("p50_ms") or 1.0,
        p99_ms=figures.get("p99_ms") or 2.0,
    )


@pytest.mark.parametrize(
    ("cpu_seconds", "calls", "expected"),
    [
        pytest.param(2.0, 4000, 500.0, id="two-core-seconds-over-4000-calls"),
        pytest.param(0.25, 1000, 250.0, id="quarter-second"),
        pytest.param(None, 1000, None, id="cpu-unreadable"),
        pytest.param(1.0, 0, None, id="no-call-answered"),
    ],
)
def test_cpu_per_call_is_the_process_group_cpu_delta_over_the_calls(
    cpu_seconds: float | None, calls: int, expected: float | None
) -> None:
    assert bs.cpu_us_per_call(cpu_seconds, calls) == expected


def test_the_side_by_side_figure_is_the_median_of_the_rounds() -> None:
    rounds = [
        sample("Docket", 1, 1000, cpu_us=900, per_commit=9, p99_ms=5),
        sample("Docket", 2, 3000, cpu_us=700, per_commit=12, p99_ms=50),
        sample("Docket", 3, 2000, cpu_us=800, per_commit=10, p99_ms=7),
        sample("trivial grpcio", 1, 9000, cpu_us=250),
    ]
    docket, trivial = bs.medians(rounds)
    assert (docket.server, docket.round) == ("Docket", 0)
    assert (docket.calls_per_s, docket.cpu_us, docket.per_commit) == (2000, 800, 10)
    assert docket.p99_ms == 7
    assert (trivial.calls_per_s, trivial.cpu_us, trivial.per_commit) == (9000, 250, None)


def test_a_figure_missing_in_one_round_has_no_median() -> None:
    rounds = [sample("x", 1, 10, cpu_us=5), sample("x", 2, 10, cpu_us=None)]
    assert bs.medians(rounds)[0].cpu_us is None


@pytest.mark.parametrize(
    ("mine", "theirs", "verdict", "figure"),
    [
        pytest.param(2500.0, 1000.0, "MET", "Docket 2,500/s, previous 1,000/s: 2.50x", id="at"),
        pytest.param(2400.0, 1000.0, "NOT MET", "Docket 2,400/s, previous 1,000/s: 2.40x",
                     id="below"),
        pytest.param(2400.0, None, "NOT JUDGED", "previous SKIPPED: no git", id="skipped"),
    ],
)  # fmt: skip
def test_a_ratio_target_is_judged_against_the_other_server_of_the_same_run(
    mine: float, theirs: float | None, verdict: str, figure: str
) -> None:
    target = bs.ratio_target(
        "Authorize throughput", 2.5, ("Docket", mine), ("previous", theirs), "/s",
        unjudged="previous SKIPPED: no git",
    )  # fmt: skip
    assert (target.verdict, target.figure) == (verdict, figure)
    assert bs.target_line(target) == (
        f"target: Authorize throughput ≥ 2.5x previous — {verdict} ({figure})"
    )


def test_a_cost_target_is_met_at_or_under_its_bound() -> None:
    met = bs.ratio_target(
        "CPU per call", 2.5, ("Docket", 625.0), ("trivial", 250.0), " µs", cost=True
    )
    over = bs.ratio_target(
        "CPU per call", 2.5, ("Docket", 626.0), ("trivial", 250.0), " µs", cost=True
    )
    assert (met.verdict, over.verdict) == ("MET", "NOT MET")
    assert met.figure == "Docket 625 µs, trivial 250 µs: 2.50x"
    assert (
        bs.target_line(met)
        == "target: CPU per call ≤ 2.5x trivial — MET (Docket 625 µs, trivial 250 µs: 2.50x)"
    )


def test_a_target_without_its_own_figure_is_not_judged() -> None:
    target = bs.ratio_target("entries", 8, ("Docket", None), ("", 1.0), "")
    assert (target.verdict, target.figure) == ("NOT JUDGED", "a figure is missing")


def test_each_rounds_ratio_is_of_the_two_servers_in_that_round() -> None:
    # The run at 09:30 UTC on 2026-12-05: met by the medians, not in every round.
    rounds = [
        sample("Docket", 1, 2577), sample("previous", 1, 922),
        sample("Docket", 2, 2832), sample("previous", 2, 1360),
        sample("Docket", 3, 3186), sample("previous", 3, 1049),
        sample("Cerbos", 1, 6680),
        replace(sample("Docket", 4, 9000), load="x10"),
    ]  # fmt: skip
    ratios = bs.round_ratios(rounds, "256 in flight", "Docket", "previous", lambda s: s.calls_per_s)
    assert [round(r, 2) for r in ratios] == [2.80, 2.08, 3.04]
    target = bs.ratio_target(
        "throughput", 2.5, ("Docket", 2832.0), ("previous", 1049.0), "/s", rounds=ratios
    )
    assert (target.verdict, target.figure) == (
        "MET",
        "Docket 2,832/s, previous 1,049/s: 2.70x; by round 2.80x, 2.08x, 3.04x: met in 2 of 3",
    )


def test_a_round_without_both_figures_or_with_failed_calls_has_no_ratio() -> None:
    rounds = [
        sample("Docket", 1, 2000, cpu_us=600), sample("trivial", 1, 6000, cpu_us=240),
        sample("Docket", 2, 2000, cpu_us=None), sample("trivial", 2, 6000, cpu_us=240),
        replace(sample("Docket", 3, 2000, cpu_us=500), answered=False),
        sample("trivial", 3, 6000, cpu_us=250),
        sample("Docket", 4, 2000, cpu_us=700),  # the other server left the run
    ]  # fmt: skip
    assert bs.round_ratios(rounds, "256 in flight", "Docket", "trivial", lambda s: s.cpu_us) == [
        2.5
    ]
    one = bs.ratio_target(
        "CPU", 2.5, ("Docket", 600.0), ("trivial", 240.0), " µs", cost=True, rounds=[2.5]
    )
    assert one.figure == "Docket 600 µs, trivial 240 µs: 2.50x"  # one round: nothing to add
    two = bs.ratio_target(
        "CPU", 2.5, ("Docket", 600.0), ("trivial", 240.0), " µs", cost=True, rounds=[2.5, 2.6]
    )
    assert two.figure.endswith("; by round 2.50x, 2.60x: met in 1 of 2")


@pytest.mark.parametrize(
    ("p99", "answered", "verdict"),
    [
        pytest.param(9.9, 0.99, "MET", id="sustained-and-fast"),
        pytest.param(10.1, 0.99, "NOT MET", id="slow"),
        pytest.param(3.0, 0.90, "NOT MET", id="rate-not-sustained"),
    ],
)
def test_p99_at_half_throughput_counts_only_when_the_rate_is_sustained(
    p99: float, answered: float, verdict: str
) -> None:
    target = bs.latency_target(offered=1000, runs=[(p99, answered * 1000)])
    assert target.verdict == verdict
    assert target.figure.startswith(f"p99 {p99:.2f} ms at {answered * 1000:,.0f}/s of 1,000/s")
    assert "by round" not in target.figure


def test_p99_at_half_throughput_is_the_median_of_the_rounds_each_shown() -> None:
    """One fixed-rate run a round, as the other loads: the verdict is the median's, and
    each round's p99 and how many rounds met the target are printed."""
    target = bs.latency_target(offered=1000, runs=[(12.0, 1000), (8.0, 1000), (9.5, 990)])
    assert target.verdict == "MET"
    assert target.figure == (
        "p99 9.50 ms at 1,000/s of 1,000/s offered; by round 12.00, 8.00, 9.50 ms: met in 2 of 3"
    )
    slow = bs.latency_target(offered=1000, runs=[(12.0, 1000), (8.0, 900), (11.0, 1000)])
    assert (slow.verdict, slow.figure.rsplit(": ", 1)[-1]) == ("NOT MET", "met in 0 of 3")


def test_a_fixed_rate_round_with_failed_calls_leaves_the_p99_unjudged() -> None:
    # 10,000 calls in 10 s, each answered in 5 ms, every message byte there.
    good = LoadResult(1, 16, 10.0, 10_000, (5_000,) * 10_000, 0, 1_000, 1_000)
    failed = replace(good, failed=300)
    assert bs.rate_target(1000, [good, good]).verdict == "MET"
    target = bs.rate_target(1000, [good, failed, good])
    assert (target.verdict, target.figure) == ("NOT JUDGED", "calls failed during a run")


def test_the_table_shows_a_skipped_server_and_every_round() -> None:
    rounds = [sample("Docket", 1, 1000, cpu_us=900.4, per_commit=9.26)]
    text = bs.samples_table(rounds, skipped={"Cerbos 0.51.0": "npm not found"})
    header, _rule, docket, cerbos = text.splitlines()
    assert header.split()[:3] == ["server", "load", "round"]
    assert docket.split()[-8:] == ["1", "1,000", "1,000", "900", "9.3", "1.00", "2.00", "yes"]
    assert "SKIPPED" in cerbos


@pytest.mark.parametrize(
    ("per_commit", "verdict"),
    [
        pytest.param(8.0, "MET", id="eight"),
        pytest.param(7.9, "NOT MET", id="under"),
        pytest.param(None, "NOT JUDGED", id="build-without-the-metric"),
    ],
)
def test_entries_per_commit_at_depth(per_commit: float | None, verdict: str) -> None:
    assert bs.entries_target(per_commit).verdict == verdict


def test_the_trivial_server_answers_each_body_with_the_bytes_recorded_for_it(
    tmp_path: Path,
) -> None:
    pairs = {b"\x0a\x01a": b"\x08\x01", b"\x0a\x01b": b"\x08\x02 answer"}
    with bs.trivial_server(pairs, tmp_path) as (address, _pgid):
        answers = [call(address, AUTHORIZE, body) for body in pairs]
        unknown = call(address, AUTHORIZE, b"\x0a\x01c")
    assert [(a.code, a.message) for a in answers] == [
        (grpc.StatusCode.OK, reply) for reply in pairs.values()
    ]
    assert unknown.code != grpc.StatusCode.OK


def test_a_round_whose_calls_failed_marks_the_median_and_is_shown() -> None:
    failed = replace(sample("Docket", 2, 9000, cpu_us=100), answered=False)
    rounds = [sample("Docket", 1, 1000, cpu_us=900), failed]
    (median,) = bs.medians(rounds)
    assert not median.answered
    text = bs.samples_table([*rounds, median], skipped={})
    assert [line.split()[-1] for line in text.splitlines()[2:]] == ["yes", "NO", "NO"]


def test_no_target_is_judged_on_a_figure_from_failed_calls() -> None:
    good = sample("trivial", 1, 5000, cpu_us=250)
    bad = replace(sample("Docket", 1, 9000, cpu_us=100), answered=False)
    figures = bs.medians([good, bad])
    assert bs.figure_of(figures, "trivial", "256 in flight", lambda s: s.cpu_us) == (250, "")
    assert bs.figure_of(figures, "Docket", "256 in flight", lambda s: s.cpu_us) == (
        None,
        "calls failed in a round of Docket",
    )
    assert bs.figure_of(figures, "Cerbos", "256 in flight", lambda s: s.cpu_us) == (
        None,
        "no figure for Cerbos",
    )
    target = bs.ratio_target(
        "CPU", 2.5, ("Docket", None), ("trivial", 250.0), " µs", cost=True,
        unjudged="calls failed in a round of Docket",
    )  # fmt: skip
    assert (target.verdict, target.figure) == ("NOT JUDGED", "calls failed in a round of Docket")


def _peer(name: str, renew: Any) -> bs.Peer:
    return bs.Peer(name, "127.0.0.1:1", 1, AUTHORIZE, [], [], renew=renew)


def _fails() -> None:
    raise RuntimeError("/docket.v1.Decisions/Authorize: gRPC status UNAVAILABLE: log")


def test_the_previous_build_failing_its_renewal_is_left_out_with_a_warning(tmp_path: Path) -> None:
    renewed: list[str] = []
    bench = bs.Bench(bs.QUICK_TIMES, 1, tmp_path)
    bench.up = {
        bs.DOCKET: _peer(bs.DOCKET, lambda: renewed.append(bs.DOCKET)),
        bs.PREVIOUS: _peer(bs.PREVIOUS, _fails),
    }
    bs.renew(bench)
    assert list(bench.up) == [bs.DOCKET]
    assert renewed == [bs.DOCKET]
    assert len(bench.warnings) == 1
    assert bench.warnings[0].startswith(f"{bs.PREVIOUS} no longer answers the mix OK")
    assert "UNAVAILABLE" in bench.warnings[0]


def test_this_build_failing_its_renewal_ends_the_run(tmp_path: Path) -> None:
    bench = bs.Bench(bs.QUICK_TIMES, 1, tmp_path)
    bench.up = {bs.DOCKET: _peer(bs.DOCKET, _fails)}
    with pytest.raises(RuntimeError, match="UNAVAILABLE"):
        bs.renew(bench)
    assert list(bench.up) == [bs.DOCKET]


def _restartable(bench: bs.Bench, renew: Any = None) -> list[bs.Peer]:
    """The previous build registered to start again: each start is a new peer, listed."""
    started: list[bs.Peer] = []

    def start() -> bs.Peer:
        started.append(_peer(bs.PREVIOUS, renew or (lambda: None)))
        return started[-1]

    bench.restart[bs.PREVIOUS] = start
    return started


def test_the_previous_build_failing_its_renewal_is_started_again_then_left_out(
    tmp_path: Path,
) -> None:
    """Its log refusing for good (the previous build's false truncation alarm) costs a
    restart on a fresh data directory, at most RESTARTS a run; then it is left out."""
    bench = bs.Bench(bs.QUICK_TIMES, 1, tmp_path)
    bench.up = {bs.DOCKET: _peer(bs.DOCKET, lambda: None), bs.PREVIOUS: _peer(bs.PREVIOUS, _fails)}
    started = _restartable(bench, renew=_fails)
    for _ in range(bs.RESTARTS):
        bs.renew(bench)
        assert bench.up[bs.PREVIOUS] is started[-1]
    bs.renew(bench)
    assert list(bench.up) == [bs.DOCKET]
    assert len(started) == bench.restarts == bs.RESTARTS
    assert [w.rsplit("; ", 1)[-1] for w in bench.warnings] == [
        *(f"started again on a fresh data directory (restart {n} of at most 2 a run)"
          for n in (1, 2)),
        "left out of the rest of the run",
    ]  # fmt: skip
    assert all("UNAVAILABLE" in w for w in bench.warnings)


def test_a_previous_build_that_cannot_start_again_is_left_out(tmp_path: Path) -> None:
    bench = bs.Bench(bs.QUICK_TIMES, 1, tmp_path)
    bench.up = {bs.PREVIOUS: _peer(bs.PREVIOUS, _fails)}

    def start() -> bs.Peer:
        raise RuntimeError("docket serve exited with 1\nmore")

    bench.restart[bs.PREVIOUS] = start
    bs.renew(bench)
    assert bench.up == {}
    assert bench.warnings[-1].endswith(
        "; could not be started again (docket serve exited with 1); left out of the rest of the run"
    )


def _measured(outcomes: list[bool]) -> Any:
    """A Bench.measure that records one sample per call, answered as ``outcomes`` say."""

    def measure(self: bs.Bench, peer: bs.Peer, load: str, round_: int, *_: Any, **__: Any) -> None:
        self.samples.append(
            replace(sample(peer.name, round_, 100.0), load=load, answered=outcomes.pop(0))
        )

    return measure


def test_a_run_of_the_previous_build_with_failed_calls_is_measured_again_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = bs.Bench(bs.QUICK_TIMES, 1, tmp_path)
    bench.up = {bs.PREVIOUS: _peer(bs.PREVIOUS, lambda: None)}
    started = _restartable(bench)
    monkeypatch.setattr(bs.Bench, "measure", _measured([False, True]))
    bs.measure_mix(bench, bs.PREVIOUS, bs.DEEP, 2, bs.DEEP_STREAMS)
    assert [(s.server, s.load, s.round, s.answered) for s in bench.samples] == [
        (bs.PREVIOUS, bs.DEEP, 2, True)
    ]
    assert bench.up[bs.PREVIOUS] is started[0]
    assert bench.warnings[0].startswith(f"{bs.PREVIOUS} had calls fail at {bs.DEEP}, round 2")

    # Failing again after its restart: that run stays, failed (one restart per load).
    monkeypatch.setattr(bs.Bench, "measure", _measured([False, False]))
    bs.measure_mix(bench, bs.PREVIOUS, bs.SHALLOW, 3, 1)
    assert [(s.load, s.answered) for s in bench.samples[1:]] == [(bs.SHALLOW, False)]
    assert (len(started), bench.up[bs.PREVIOUS]) == (2, started[1])


@pytest.mark.parametrize("name", [bs.DOCKET, bs.PREVIOUS])
def test_failed_calls_are_kept_when_there_is_no_restart(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This build is never started again (its failure is a finding), nor the previous
    one twice for one load, nor past the run's restarts."""
    bench = bs.Bench(bs.QUICK_TIMES, 1, tmp_path)
    bench.up = {name: _peer(name, lambda: None)}
    _restartable(bench)
    bench.restarts = bs.RESTARTS
    monkeypatch.setattr(bs.Bench, "measure", _measured([False, False]))
    bs.measure_mix(bench, name, bs.DEEP, 1, bs.DEEP_STREAMS)
    assert [s.answered for s in bench.samples] == [False]
    assert list(bench.up) == ([name] if name == bs.DOCKET else [])
