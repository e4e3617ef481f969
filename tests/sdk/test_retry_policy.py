"""The retry policy gRPC is given: which methods it retries, on which statuses, and the
settings it refuses. Retries against a real server are in test_decision_client.py and
agent/test_agent_channel.py."""

from __future__ import annotations

import json

import grpc
import pytest
from sdk_fakes import FakeDecisions, Running

from sdk import ConfigurationError, DecisionClient
from sdk._retry import RetryPolicy

METHODS = [
    pytest.param("docket.v1.Decisions", "Authorize", True, id="authorize"),
    pytest.param("docket.v1.Decisions", "BatchAuthorize", True, id="batch"),
    pytest.param("docket.v1.Decisions", "Place", True, id="place"),
    pytest.param("grpc.health.v1.Health", "Check", True, id="health"),
    pytest.param("docket.v1.Attestation", "Challenge", True, id="challenge"),
    pytest.param("docket.v1.Attestation", "Attest", False, id="attest-consumes-its-challenge"),
    pytest.param("docket.v1.Decisions", "ReloadBundle", False, id="reload-is-an-admin-action"),
]


def _retried(config: dict[str, object], service: str, method: str) -> bool:
    entries = config["methodConfig"]
    assert isinstance(entries, list)
    return any(
        {"service": service, "method": method} in entry["name"] and "retryPolicy" in entry
        for entry in entries
    )


@pytest.mark.parametrize(("service", "method", "retried"), METHODS)
def test_only_calls_safe_to_repeat_are_retried(service: str, method: str, retried: bool) -> None:
    assert _retried(RetryPolicy().service_config(), service, method) is retried


def test_the_channel_is_told_to_retry_with_the_policy() -> None:
    options = dict(RetryPolicy(retries=2, initial_backoff=0.1, max_backoff=0.5).channel_options())

    assert options["grpc.enable_retries"] == 1
    (entry,) = json.loads(str(options["grpc.service_config"]))["methodConfig"]
    assert entry["retryPolicy"] == {
        "maxAttempts": 3,
        "initialBackoff": "0.100s",
        "maxBackoff": "0.500s",
        "backoffMultiplier": 2.0,
        "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
    }


def test_no_retries_means_no_retry_policy() -> None:
    config = RetryPolicy(retries=0).service_config()
    assert not any(_retried(config, *p.values[:2]) for p in METHODS)  # type: ignore[arg-type]


def test_a_zero_backoff_is_accepted_by_grpc(docket: Running, fake: FakeDecisions) -> None:
    """gRPC refuses a zero backoff (and with it the whole service config), and may never
    fire a 1 ms one: waits shorter than 10 ms become 10 ms."""
    fake.unavailable_first = 2

    with DecisionClient(docket.target, retries=2, initial_backoff=0.0, max_backoff=0.0) as c:
        c.authorize({"type": "User", "id": "alice"}, "read", {"type": "Data", "id": "d"})

    assert len(fake.received) == 3


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"retries": -1}, id="retries"),
        pytest.param({"retries": 5}, id="more-than-grpc-makes"),
        pytest.param({"initial_backoff": -1.0}, id="initial"),
        pytest.param({"multiplier": 0.5}, id="shrinking"),
    ],
)
def test_nonsense_is_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**settings)  # type: ignore[arg-type]


def test_only_retryable_statuses_count_as_several_attempts() -> None:
    class Failed(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode) -> None:
            self._code = code

        def code(self) -> grpc.StatusCode:
            return self._code

    policy = RetryPolicy(retries=2)
    authorize = "docket.v1.Decisions/Authorize"
    assert policy.attempts(authorize, Failed(grpc.StatusCode.UNAVAILABLE)) == 3
    assert policy.attempts(authorize, Failed(grpc.StatusCode.DEADLINE_EXCEEDED)) == 1
    assert policy.attempts("docket.v1.Attestation/Attest", Failed(grpc.StatusCode.UNAVAILABLE)) == 1
