"""Attested posture into decision requests, and where each trusted fact came from.

A caller shows what device it speaks for with a Docket credential: its mTLS client
certificate (an X.509-SVID whose posture extension Docket wrote) or a JWT-SVID (the
``device_token`` of a request, or, on an Envoy-checked request, the
``x-docket-device-token`` header or a Docket ``Bearer`` token). The claims in it set the
attested fields of ``context.device`` (``attested``, ``secure_boot``, ``device_class``…,
the boot facts of an appraised event log — ``boot_chain``, ``dbx_revision``,
``crtm_version`` — when the credential has them, and ``id`` = the device's SPIFFE ID);
the inventory facts the caller relays
(``disk_encrypted``, ``managed``…) stay as they are. Without a credential the device is
``attested: false, secure_boot: false``: a caller can never set those fields (the wire
layer refuses them, :mod:`engine._adapters.wire`).

Only credentials this Docket's CA signed count: a certificate from another CA the TLS
configuration trusts is an identity, not a posture. A Docket credential that is revoked
(:class:`~attestation._ca.RevocationList`: its device, its SPIFFE ID up to the
revocation, or its serial), or that a retired issuing key signed after its retirement,
is refused: the request fails, it does not go on without posture. Revocations are checked
on every use, also of a cached credential, so a new list counts at once. A certificate
relayed in an ext_authz Check (``source.certificate``) is read only from a trusted
enforcement point (which saw the downstream prove it holds the key); anyone can paste a
public certificate.

:func:`provenance` is what each audit entry records in ``detail.provenance``: who called
(``caller``), where the posture came from (``{"source": "x509-svid", "serial": …}``,
``{"source": "jwt-svid", "jti": …}`` or ``{"source": "none"}``), the enforcement point
that named the subject (``pep``), how the subject was named (``subject``) and who
asserted the inventory facts (``inventory``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast
from urllib.parse import unquote

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from attestation import (
    JWT_POSTURE_CLAIM,
    CertificateAuthority,
    ParseError,
    Posture,
    RevocationList,
    TokenError,
    describe,
    issued_at,
)
from engine._core.models import Request
from engine._errors import RequestError
from engine._service.constants import DEVICE, INVENTORY_DEVICE_FIELDS

DEVICE_TOKEN_HEADER = "x-docket-device-token"  # noqa: S105 (a header name, not a secret)
"""The header carrying a device's Docket JWT-SVID on an Envoy-checked request."""
NO_POSTURE: dict[str, Any] = {"source": "none"}
_UNATTESTED = {"attested": False, "secure_boot": False}
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
class Proven:
    """Attested posture Docket verified: the device's SPIFFE ID, its claims, and the
    credential they came from (the certificate's serial, hex, or the token's ``jti``)."""

    spiffe_id: str
    claims: dict[str, Any]
    source: Literal["x509-svid", "jwt-svid"]
    reference: str | None

    def provenance(self) -> dict[str, Any]:
        """How the audit entry names this credential."""
        key = "serial" if self.source == "x509-svid" else "jti"
        return {"source": self.source, key: self.reference, "id": self.spiffe_id}


@dataclass(frozen=True, slots=True)
class _Verified:
    """What a peer certificate proved (None: no posture), and when it is valid; for a
    Docket SVID, what a revocation names it by (SPIFFE ID, serial, issue time)."""

    posture: Proven | None
    not_before: datetime
    not_after: datetime
    spiffe_id: str | None = None
    serial: int | None = None
    issued: datetime | None = None


