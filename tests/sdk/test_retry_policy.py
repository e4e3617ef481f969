"""The retry policy's waits: exponential, capped, jittered below the cap."""

from __future__ import annotations

import random

import pytest

from sdk import ConfigurationError
from sdk._retry import RetryPolicy


def test_ceilings_grow_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=0.5, multiplier=2)

    assert [policy.ceiling(n) for n in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_jittered_waits_stay_within_their_ceiling_and_vary() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=0.5, rng=random.Random(7))

    waits = {n: [policy.backoff(n) for _ in range(200)] for n in range(6)}

    for n, values in waits.items():
        assert all(0 <= w <= policy.ceiling(n) for w in values)
        assert len(set(values)) > 100
    assert max(waits[5]) > 0.4


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"retries": -1}, id="retries"),
        pytest.param({"initial_backoff": -1.0}, id="initial"),
        pytest.param({"multiplier": 0.5}, id="shrinking"),
    ],
)
def test_nonsense_is_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**settings)  # type: ignore[arg-type]
