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


class PostureReader:
    """Reads attested posture from Docket credentials (see the module docstring).

    Verified peer certificates are cached by their PEM (a connection presents the same
    one on every call); the validity window is checked on every use.
    """

    def __init__(self, ca: CertificateAuthority, audience: str) -> None:
        self.ca = ca
        self.audience = audience
        self._lock = threading.Lock()
        self._certs: OrderedDict[bytes, x509.Certificate | None] = OrderedDict()

    def _certificate(self, pem: bytes) -> x509.Certificate | None:
        with self._lock:
            if pem in self._certs:
                self._certs.move_to_end(pem)
                return self._certs[pem]
        try:
            cert: x509.Certificate | None = x509.load_pem_x509_certificate(pem)
        except ValueError:
            cert = None
        with self._lock:
            self._certs[pem] = cert
            if len(self._certs) > _CACHE_SIZE:
                self._certs.popitem(last=False)
        return cert

    def from_certificate(self, pem: bytes, now: datetime) -> tuple[str, dict[str, Any]] | None:
        """(SPIFFE ID, claims) of a Docket X.509-SVID with posture, else None."""
        cert = self._certificate(pem)
        if cert is None:
            return None
        try:
            spiffe_id, claims = self.ca.verify_svid(cert, now)
        except TokenError:
            return None  # another CA's certificate (or expired): an identity, no posture
        if claims is None:
            return None
        try:
            return spiffe_id, _checked(claims, "client certificate")
        except TokenError:
            return None

    def from_peer(
        self, context: grpc.ServicerContext, now: datetime
    ) -> tuple[str, dict[str, Any]] | None:
        """The posture in the mTLS client certificate of a gRPC call, if there is one."""
        values = cast("list[bytes] | None", context.auth_context().get(_PEER_CERT))
        return self.from_certificate(values[0], now) if values else None

    def from_token(self, token: str, now: datetime) -> tuple[str, dict[str, Any]]:
        """(SPIFFE ID, claims) of a JWT-SVID this CA signed for our audience.

        Raises :class:`~engine.RequestError` (fail closed: a token that does not verify
        is an error, not an absent posture).
        """
        try:
            claims = self.ca.verify_jwt(token, self.audience, now)
            posture = claims.get(JWT_POSTURE_CLAIM)
            if posture is None:
                raise TokenError("the JWT-SVID carries no posture claim")
            return str(claims["sub"]), _checked(posture, "device token")
        except TokenError as exc:
            raise RequestError(f"device_token: {exc}") from exc

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
