"""The agent's gRPC channel to Docket's Attestation service: plaintext only to this
machine, gRPC's retries for Challenge and never for Attest, and each call's failure mapped
to the SDK's errors (a refusal with Docket's reason)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, Final, TypeVar

import grpc

from sdk._errors import ConfigurationError, PermissionDeniedError, error_from_rpc, status_of
from sdk._retry import RetryPolicy
from sdk._tls import TLSConfig

__all__ = ["ATTESTATION_SERVICE", "RETRY", "dial", "invoke", "is_local_target"]

ATTESTATION_SERVICE: Final = "docket.v1.Attestation"
RETRY: Final = RetryPolicy()
"""How gRPC retries the agent's calls: Challenge is retried, Attest never (``sdk._retry``)."""

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def is_local_target(target: str) -> bool:
    """True for a gRPC target on this machine: a Unix socket, localhost, a loopback IP."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    rest = target
    for scheme in ("dns:///", "ipv4:", "ipv6:"):
        if rest.startswith(scheme):
            rest = rest[len(scheme) :]
            break
    if rest.startswith("["):
        host = rest[1 : rest.find("]")] if "]" in rest else rest
    elif rest.count(":") == 1:
        host = rest.partition(":")[0]
    else:
        host = rest
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dial(server: str, tls: TLSConfig | None, insecure_plaintext: bool) -> grpc.Channel:
    """A channel to Docket at ``server`` on which gRPC retries Challenge, never Attest
    (``RETRY``). Raises ``ConfigurationError`` for plaintext to another machine unless
    ``insecure_plaintext``, or for TLS files that cannot be read."""
    options = RETRY.channel_options()
    if tls is not None:
        return grpc.secure_channel(
            server, tls.channel_credentials(), [*tls.channel_options(), *options]
        )
    if not (is_local_target(server) or insecure_plaintext):
        raise ConfigurationError(
            f"refusing plaintext gRPC to {server}, which is not loopback: the JWT and the "
            "certificates would cross the network in the clear; configure TLS"
        )
    return grpc.insecure_channel(server, options)


def _refusal(exc: grpc.RpcError) -> PermissionDeniedError:
    """PERMISSION_DENIED from the Attestation service: Docket refused, with its reason."""
    details: Any = getattr(exc, "details", None)
    reason = details() if callable(details) else None
    text = reason if isinstance(reason, str) and reason else "(no reason given)"
    status = status_of(exc).name
    return PermissionDeniedError(f"attestation refused: {text}", status=status)


def invoke(
    method: Callable[..., _Response],
    request: _Request,
    *,
    rpc: str,
    server: str,
    timeout: float,
) -> _Response:
    """One call of the Attestation method ``rpc`` (``"Challenge"``), on a channel from
    ``dial``; its failure mapped to the SDK's errors, a refusal to
    ``PermissionDeniedError`` ("attestation refused: <reason>")."""
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as exc:
        if status_of(exc) in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
            raise _refusal(exc) from exc
        attempts = RETRY.attempts(f"{ATTESTATION_SERVICE}/{rpc}", exc)
        raise error_from_rpc(exc, call=f"{rpc} on {server}", attempts=attempts) from exc
