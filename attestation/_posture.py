"""The posture: the appraised state of a device, what credentials and policy see.

A :class:`Posture` is what the verifier's appraisal returns (``attestation._verifier``),
what the CA writes into an X.509-SVID's extension and a JWT-SVID's claims
(:meth:`Posture.claims`), and what a relying party reads back from either
(:meth:`Posture.from_claims`, strict: ParseError on anything :meth:`Posture.claims` would
not write). The formats of its names (a device class, a region) are here too, because
reference values name the class and region a posture gets.

This module imports nothing else of ``attestation`` but its errors: the verifier and the
reference values both import it, and not each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, ValidationError

from attestation._errors import ParseError

__all__ = [
    "BOOT_FACTS",
    "CLASS_NAME_PATTERN",
    "CRTM_VERSION_PATTERN",
    "MANUFACTURER_PATTERN",
    "REGION_PATTERN",
    "Posture",
]

CLASS_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""A device class name (a reference file's stem by default)."""
REGION_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""A region a reference class puts into the posture."""
MANUFACTURER_PATTERN: Final = r"^[\x20-\x7e]{0,64}$"
"""A TPM manufacturer as a posture carries it: printable ASCII, at most 64."""
CRTM_VERSION_PATTERN: Final = r"^[\x20-\x7e]{0,128}$"
"""A platform firmware version (EV_S_CRTM_VERSION) as a posture carries it: printable ASCII,
at most 128."""
BOOT_FACTS: Final = ("boot_chain", "dbx_revision", "crtm_version")
"""The claims only an appraised boot event log gives; absent otherwise, never null."""


class _PostureClaims(BaseModel):
    """The wire form of a Posture (JWT claims, certificate extension), checked strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    attested: StrictBool
    device_class: Annotated[str, StringConstraints(strict=True, pattern=CLASS_NAME_PATTERN)]
    secure_boot: StrictBool
    measured_boot_ok: StrictBool
    firmware_version: Annotated[str, StringConstraints(strict=True, pattern=r"^0x[0-9a-f]{16}$")]
    tpm_manufacturer: Annotated[str, StringConstraints(strict=True, pattern=MANUFACTURER_PATTERN)]
    ek_hash: Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9a-f]{64}$")]
    region: Annotated[str, StringConstraints(strict=True, pattern=REGION_PATTERN)] | None = None
    boot_chain: Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9a-f]{64}$")] | None = (
        None
    )
    dbx_revision: Annotated[int, Field(strict=True, ge=0, lt=2**32)] | None = None
    crtm_version: (
        Annotated[str, StringConstraints(strict=True, pattern=CRTM_VERSION_PATTERN)] | None
    ) = None


@dataclass(frozen=True)
class Posture:
    """The appraised state of a device, what credentials and policy see.

    `secure_boot`, `measured_boot_ok` and `region` come from the reference class that
    matched; `tpm_manufacturer` from the verified EK certificate ("" when unknown);
    `firmware_version` is the TPM's (from the quote). A class that appraises the boot event
    log (``attestation._measured_boot``) gives `secure_boot` from the log's SecureBoot
    variable, and the boot facts: `boot_chain` (SHA-256 hex over the boot applications'
    digests in order), `dbx_revision` (the class's number for the measured dbx, None when
    it knows none) and `crtm_version` (the platform firmware's EV_S_CRTM_VERSION text);
    they are None for a PCR-only class.
    """

    attested: bool
    device_class: str
    secure_boot: bool
    measured_boot_ok: bool
    firmware_version: int
    tpm_manufacturer: str
    ek_hash: bytes
    region: str | None = None
    boot_chain: str | None = None
    dbx_revision: int | None = None
    crtm_version: str | None = None

    def claims(self) -> dict[str, object]:
        """JSON-ready claims: `firmware_version` as ``0x`` + 16 lowercase hex digits (it is
        a 64-bit unsigned number; Cedar's Long is signed), `ek_hash` as lowercase hex, and
        `region` and the boot facts (:data:`BOOT_FACTS`) only when set."""
        claims: dict[str, object] = {
            "attested": self.attested,
            "device_class": self.device_class,
            "secure_boot": self.secure_boot,
            "measured_boot_ok": self.measured_boot_ok,
            "firmware_version": f"0x{self.firmware_version:016x}",
            "tpm_manufacturer": self.tpm_manufacturer,
            "ek_hash": self.ek_hash.hex(),
        }
        optional = {"region": self.region, **{name: getattr(self, name) for name in BOOT_FACTS}}
        claims.update({name: value for name, value in optional.items() if value is not None})
        return claims

    @classmethod
    def from_claims(cls, claims: object) -> Posture:
        """The posture of :meth:`claims` output (from a JWT or a certificate extension).

        Strict: exactly the keys :meth:`claims` writes (``region`` and the boot facts
        optional, never null), exact JSON types and formats. Raises ParseError on anything
        else.
        """
        if not isinstance(claims, Mapping):
            raise ParseError(f"posture claims: expected an object, got {type(claims).__name__}")
        for name in ("region", *BOOT_FACTS):
            if name in claims and claims[name] is None:
                raise ParseError(f"posture claims: {name}: null is not allowed (omit it)")
        try:
            parsed = _PostureClaims.model_validate(dict(claims))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "claims"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ParseError(f"posture claims: {where}: {error['msg']}{more}") from exc
        return cls(
            attested=parsed.attested,
            device_class=parsed.device_class,
            secure_boot=parsed.secure_boot,
            measured_boot_ok=parsed.measured_boot_ok,
            firmware_version=int(parsed.firmware_version, 16),
            tpm_manufacturer=parsed.tpm_manufacturer,
            ek_hash=bytes.fromhex(parsed.ek_hash),
            region=parsed.region,
            boot_chain=parsed.boot_chain,
            dbx_revision=parsed.dbx_revision,
            crtm_version=parsed.crtm_version,
        )
