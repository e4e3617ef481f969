"""The Cerbos comparison (benchmarks/bench_cerbos.py): its mirror of the default bundle
decides as Docket does, and it refuses to time when the two do not agree."""

from __future__ import annotations

import pytest

from attestation._ca import CertificateAuthority
from benchmarks import bench_cerbos
from benchmarks._load import workdir
from benchmarks.bench_grpc import docket_server


@pytest.mark.e2e
def test_the_cerbos_mirror_decides_every_data_case_as_docket_serve_does() -> None:
    """Every Data case of policies/tests/access.yaml, asked of a real `docket serve` (an
    attested device's posture in a device token) and of Cerbos with the mirror policies,
    gets the case's expected decision from both."""
    binary, reason = bench_cerbos.cerbos_binary()
    if binary is None:
        pytest.skip(reason)
    with (
        workdir("docket-test-cerbos-") as tmp,
        bench_cerbos.cerbos_server(binary, tmp / "cerbos-audit") as (cerbos, _pid),
        docket_server(tmp / "data", workers=1) as docket,
    ):
        ca = CertificateAuthority.load(tmp / "data" / "ca")
        rows = bench_cerbos.agreement(docket.grpc, cerbos, ca)
    assert len(rows) == len(bench_cerbos.data_cases())
    assert [row for row in rows if not row.agrees] == []


AGREE = bench_cerbos.Agreement("a", "allow", "allow", "allow")


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(bench_cerbos.Agreement("b", "deny", "allow", "deny"), id="cerbos-differs"),
        pytest.param(bench_cerbos.Agreement("b", "allow", "deny", "deny"), id="docket-differs"),
        pytest.param(
            bench_cerbos.Agreement("b", "error INVALID_ARGUMENT", "deny", "deny"),
            id="docket-refuses",
        ),
        pytest.param(bench_cerbos.Agreement("b", "allow", "allow", "deny"), id="both-wrong"),
    ],
)
def test_one_case_decided_otherwise_stops_the_benchmark_before_timing(
    row: bench_cerbos.Agreement,
) -> None:
    with pytest.raises(RuntimeError, match="disagree on 1 of 2 cases, nothing timed: b "):
        bench_cerbos.require_agreement([AGREE, row])
    assert bench_cerbos.agreement_table([AGREE, row]).splitlines()[-1].endswith("NO")


def test_cases_decided_alike_are_timed() -> None:
    bench_cerbos.require_agreement([AGREE, bench_cerbos.Agreement("b", "deny", "deny", "deny")])


def test_a_check_resources_request_holds_each_resource_with_its_action_in_order() -> None:
    entries = [({"kind": "data", "id": f"r{i}"}, action) for i, action in enumerate("abc")]
    body = bench_cerbos.check_resources({"id": "alice", "roles": ["user"]}, entries)
    message = bench_cerbos._new("cerbos.request.v1.CheckResourcesRequest")
    message.ParseFromString(body)
    assert [(e.resource.id, list(e.actions)) for e in message.resources] == [
        ("r0", ["a"]),
        ("r1", ["b"]),
        ("r2", ["c"]),
    ]


def test_effects_are_read_per_resource_in_order_and_a_missing_result_is_refused() -> None:
    reply = bench_cerbos._new("cerbos.response.v1.CheckResourcesResponse")
    for index, effect in enumerate((1, 2, 1)):
        result = reply.results.add()
        result.resource.id = f"r{index}"
        result.actions[f"act{index}"] = effect
    body = reply.SerializeToString()
    assert bench_cerbos.effects_of(body, ["act0", "act1", "act2"]) == [
        "EFFECT_ALLOW",
        "EFFECT_DENY",
        "EFFECT_ALLOW",
    ]
    with pytest.raises(RuntimeError, match="3 results, expected 4"):
        bench_cerbos.effects_of(body, ["act0", "act1", "act2", "act3"])


def test_a_batch_goes_over_every_data_resource_and_action_before_repeating() -> None:
    data = [name for kind, name in bench_cerbos._entities() if kind == "Data"]
    pairs = bench_cerbos.batch_pairs(100)
    every = len(data) * len(bench_cerbos.BATCH_ACTIONS)
    assert pairs[: len(data)] == [(name, "read") for name in data]
    assert len(set(pairs[:every])) == every
    assert pairs[every:] == pairs[: 100 - every]
