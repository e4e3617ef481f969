"""Loading the X.509 certificates TPM vendors ship, including the ones that are not strict DER.

`cryptography` parses certificates strictly: a SET OF whose members are not in DER order
is refused. Several vendor EK roots and the EK certificates issued under them (the Nuvoton
roots among them) write the attributes of a multi-valued name component (``CN + O + C``)
in the order they were given, not sorted; OpenSSL accepts them, and so must an attestation
service that wants those machines to attest.

:func:`load_certificate` keeps the strict parser where it serves: a certificate it accepts
(extensions included) is used as it is. Only when it refuses one is the DER *re-encoded
canonically* — every SET's members sorted by their encoding, definite minimal lengths —
in the certificate and inside each extension's value, and that is loaded instead.

What is lenient, and why it is safe:

- only the order of SET members and the form of lengths change; every value (names, keys,
  extensions, validity) is the one the signer signed, and a SET is unordered by definition,
  so the re-encoded certificate means the same thing;
- the signature of such a certificate is verified over its ORIGINAL ``tbsCertificate``
  bytes (:attr:`LoadedCertificate.tbs`, :func:`verify_signed_by`), never over the
  re-encoded ones, with the issuer's public key, which re-encoding does not touch;
- anything else that is not DER (indefinite lengths, trailing bytes, a truncated element,
  more than :data:`MAX_DEPTH` levels) is refused with :class:`ParseError`, as before.

Raises only :class:`~attestation.ParseError` and :class:`~attestation.EvidenceError`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from attestation._errors import EvidenceError, ParseError

__all__ = [
    "LoadedCertificate",
    "canonical_der",
    "load_certificate",
    "load_pem_certificates",
    "verify_signed_by",
]

MAX_DEPTH: Final = 32
"""Nesting a certificate may have (real ones have about 10)."""
MAX_CERTIFICATE: Final = 64 * 1024
"""Bytes one certificate may have."""

_SEQUENCE: Final = 0x30
_SET: Final = 0x31
_OCTET_STRING: Final = 0x04
_REFUSED: Final = (
    ValueError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)
"""What `cryptography` raises for a certificate it will not read."""
_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.DOTALL
)


@dataclass(frozen=True)
class LoadedCertificate:
    """A certificate as loaded: `certificate` to read (names, key, extensions), `tbs` the
    original signed bytes, and whether it had to be re-encoded to be read."""

    certificate: x509.Certificate
    tbs: bytes
    reencoded: bool


# --- a minimal DER reader and writer -------------------------------------------------------


def _header(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, offset of the content, content length) of the element at `at`."""
    if at + 2 > len(data):
        raise ParseError("DER: truncated element header")
    tag = data[at]
    if tag & 0x1F == 0x1F:
        raise ParseError("DER: multi-byte tags are not supported")
    first = data[at + 1]
    at += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise ParseError("DER: indefinite length")
    else:
        count = first & 0x7F
        if count > 4 or at + count > len(data):
            raise ParseError("DER: bad length")
        length = int.from_bytes(data[at : at + count], "big")
        at += count
    if at + length > len(data):
        raise ParseError("DER: element runs past the end")
    return tag, at, length


