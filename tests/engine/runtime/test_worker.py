"""A serving process's heap after start-up: out of the cyclic collector's way."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from engine._runtime.worker import new_event_loop, settle_heap


@pytest.fixture
def thawed() -> Iterator[None]:
    """This test process's heap is not left frozen for the tests after."""
    yield
    gc.unfreeze()


class Node:
    """A cycle-capable object, as a bundle's or grpc's are."""

    def __init__(self) -> None:
        self.me = self


def in_generation(obj: object, generation: int) -> bool:
    return any(other is obj for other in gc.get_objects(generation))


def test_what_start_up_made_is_never_traversed_by_a_full_collection(thawed: None) -> None:
    # A full collection's pause grows with every object in the oldest generation: a
    # worker's bundle, schema and gRPC machinery made one of 80-90 ms (benchmarks/
    # README.md, "Issue 15: the tail").
    made = Node()
    gc.collect()
    assert in_generation(made, 2)
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert not any(in_generation(made, g) for g in (0, 1, 2))


def test_garbage_start_up_left_is_collected_before_the_freeze(thawed: None) -> None:
    leftover = Node()
    watch = weakref.ref(leftover)
    del leftover  # only its own cycle keeps it
    settle_heap()
    assert watch() is None


def test_the_grpc_server_runs_on_uvloop() -> None:
    """uvloop is a dependency (but on Windows): the server's loop is its loop, and it runs
    what grpc.aio needs of it (a coroutine, a thread-safe callback, the default executor)."""
    import asyncio

    import uvloop

    loop = new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)

        async def work() -> int:
            woken = asyncio.get_running_loop().create_future()
            loop.call_soon_threadsafe(woken.set_result, 1)
            return await woken + await loop.run_in_executor(None, lambda: 2)

        assert loop.run_until_complete(work()) == 3
    finally:
        loop.close()
