"""A serving process's heap after start-up: out of the cyclic collector's way."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from engine._runtime.worker import settle_heap


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
