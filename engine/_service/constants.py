"""Names shared by the services and the transports that feed them: the context
attributes Docket fills itself and the batch bound. Plain values, so a service need
not import protobuf code to know them."""

from __future__ import annotations

CALLER = "caller"
"""The context attribute holding the caller's SPIFFE ID on an mTLS connection."""
DEVICE = "device"
"""The context attribute holding the device's posture (``DevicePosture`` in the schema)."""
ATTESTED_DEVICE_FIELDS = (
    "attested",
    "secure_boot",
    "measured_boot_ok",
    "firmware_version",
    "tpm_manufacturer",
    "ek_hash",
    "device_class",
    "region",
    "boot_chain",
    "dbx_revision",
    "crtm_version",
    "id",
)
"""Fields of ``context.device`` that only a verified Docket credential sets (the
attestation's posture claims and the device's SPIFFE ID); a caller sending one is
refused."""
INVENTORY_DEVICE_FIELDS = ("disk_encrypted", "patch_age_days", "trust_tier", "managed")
"""Fields of ``context.device`` the caller relays (an MDM's facts), recorded as
caller-asserted in the audit entry."""
ATTESTED_BY_DOCKET = "set by Docket from a verified device credential, not by the caller"
MAX_BATCH = 1000
"""Requests per BatchAuthorize call; more is RESOURCE_EXHAUSTED."""
