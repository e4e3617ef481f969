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

from pydantic import BaseModel, ConfigDict, StrictBool, StringConstraints, ValidationError

from attestation._errors import ParseError

__all__ = ["CLASS_NAME_PATTERN", "MANUFACTURER_PATTERN", "REGION_PATTERN", "Posture"]

CLASS_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""A device class name (a reference file's stem by default)."""
REGION_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""A region a reference class puts into the posture."""
MANUFACTURER_PATTERN: Final = r"^[\x20-\x7e]{0,64}$"
"""A TPM manufacturer as a posture carries it: printable ASCII, at most 64."""


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


@dataclass(frozen=True)
class Posture:
    """The appraised state of a device, what credentials and policy see.

    `secure_boot`, `measured_boot_ok` and `region` come from the reference class that
    matched; `tpm_manufacturer` from the verified EK certificate ("" when unknown).
    """

    attested: bool
    device_class: str
    secure_boot: bool
    measured_boot_ok: bool
    firmware_version: int
    tpm_manufacturer: str
    ek_hash: bytes
    region: str | None = None

    def claims(self) -> dict[str, object]:
        """JSON-ready claims: `firmware_version` as ``0x`` + 16 lowercase hex digits (it is
        a 64-bit unsigned number; Cedar's Long is signed), `ek_hash` as lowercase hex, and
        `region` only when set."""
        claims: dict[str, object] = {
            "attested": self.attested,
            "device_class": self.device_class,
            "secure_boot": self.secure_boot,
            "measured_boot_ok": self.measured_boot_ok,
            "firmware_version": f"0x{self.firmware_version:016x}",
            "tpm_manufacturer": self.tpm_manufacturer,
            "ek_hash": self.ek_hash.hex(),
        }
        if self.region is not None:
            claims["region"] = self.region
        return claims

    @classmethod
    def from_claims(cls, claims: object) -> Posture:
        """The posture of :meth:`claims` output (from a JWT or a certificate extension).

        Strict: exactly the keys :meth:`claims` writes (``region`` optional, never null),
        exact JSON types and formats. Raises ParseError on anything else.
        """
        if not isinstance(claims, Mapping):
            raise ParseError(f"posture claims: expected an object, got {type(claims).__name__}")
        if "region" in claims and claims["region"] is None:
            raise ParseError("posture claims: region: null is not allowed (omit it)")
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
        )
