"""The asyncio client: the same calls, retries and errors as the blocking one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import pytest
from sdk_fakes import DENIED_PRINCIPAL, FakeDecisions, Running, unused_target

from sdk import AsyncDecisionClient, InvalidRequestError, OverloadedError, TransportError

ALICE = {"type": "User", "id": "alice"}
MALLORY = {"type": "User", "id": DENIED_PRINCIPAL}
RECORDS = {"type": "Data", "id": "patient-records-eu"}

T = TypeVar("T")


def run(target: str, use: Callable[[AsyncDecisionClient], Awaitable[T]], **settings: float) -> T:
    """Run ``use`` with a client made and closed inside one event loop."""

    async def main() -> T:
        async with AsyncDecisionClient(target, initial_backoff=0.01, **settings) as client:  # type: ignore[arg-type]
            return await use(client)

    return asyncio.run(main())


def test_authorize_allow_and_deny(docket: Running, fake: FakeDecisions) -> None:
    async def use(client: AsyncDecisionClient) -> list[str]:
        allow = await client.authorize(ALICE, "read", RECORDS, context={"n": 1})
        deny = await client.authorize({"principal": MALLORY, "action": "read", "resource": RECORDS})
        return [allow.decision, deny.decision, deny.decision_id]

    assert run(docket.target, use) == ["allow", "deny", "dec-2"]
    assert fake.calls("Authorize")[0].context.fields["n"].number_value == 1


def test_batch_place_reload_and_health(docket: Running) -> None:
    async def use(client: AsyncDecisionClient) -> tuple[object, ...]:
        batch = await client.authorize_batch(
            [{"principal": p, "action": "read", "resource": RECORDS} for p in (MALLORY, ALICE)]
        )
        placement = await client.place("web", residency=("eu",))
        reload = await client.reload_bundle()
        return (
            [r.allowed for r in batch],
            placement.allowed[0].site,
            reload.changed,
            await client.health(),
            await client.health("no.such.Service"),
        )

    assert run(docket.target, use) == (
        [False, True],
        "eu-west-cloud",
        True,
        "SERVING",
        "SERVICE_UNKNOWN",
    )


def test_client_side_refusals_send_nothing(docket: Running, fake: FakeDecisions) -> None:
    async def use(client: AsyncDecisionClient) -> None:
        with pytest.raises(InvalidRequestError, match="is a float"):
            await client.authorize(ALICE, "read", RECORDS, context={"x": 1.5})
        with pytest.raises(InvalidRequestError, match="at most 1000"):
            await client.authorize_batch(
                [{"principal": ALICE, "action": "read", "resource": RECORDS}] * 1001
            )

    run(docket.target, use)
    assert fake.received == []


def test_unavailable_is_retried(docket: Running, fake: FakeDecisions) -> None:
    fake.unavailable_first = 2

    async def use(client: AsyncDecisionClient) -> str:
        return (await client.authorize(ALICE, "read", RECORDS)).decision_id

    assert run(docket.target, use, retries=2) == "dec-3"
    assert len(fake.received) == 3


def test_errors_are_mapped_after_the_retries(docket: Running, fake: FakeDecisions) -> None:
    fake.fail_with = (grpc.StatusCode.RESOURCE_EXHAUSTED, "audit queue full")

    async def use(client: AsyncDecisionClient) -> None:
        await client.authorize(ALICE, "read", RECORDS)

    with pytest.raises(
        OverloadedError, match="after 2 attempts: RESOURCE_EXHAUSTED: audit queue full"
    ) as caught:
        run(docket.target, use, retries=1)
    assert isinstance(caught.value.__cause__, grpc.RpcError)
    assert len(fake.received) == 2


def test_reload_bundle_is_never_retried(docket: Running, fake: FakeDecisions) -> None:
    fake.unavailable_first = 1

    async def use(client: AsyncDecisionClient) -> None:
        await client.reload_bundle()

    with pytest.raises(TransportError, match=r"ReloadBundle on \S+ failed: UNAVAILABLE"):
        run(docket.target, use)
    assert len(fake.received) == 1


def test_the_deadline_is_not_retried(docket: Running, fake: FakeDecisions) -> None:
    fake.delay = 5.0

    async def use(client: AsyncDecisionClient) -> None:
        await client.authorize(ALICE, "read", RECORDS)

    with pytest.raises(TransportError, match="DEADLINE_EXCEEDED"):
        run(docket.target, use, timeout=0.2)
    assert len(fake.received) == 1


def test_an_unreachable_docket_is_a_transport_error() -> None:
    async def use(client: AsyncDecisionClient) -> None:
        await client.health()

    with pytest.raises(TransportError, match="after 2 attempts: UNAVAILABLE"):
        run(unused_target(), use, retries=1, timeout=0.5)


def test_a_client_made_outside_the_loop_connects_inside_it(docket: Running) -> None:
    client = AsyncDecisionClient(docket.target)

    async def main() -> str:
        try:
            return (await client.authorize(ALICE, "read", RECORDS)).decision
        finally:
            await client.close()

    assert asyncio.run(main()) == "allow"
    with pytest.raises(TransportError, match="closed"):
        asyncio.run(client.authorize(ALICE, "read", RECORDS))


def test_many_resources_in_batches(docket: Running, fake: FakeDecisions) -> None:
    resources = [{"type": "Data", "id": f"d{n}"} for n in range(1001)]

    async def use(client: AsyncDecisionClient) -> list[str]:
        results = await client.authorize_resources(MALLORY, "read", resources)
        return [result.decision for result in results]

    assert run(docket.target, use) == ["deny"] * 1001
    assert [len(call.requests) for call in fake.calls("BatchAuthorize")] == [1000, 1]
