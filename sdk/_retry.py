"""Which calls gRPC retries, on which statuses, with what backoff: the channel's service
config, shared by the decision clients and the device agent.

gRPC does the retrying (``grpc.enable_retries`` and a ``retryPolicy`` per method in
``grpc.service_config``); this module only says what is safe to repeat:

    retried       docket.v1.Decisions Authorize, BatchAuthorize, Place; grpc.health.v1
                  Health Check; docket.v1.Attestation Challenge (a new challenge only
                  supersedes the unanswered one)
    never         docket.v1.Attestation Attest: the first answer consumes its single-use
                  challenge, so a repeat is refused at best. docket.v1.Decisions
                  ReloadBundle: an administrator's audited action, done once per request

and only on UNAVAILABLE (the call reached no server that took it: no connection, a server
shutting down, an audit log that cannot record, so nothing was decided) and
RESOURCE_EXHAUSTED (Docket shed the call: the audit writer's queue is full).
DEADLINE_EXCEEDED is never retried: the server may have decided and logged the request.
gRPC waits before retry ``n`` (0-based) ``min(max_backoff, initial_backoff *
multiplier**n)`` with ±20 % jitter (grpc core's), honours a server's
``grpc-retry-pushback-ms``, and the call's deadline covers every attempt and wait, so
``timeout`` bounds the whole call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import grpc

from sdk._errors import ConfigurationError, status_of

__all__ = ["MAX_RETRIES", "RETRIED_METHODS", "RETRYABLE_STATUSES", "RetryPolicy"]

RETRIED_METHODS: Final = (
    "docket.v1.Decisions/Authorize",
    "docket.v1.Decisions/BatchAuthorize",
    "docket.v1.Decisions/Place",
    "docket.v1.Attestation/Challenge",
    "grpc.health.v1.Health/Check",
)
"""The methods safe to send again (``service/Method``); every other method is sent once."""

RETRYABLE_STATUSES: Final = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
"""The statuses after which a retried method is sent again."""

MAX_RETRIES: Final = 4
"""gRPC makes at most five attempts of a call (it clamps ``maxAttempts`` to 5)."""

# A retried call's request is kept until the call commits; a bigger one is not retried.
# Docket accepts requests up to 4 MiB (engine's MAX_MESSAGE_BYTES): keep any of them.
_RETRY_BUFFER_BYTES: Final = 4 * 1024 * 1024


# gRPC refuses a zero backoff (and with it the whole config), and with a backoff of 1 ms
# its retry timer sometimes never fires (grpcio 1.85): shorter waits become 10 ms.
_MIN_BACKOFF_MS: Final = 10


def _duration(seconds: float) -> str:
    """A protobuf JSON duration in gRPC's resolution (milliseconds), at least 10 ms."""
    millis = max(round(seconds * 1000), _MIN_BACKOFF_MS)
    return f"{millis // 1000}.{millis % 1000:03d}s"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently gRPC retries the methods of ``RETRIED_METHODS``.

    ``retries`` is the number of attempts after the first (0 to ``MAX_RETRIES``); the wait
    before retry ``n`` (0-based) is ``min(max_backoff, initial_backoff * multiplier**n)``
    seconds ±20 %, and at least 10 ms. Raises ``ConfigurationError`` for negative values,
    more retries than gRPC makes, or a shrinking multiplier.
    """

    retries: int = 3
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.initial_backoff < 0 or self.max_backoff < 0:
            raise ConfigurationError("retries and backoff times must not be negative")
        if self.retries > MAX_RETRIES:
            raise ConfigurationError(
                f"at most {MAX_RETRIES} retries (gRPC makes at most {MAX_RETRIES + 1} "
                f"attempts of a call), got {self.retries}"
            )
        if self.multiplier < 1:
            raise ConfigurationError("the backoff multiplier must be at least 1")

    def service_config(self) -> dict[str, Any]:
        """The gRPC service config: a ``retryPolicy`` for the methods of
        ``RETRIED_METHODS`` (none when ``retries`` is 0: each call is sent once)."""
        if self.retries == 0:
            return {"methodConfig": []}
        services: dict[str, list[str]] = {}
        for path in RETRIED_METHODS:
            service, _, method = path.partition("/")
            services.setdefault(service, []).append(method)
        names = [
            {"service": service, "method": method}
            for service, methods in services.items()
            for method in methods
        ]
        policy = {
            "maxAttempts": self.retries + 1,
            "initialBackoff": _duration(self.initial_backoff),
            "maxBackoff": _duration(self.max_backoff),
            "backoffMultiplier": self.multiplier,
            "retryableStatusCodes": [code.name for code in RETRYABLE_STATUSES],
        }
        return {"methodConfig": [{"name": names, "retryPolicy": policy}]}

    def channel_options(self) -> list[tuple[str, int | str]]:
        """The channel options that make gRPC retry as ``service_config`` says."""
        return [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(self.service_config())),
            # The config is ours: a DNS TXT record must not switch retries on for Attest.
            ("grpc.service_config_disable_resolution", 1),
            ("grpc.per_rpc_retry_buffer_size", _RETRY_BUFFER_BYTES),
        ]

    def attempts(self, method: str, exc: grpc.RpcError) -> int:
        """How many attempts a call of ``method`` (``service/Method``) that failed with
        ``exc`` made: every one when gRPC retries that status for that method (fewer only
        if a server's pushback stopped it early), else one."""
        if method in RETRIED_METHODS and status_of(exc) in RETRYABLE_STATUSES:
            return self.retries + 1
        return 1
