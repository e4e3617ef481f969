"""When to retry a failed call and how long to wait: shared by the sync and async clients.

Only UNAVAILABLE is retried: it means the call did not reach a server that took it (no
connection, a server shutting down), so sending it again is safe for every Decisions RPC.
DEADLINE_EXCEEDED is not retried, since the server may have decided and logged the
request already; the caller's deadline is spent anyway. Waits grow exponentially with
full jitter and are capped, so the worst case is bounded by
``retries * max_backoff`` of sleep plus ``(retries + 1) * timeout`` of calls.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import grpc

from sdk._errors import ConfigurationError, error_from_rpc, status_of

__all__ = ["RetryPolicy", "RetryState"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry UNAVAILABLE.

    The wait before retry ``n`` (0-based) is uniform in ``[0, min(max_backoff,
    initial_backoff * multiplier**n)]``. Raises ``ConfigurationError`` for negative values.
    """

    retries: int = 3
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.initial_backoff < 0 or self.max_backoff < 0:
            raise ConfigurationError("retries and backoff times must not be negative")
        if self.multiplier < 1:
            raise ConfigurationError("the backoff multiplier must be at least 1")

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (0-based)."""
        return min(self.max_backoff, self.initial_backoff * self.multiplier**retry)

    def backoff(self, retry: int) -> float:
        """A jittered wait before retry number ``retry``, never above ``ceiling(retry)``."""
        return self.rng.uniform(0.0, self.ceiling(retry))

    def start(self, call: str) -> RetryState:
        """Fresh bookkeeping for one logical call, ``call`` naming it in errors."""
        return RetryState(self, call)


class RetryState:
    """The attempts of one logical call: either a wait before the next, or the error."""

    def __init__(self, policy: RetryPolicy, call: str) -> None:
        self._policy = policy
        self._call = call
        self._retried = 0

    @property
    def attempts(self) -> int:
        """How many attempts have failed so far."""
        return self._retried + 1

    def backoff_or_raise(self, exc: grpc.RpcError) -> float:
        """Seconds to wait before retrying after ``exc``; raises the mapped ``DocketError``
        (chained to ``exc``) when ``exc`` is not retryable or the retries are used up."""
        if status_of(exc) is grpc.StatusCode.UNAVAILABLE and self._retried < self._policy.retries:
            delay = self._policy.backoff(self._retried)
            self._retried += 1
            return delay
        raise error_from_rpc(exc, call=self._call, attempts=self.attempts) from exc
