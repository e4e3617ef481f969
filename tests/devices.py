"""An attested device and an enforcement point, as the posture tests make them.

``attested()`` is the posture a ``dev``-class device earns (what a verified quote gives);
``server_settings()`` writes the TLS files of a server whose certificate comes from its own
Docket CA and which requires client certificates from it (mTLS), trusting :data:`PEP`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attestation._ca import CertificateAuthority
from attestation._posture import Posture
from engine._runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TD = "docket.local"
EK_HASH = bytes(range(32))
DEVICE_ID = f"spiffe://{TD}/device/{EK_HASH.hex()}"
PEP = f"spiffe://{TD}/ns/edge/sa/envoy"
"""The enforcement point (Envoy) the servers of these tests trust."""


def attested(*, measured_boot_ok: bool = True, ek_hash: bytes = EK_HASH) -> Posture:
    """An attested device's posture (dev class, Secure Boot on, in eu-west)."""
    return Posture(
        attested=True,
        device_class="dev",
        secure_boot=True,
        measured_boot_ok=measured_boot_ok,
        firmware_version=0x20191023_00163636,
        tpm_manufacturer="IBM",
        ek_hash=ek_hash,
        region="eu-west",
    )


def server_settings(root: Path, **settings: Any) -> tuple[Settings, CertificateAuthority]:
    """Settings of a server under ``root`` whose CA is made first, so that its TLS is the
    CA's and mTLS clients present Docket X.509-SVIDs; it trusts :data:`PEP`."""
    data = root / "data"
    now = datetime.now(UTC)
    ca = CertificateAuthority.init(data / "ca", TD, now)
    credential = ca.issue_server_cert(["localhost"], now=now)
    (root / "server.pem").write_bytes(credential.chain_pem())
    (root / "server.key").write_bytes(credential.key_pem())
    (root / "bundle.pem").write_bytes(ca.trust_bundle())
    config = Settings(
        bundle=ROOT / "policies",
        data_dir=data,
        bundle_poll_seconds=60,
        tls_cert=root / "server.pem",
        tls_key=root / "server.key",
        tls_client_ca=root / "bundle.pem",
        trusted_peps=(PEP,),
        **settings,
    )
    return config, ca
