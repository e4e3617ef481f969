"""The whole attestation flow against a real TPM (swtpm driven by tpm2-tools).

An RSA EK (allow-listed: swtpm without swtpm_setup has no EK certificate) and an ECC AK
enroll; the TPM activates the credential and quotes PCRs 0-7 over the nonce; the verifier
accepts it and appraises it against the default bundle's reference values as the `dev`
class (an unmeasured TPM: PCRs 0-7 all zero). A quote over another nonce and a wrong
activated secret are refused.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from swtpm import TOOLS, SoftwareTpm

from attestation._errors import EvidenceError
from attestation._reference import ReferenceValues, appraise_any, load_reference, parse_reference
from attestation._verifier import (
    Challenge,
    PendingChallenge,
    TrustRoots,
    UnverifiedEnrollment,
    appraise,
    begin_enrollment,
    ek_key_hash,
    finish_attestation,
)

pytestmark = pytest.mark.e2e

SHA256 = 0x000B
PCRS = range(8)
SELECTION = "sha256:" + ",".join(str(i) for i in PCRS)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "policies" / "reference"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def _require_tools() -> None:
    missing = [tool for tool in (*TOOLS, "tpm2_pcrread") if shutil.which(tool) is None]
    if not missing:
        return
    message = f"missing {', '.join(missing)}: apt-get install swtpm swtpm-tools tpm2-tools"
    if _in_ci():
        pytest.fail(f"{message}; CI must not skip")
    pytest.skip(message)


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftwareTpm]:
    """A swtpm for this module, started fresh and stopped by its PID at the end."""
    _require_tools()
    tpm = SoftwareTpm.start(tmp_path_factory.mktemp("swtpm"))
    try:
        yield tpm
    finally:
        tpm.stop()


@dataclass(frozen=True)
class Device:
    tpm: SoftwareTpm
    directory: Path
    enrollment: UnverifiedEnrollment
    roots: TrustRoots

    def run(self, *argv: str, check: bool = True) -> None:
        self.tpm.run(*argv, cwd=self.directory, check=check)

    def activate(self, credential: bytes) -> bytes:
        """tpm2_activatecredential under the EK policy (PolicySecret of the endorsement)."""
        cwd = self.directory
        (cwd / "cred.bin").write_bytes(credential)
        (cwd / "out.secret").unlink(missing_ok=True)
        self.run("tpm2_startauthsession", "--policy-session", "-S", "session.ctx")
        try:
            self.run("tpm2_policysecret", "-S", "session.ctx", "-c", "e")
            self.run(
                "tpm2_activatecredential",
                *("-c", "ak.ctx", "-C", "ek.ctx", "-i", "cred.bin", "-o", "out.secret"),
                *("-P", "session:session.ctx"),
            )
        finally:
            self.run("tpm2_flushcontext", "session.ctx")
        return (cwd / "out.secret").read_bytes()

    def quote(self, nonce: bytes) -> tuple[bytes, bytes, dict[tuple[int, int], bytes]]:
        """tpm2_quote over PCRs 0-7 and tpm2_pcrread of them: (quote, signature, values)."""
        self.run(
            "tpm2_quote",
            *("-c", "ak.ctx", "-q", nonce.hex(), "-l", SELECTION),
            *("-m", "quote.msg", "-s", "quote.sig", "-g", "sha256"),
        )
        self.run("tpm2_pcrread", "-o", "pcrs.bin", SELECTION)
        raw = (self.directory / "pcrs.bin").read_bytes()
        assert len(raw) == 32 * len(PCRS)
        values = {(SHA256, i): raw[32 * n : 32 * (n + 1)] for n, i in enumerate(PCRS)}
        return (
            (self.directory / "quote.msg").read_bytes(),
            (self.directory / "quote.sig").read_bytes(),
            values,
        )


@pytest.fixture(scope="module")
def device(tpm: SoftwareTpm, tmp_path_factory: pytest.TempPathFactory) -> Device:
    directory = tmp_path_factory.mktemp("device")
    tpm.run("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub", cwd=directory)
    tpm.run(
        "tpm2_createak",
        *("-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa"),
        *("-u", "ak.pub", "-n", "ak.name"),
        cwd=directory,
    )
    ek_public = (directory / "ek.pub").read_bytes()
    enrollment = UnverifiedEnrollment(ek_public, None, (directory / "ak.pub").read_bytes())
    roots = TrustRoots((), frozenset({ek_key_hash(ek_public)}))
    return Device(tpm, directory, enrollment, roots)


def enroll(device: Device) -> tuple[Challenge, PendingChallenge]:
    return begin_enrollment(device.enrollment, device.roots, now=NOW)


def test_swtpm_attests_as_dev(device: Device) -> None:
    reference = load_reference(DEFAULT_REFERENCE)
    assert reference.pcr_selection() == [("sha256", list(PCRS))]
    challenge, pending = enroll(device)
    secret = device.activate(challenge.credential)
    quote, signature, values = device.quote(challenge.nonce)
    verified = finish_attestation(
        pending,
        activated_secret=secret,
        quote=quote,
        signature=signature,
        pcr_values=values,
        now=NOW + timedelta(seconds=1),
        required_pcrs=reference.required_pcrs(),
        last_clock=(0, 0),
    )
    assert verified.ak_name == (device.directory / "ak.name").read_bytes()
    assert dict(verified.pcrs) == values
    assert set(values.values()) == {bytes(32)}  # swtpm measures nothing
    posture = appraise_any(verified, reference)
    assert posture.attested
    assert posture.device_class == "dev"
    assert not posture.secure_boot
    assert not posture.measured_boot_ok
    assert posture.tpm_manufacturer == ""  # allow-listed: no EK certificate to name it
    assert posture.region is None
    assert posture.ek_hash == ek_key_hash(device.enrollment.ek_public)
    assert posture.firmware_version == verified.firmware_version
    assert posture.claims()["device_class"] == "dev"
    dev = reference.get("dev")
    assert dev is not None
    assert appraise(verified, dev) == posture


def test_swtpm_matches_no_production_class(device: Device) -> None:
    """Without the dev class (a production bundle), the same TPM is refused."""
    challenge, pending = enroll(device)
    secret = device.activate(challenge.credential)
    quote, signature, values = device.quote(challenge.nonce)
    verified = finish_attestation(
        pending,
        activated_secret=secret,
        quote=quote,
        signature=signature,
        pcr_values=values,
        now=NOW + timedelta(seconds=1),
    )
    measured = "\n".join(f'{i} = "{"ab" * 32}"' for i in PCRS)
    toml = f"secure_boot = true\nmeasured_boot = true\n[pcrs.sha256]\n{measured}\n"
    production = parse_reference({"prod.toml": toml.encode()})
    with pytest.raises(
        EvidenceError,
        match=r"^matches no reference class: prod: PCR sha256:0 does not match its reference",
    ):
        appraise_any(verified, production)
    with pytest.raises(EvidenceError, match="no reference values are configured"):
        appraise_any(verified, ReferenceValues())


def test_swtpm_quote_over_another_nonce_is_refused(device: Device) -> None:
    challenge, pending = enroll(device)
    secret = device.activate(challenge.credential)
    quote, signature, values = device.quote(bytes(32))
    with pytest.raises(EvidenceError, match="nonce"):
        finish_attestation(
            pending,
            activated_secret=secret,
            quote=quote,
            signature=signature,
            pcr_values=values,
            now=NOW,
        )


def test_swtpm_wrong_activated_secret_is_refused(device: Device) -> None:
    challenge, pending = enroll(device)
    _, other = enroll(device)
    secret = device.activate(challenge.credential)
    quote, signature, values = device.quote(other.nonce)
    with pytest.raises(EvidenceError, match="activated secret"):
        finish_attestation(
            other,
            activated_secret=secret,
            quote=quote,
            signature=signature,
            pcr_values=values,
            now=NOW,
        )
    assert secret == pending.secret  # the TPM did give back this challenge's secret