def _children(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, content) elements that make up `data`, exactly (no trailing bytes)."""
    out = []
    at = 0
    while at < len(data):
        tag, start, length = _header(data, at)
        out.append((tag, data[start : start + length]))
        at = start + length
    return out


def _encode(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(raw))) + raw + content


def _canonical(tag: int, content: bytes, depth: int) -> bytes:
    if depth > MAX_DEPTH:
        raise ParseError(f"DER: nested deeper than {MAX_DEPTH}")
    if not tag & 0x20:  # primitive: the value as it is
        return _encode(tag, content)
    members = [_canonical(t, c, depth + 1) for t, c in _children(content)]
    if tag == _SET:
        # X.690 11.6: a SET OF's members in ascending order of their encodings.
        members.sort()
    return _encode(tag, b"".join(members))


def canonical_der(data: bytes) -> bytes:
    """`data` (one element) re-encoded as DER: SET members sorted, minimal lengths.

    Raises ParseError when `data` is not one well-formed element.
    """
    elements = _children(data)
    if len(elements) != 1:
        raise ParseError("DER: expected exactly one element")
    tag, content = elements[0]
    return _canonical(tag, content, 0)


def _canonical_extensions(tbs_content: bytes) -> bytes:
    """The tbsCertificate content with every extension's value re-encoded too (an extension
    value is DER inside an OCTET STRING, which the generic walk leaves alone)."""
    fields = []
    for tag, content in _children(tbs_content):
        if tag == 0xA3:  # [3] EXPLICIT Extensions
            (seq_tag, seq), *rest = _children(content)
            if seq_tag != _SEQUENCE or rest:
                raise ParseError("DER: malformed extensions")
            extensions = []
            for ext_tag, ext in _children(seq):
                parts = [
                    _encode(_OCTET_STRING, canonical_der(c))
                    if t == _OCTET_STRING
                    else _encode(t, c)
                    for t, c in _children(ext)
                ]
                extensions.append(_encode(ext_tag, b"".join(parts)))
            content = _encode(_SEQUENCE, b"".join(extensions))
        fields.append(_encode(tag, content))
    return b"".join(fields)


# --- certificates --------------------------------------------------------------------------


def _parts(der: bytes) -> tuple[bytes, bytes, bytes]:
    """(whole tbsCertificate element, its content, the rest) of a Certificate."""
    elements = _children(der)
    if len(elements) != 1 or elements[0][0] != _SEQUENCE:
        raise ParseError("not a certificate: expected one SEQUENCE")
    inner = elements[0][1]
    tag, start, length = _header(inner, 0)
    if tag != _SEQUENCE:
        raise ParseError("not a certificate: tbsCertificate is not a SEQUENCE")
    return inner[: start + length], inner[start : start + length], inner[start + length :]


def _strict(der: bytes) -> x509.Certificate | None:
    try:
        certificate = x509.load_der_x509_certificate(der)
        certificate.extensions  # noqa: B018 - parsed lazily; refused here or never
    except _REFUSED:
        return None
    return certificate


def load_certificate(der: bytes, what: str = "certificate") -> LoadedCertificate:
    """Load a DER certificate, strictly if `cryptography` accepts it (with its extensions),
    else from its canonical re-encoding (see the module docstring).

    Raises ParseError naming `what` when neither loads.
    """
    if len(der) > MAX_CERTIFICATE:
        raise ParseError(f"{what} is larger than {MAX_CERTIFICATE} bytes")
    try:
        tbs, tbs_content, rest = _parts(der)
    except ParseError as exc:
        raise ParseError(f"{what} is not a DER X.509 certificate: {exc}") from exc
    strict = _strict(der)
    if strict is not None:
        return LoadedCertificate(strict, tbs, reencoded=False)
    try:
        canonical_tbs = canonical_der(_encode(_SEQUENCE, _canonical_extensions(tbs_content)))
        rebuilt = _encode(
            _SEQUENCE, canonical_tbs + b"".join(_canonical(t, c, 1) for t, c in _children(rest))
        )
        certificate = x509.load_der_x509_certificate(rebuilt)
        certificate.extensions  # noqa: B018
    except (ParseError, *_REFUSED) as exc:
        raise ParseError(f"{what} is not a DER X.509 certificate: {exc}") from exc
    return LoadedCertificate(certificate, tbs, reencoded=True)


def load_pem_certificates(data: bytes, what: str = "PEM file") -> list[LoadedCertificate]:
    """Every ``CERTIFICATE`` block of a PEM file, each by :func:`load_certificate`.

    Raises ParseError when there is none or one does not load.
    """
    blocks = _PEM_BLOCK.findall(data)
    if not blocks:
        raise ParseError(f"{what}: no PEM CERTIFICATE block")
    loaded = []
    for number, block in enumerate(blocks, start=1):
        try:
            der = base64.b64decode(b"".join(block.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ParseError(f"{what}: certificate {number}: bad base64 ({exc})") from exc
        loaded.append(load_certificate(der, f"{what}: certificate {number}"))
    return loaded


def verify_signed_by(child: LoadedCertificate, issuer_key: CertificatePublicKeyTypes) -> None:
    """Check `child`'s signature over its original tbsCertificate bytes with `issuer_key`.

    Raises EvidenceError when it does not verify or the algorithm is not usable.
    """
    cert = child.certificate
    try:
        params = cert.signature_algorithm_parameters
        hash_alg = cert.signature_hash_algorithm
        if isinstance(issuer_key, rsa.RSAPublicKey):
            if not isinstance(params, padding.PSS | padding.PKCS1v15) or hash_alg is None:
                raise EvidenceError("signature algorithm does not match an RSA issuer key")
            issuer_key.verify(cert.signature, child.tbs, params, hash_alg)
        elif isinstance(issuer_key, ec.EllipticCurvePublicKey):
            if not isinstance(params, ec.ECDSA):
                raise EvidenceError("signature algorithm does not match an ECDSA issuer key")
            issuer_key.verify(cert.signature, child.tbs, params)
        elif isinstance(issuer_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            issuer_key.verify(cert.signature, child.tbs)
        else:
            raise EvidenceError(f"issuer key type {type(issuer_key).__name__} is not supported")
    except InvalidSignature as exc:
        raise EvidenceError("signature does not verify") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise EvidenceError(f"signature cannot be checked: {exc}") from exc
