"""Attested posture into decision requests.

A caller shows what device it speaks for with a Docket credential: its mTLS client
certificate (an X.509-SVID whose posture extension Docket wrote) or a JWT-SVID (the
``device_token`` of a request, or a ``Bearer`` token on an Envoy-checked request). The
claims in it replace the attested claims of ``context.device`` (``attested``,
``secure_boot``, ``device_class``…, and ``id`` = the device's SPIFFE ID); the inventory
claims the caller sent (``disk_encrypted``, ``managed``…) stay as they are.

Only credentials this Docket's CA signed count: a certificate from another CA the TLS
configuration trusts is an identity, not a posture.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from urllib.parse import unquote

import grpc
from cryptography import x509

from attestation._ca import JWT_POSTURE_CLAIM, CertificateAuthority, TokenError
from attestation._errors import ParseError
from attestation._verifier import Posture
from engine._errors import RequestError
from engine._models import Request

DEVICE = "device"
_PEER_CERT = "x509_pem_cert"
_CACHE_SIZE = 4096
_MISSING: Any = object()


def with_device(
    context: Mapping[str, Any], spiffe_id: str, claims: Mapping[str, Any]
) -> dict[str, Any]:
    """``context`` with the attested ``claims`` (already verified) over its device."""
    device = context.get(DEVICE)
    merged = dict(device) if isinstance(device, Mapping) else {}
    merged.update(claims)
    merged["id"] = spiffe_id
    return {**context, DEVICE: merged}


def _checked(claims: Any, what: str) -> dict[str, Any]:
    """Posture claims back through the strict model, so policy sees the schema's types."""
    try:
        return Posture.from_claims(claims).claims()
    except ParseError as exc:
        raise TokenError(f"{what}: the posture claims are malformed ({exc})") from exc


@dataclass(frozen=True, slots=True)
class _Verified:
    """What a peer certificate proved (None: no posture), and when it is valid."""

    posture: tuple[str, dict[str, Any]] | None
    not_before: datetime
    not_after: datetime


class PostureReader:
    """Reads attested posture from Docket credentials (see the module docstring).

    A connection presents the same certificate on every call, a device the same token
    with many requests: what each proved is cached (signature, SPIFFE ID, posture: ~0.1
    ms of ECDSA otherwise), and only its validity is checked on each use. Setting
    :attr:`ca` (a reload after a rotation) empties the caches.
    """

    def __init__(self, ca: CertificateAuthority, audience: str) -> None:
        self.audience = audience
        self._lock = threading.Lock()
        self._verified: OrderedDict[bytes, _Verified | None] = OrderedDict()
        self._tokens: OrderedDict[str, tuple[tuple[str, dict[str, Any]], int]] = OrderedDict()
        self.ca = ca

    @property
    def ca(self) -> CertificateAuthority:
        return self._ca

    @ca.setter
    def ca(self, ca: CertificateAuthority) -> None:
        with self._lock:
            self._ca = ca
            self._verified.clear()
            self._tokens.clear()

    def _verify(self, pem: bytes, now: datetime) -> _Verified | None:
        """None when ``pem`` is no certificate; else what it proves (checked at ``now``)."""
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            return None
        window = (cert.not_valid_before_utc, cert.not_valid_after_utc)
        try:
            spiffe_id, claims = self.ca.verify_svid(cert, max(now, window[0]))
            posture = (
                None if claims is None else (spiffe_id, _checked(claims, "client certificate"))
            )
        except TokenError:
            posture = None  # another CA's certificate: an identity, no posture
        return _Verified(posture, *window)

    def from_certificate(self, pem: bytes, now: datetime) -> tuple[str, dict[str, Any]] | None:
        """(SPIFFE ID, claims) of a Docket X.509-SVID with posture valid at ``now``, else
        None."""
        with self._lock:
            found = self._verified.get(pem, _MISSING)
            if found is not _MISSING:
                self._verified.move_to_end(pem)
        if found is _MISSING:
            found = self._verify(pem, now)
            with self._lock:
                self._verified[pem] = found
                if len(self._verified) > _CACHE_SIZE:
                    self._verified.popitem(last=False)
        if not isinstance(found, _Verified) or not found.not_before <= now < found.not_after:
            return None
        return found.posture

    def from_peer(
        self, context: grpc.ServicerContext, now: datetime
    ) -> tuple[str, dict[str, Any]] | None:
        """The posture in the mTLS client certificate of a gRPC call, if there is one."""
        values = cast("list[bytes] | None", context.auth_context().get(_PEER_CERT))
        return self.from_certificate(values[0], now) if values else None

    def from_token(self, token: str, now: datetime) -> tuple[str, dict[str, Any]]:
        """(SPIFFE ID, claims) of a JWT-SVID this CA signed for our audience.

        A device sends the same token with many requests: a verified one is cached until
        its ``exp`` (checked against ``now`` on each use). Raises
        :class:`~engine.RequestError` (fail closed: a token that does not verify is an
        error, not an absent posture).
        """
        with self._lock:
            cached = self._tokens.get(token)
        if cached is not None:
            posture, expires = cached
            if now.timestamp() < expires:
                return posture
        try:
            claims = self.ca.verify_jwt(token, self.audience, now)
            posture_claims = claims.get(JWT_POSTURE_CLAIM)
            if posture_claims is None:
                raise TokenError("the JWT-SVID carries no posture claim")
            posture = str(claims["sub"]), _checked(posture_claims, "device token")
        except TokenError as exc:
            raise RequestError(f"device_token: {exc}") from exc
        with self._lock:
            self._tokens[token] = (posture, int(claims["exp"]))
            if len(self._tokens) > _CACHE_SIZE:
                self._tokens.popitem(last=False)
        return posture

    def for_check(self, attributes: Any, now: datetime) -> tuple[str, dict[str, Any]] | None:
        """The posture on an Envoy-checked request (``AttributeContext``): a Docket JWT-SVID
        as its ``authorization: Bearer`` token, else the downstream's X.509-SVID when the
        listener forwards it (``include_peer_certificate``). Bearer tokens of other
        issuers are left to Envoy's jwt_authn. Raises :class:`~engine.RequestError` when
        a Docket token does not verify."""
        scheme, _, token = attributes.request.http.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token and self.ca.names_key_of(token.strip()):
            return self.from_token(token.strip(), now)
        certificate = attributes.source.certificate
        if certificate:
            return self.from_certificate(unquote(certificate).encode(), now)
        return None


def attach(request: Request, posture: tuple[str, Mapping[str, Any]] | None) -> Request:
    """``request`` with ``posture`` (SPIFFE ID, verified claims) over its device."""
    if posture is None:
        return request
    spiffe_id, claims = posture
    return request.model_copy(update={"context": with_device(request.context, spiffe_id, claims)})