class PostureReader:
    """Reads attested posture from Docket credentials (see the module docstring).

    A connection presents the same certificate on every call, a device the same token
    with many requests: what each proved is cached (signature, SPIFFE ID, posture: ~0.1
    ms of ECDSA otherwise), and only its validity and :attr:`revocations` are checked on
    each use, so a revocation counts from the moment the list is set. Setting :attr:`ca`
    (a reload after a rotation) empties the caches.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        audience: str,
        revocations: RevocationList | None = None,
    ) -> None:
        self.audience = audience
        self._lock = threading.Lock()
        self._verified: OrderedDict[bytes, _Verified | None] = OrderedDict()
        self._tokens: OrderedDict[str, tuple[Proven, int, datetime]] = OrderedDict()
        self.ca = ca
        self.revocations = revocations or RevocationList.empty(ca.trust_domain)
        """The revocation list in force (replaced whole by a reload)."""

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
            # Verified at a moment inside its window: validity is checked on each use.
            moment = min(max(now, window[0]), window[1] - timedelta(microseconds=1))
            spiffe_id, claims = self.ca.verify_svid(cert, moment)
        except TokenError as exc:
            if self._ours(cert):
                # Docket's signature, refused (a retired key's late credential, over the
                # lifetime cap): a forgery, not another CA's identity.
                raise TokenError(f"client certificate: {exc}") from exc
            return _Verified(None, *window)  # another CA's certificate: no posture
        posture = (
            None
            if claims is None
            else Proven(
                spiffe_id,
                _checked(claims, "client certificate"),
                "x509-svid",
                f"{cert.serial_number:x}",
            )
        )
        return _Verified(posture, *window, spiffe_id, cert.serial_number, issued_at(cert))

    def _ours(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` is signed by one of this CA's intermediates, current or
        retired (kept), whatever else is wrong with it."""
        for issuer in (self.ca.issuing, *self.ca.retired):
            if issuer.certificate.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(issuer.certificate)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return True
        return False

    def _revoked(self, spiffe_id: str, serial: int | None, issued: datetime) -> str | None:
        revocation = self.revocations.refuses(spiffe_id, serial, issued)
        return None if revocation is None else describe(revocation)

    def from_certificate(self, pem: bytes, now: datetime) -> Proven | None:
        """The posture of a Docket X.509-SVID with posture valid at ``now``, else None.

        Raises :class:`~engine.RequestError` (fail closed) for a Docket SVID that is
        revoked, or that Docket's signature is on but that does not verify (a retired
        key's credential minted after its retirement).
        """
        with self._lock:
            found = self._verified.get(pem, _MISSING)
            if found is not _MISSING:
                self._verified.move_to_end(pem)
        if found is _MISSING:
            try:
                found = self._verify(pem, now)
            except TokenError as exc:
                # Not cached: a refusal is rare and costs the caller its request.
                raise RequestError(str(exc)) from exc
            with self._lock:
                self._verified[pem] = found
                if len(self._verified) > _CACHE_SIZE:
                    self._verified.popitem(last=False)
        if not isinstance(found, _Verified) or not found.not_before <= now < found.not_after:
            return None
        if found.spiffe_id is not None and found.issued is not None:
            revoked = self._revoked(found.spiffe_id, found.serial, found.issued)
            if revoked is not None:
                raise RequestError(f"client certificate: {revoked}")
        return found.posture

    def from_peer(
        self, context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any], now: datetime
    ) -> Proven | None:
        """The posture in the mTLS client certificate of a gRPC call, if there is one."""
        return self.from_auth(context.auth_context(), now)

    def from_auth(self, auth: Mapping[str, Any], now: datetime) -> Proven | None:
        """:meth:`from_peer` from a call's ``auth_context()``, read once by a caller that
        needs more of it."""
        values = cast("list[bytes] | None", auth.get(_PEER_CERT))
        return self.from_certificate(values[0], now) if values else None

    def from_token(self, token: str, now: datetime) -> Proven:
        """The posture of a JWT-SVID this CA signed for our audience, valid at ``now``.

        A device sends the same token with many requests: a verified one is cached until
        its ``exp`` (checked against ``now`` on each use). Raises
        :class:`~engine.RequestError` (fail closed: a token that does not verify is an
        error, not an absent posture).
        """
        with self._lock:
            cached = self._tokens.get(token)
        if cached is not None:
            posture, expires, issued = cached
            if now.timestamp() < expires:
                revoked = self._revoked(posture.spiffe_id, None, issued)
                if revoked is not None:
                    raise RequestError(f"device_token: {revoked}")
                return posture
        try:
            claims = self.ca.verify_jwt(token, self.audience, now)
            posture_claims = claims.get(JWT_POSTURE_CLAIM)
            if posture_claims is None:
                raise TokenError("the JWT-SVID carries no posture claim")
            jti = claims.get("jti")
            posture = Proven(
                str(claims["sub"]),
                _checked(posture_claims, "device token"),
                "jwt-svid",
                jti if isinstance(jti, str) else None,
            )
        except TokenError as exc:
            raise RequestError(f"device_token: {exc}") from exc
        issued = datetime.fromtimestamp(int(claims["iat"]), UTC)
        revoked = self._revoked(posture.spiffe_id, None, issued)
        if revoked is not None:
            raise RequestError(f"device_token: {revoked}")
        with self._lock:
            self._tokens[token] = (posture, int(claims["exp"]), issued)
            if len(self._tokens) > _CACHE_SIZE:
                self._tokens.popitem(last=False)
        return posture

    def for_check(self, attributes: Any, now: datetime, *, trusted_pep: bool) -> Proven | None:
        """The posture on an Envoy-checked request (``AttributeContext``): a Docket
        JWT-SVID in the ``x-docket-device-token`` header or as its ``authorization:
        Bearer`` token (any caller: the token is its own proof), else, from a trusted
        enforcement point only, the downstream's X.509-SVID it relays
        (``include_peer_certificate``). Bearer tokens of other issuers are left to
        Envoy's jwt_authn. Raises :class:`~engine.RequestError` when a Docket token does
        not verify."""
        headers = attributes.request.http.headers
        token = headers.get(DEVICE_TOKEN_HEADER, "").strip()
        if token:
            return self.from_token(token, now)
        scheme, _, bearer = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and bearer and self.ca.names_key_of(bearer.strip()):
            return self.from_token(bearer.strip(), now)
        certificate = attributes.source.certificate
        if certificate and trusted_pep:
            return self.from_certificate(unquote(certificate).encode(), now)
        return None


def attach(request: Request, posture: Proven | None) -> Request:
    """``request`` with ``posture`` (verified) over its device; without one, a device the
    caller described (inventory only) is marked unattested, as the schema needs."""
    if posture is not None:
        context = with_device(request.context, posture.spiffe_id, posture.claims)
    elif isinstance(request.context.get(DEVICE), Mapping):
        context = {**request.context, DEVICE: {**request.context[DEVICE], **_UNATTESTED}}
    else:
        return request
    return request.model_copy(update={"context": context})


def provenance(
    request: Request,
    posture: Proven | None,
    *,
    caller: str | None,
    pep: str | None = None,
    subject: Literal["request", "source.principal", "jwt", "anonymous"] = "request",
) -> dict[str, Any]:
    """Where the trusted facts of ``request`` came from, for its audit entry's
    ``detail.provenance`` (see the module docstring)."""
    device = request.context.get(DEVICE)
    inventory = isinstance(device, Mapping) and any(
        name in device for name in INVENTORY_DEVICE_FIELDS
    )
    return {
        "caller": caller,
        "posture": NO_POSTURE if posture is None else posture.provenance(),
        "pep": pep,
        "subject": subject,
        "inventory": "caller" if inventory else "none",
    }
