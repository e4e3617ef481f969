"""Measured boot end to end: a swtpm whose PCRs were extended with a synthetic
crypto-agile boot log's events (tests/eventlogs.py), ``docket attest --event-log`` against
a real ``docket serve`` whose bundle has one class, ``fleet``, that appraises that log
(no golden PCR values).

The log as booted earns credentials whose posture (SVID extension, JWT) carries the boot
facts, recorded in the audit entry; the log with one event changed is refused naming the
PCR that does not replay; a log whose events are all as measured but whose SecureBoot
variable is 0 replays and is refused by the appraisal.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import eventlogs
import jwt
import pytest
from cryptography import x509
from e2e.booted import CHAIN, booted, serve_fleet, sha256
from e2e.docket_process import Docket, stop
from e2e.test_agent_daemon import start_agent
from e2e.test_attest_flow import docket_attest
from swtpm import ProvisionedState, SoftwareTpm

from attestation._ca import JWT_POSTURE_CLAIM
from attestation._ca.authority import POSTURE_EXTENSION, _read_posture

pytestmark = pytest.mark.e2e


@pytest.fixture
def docket(provisioned_tpm: ProvisionedState, tmp_path: Path) -> Iterator[Docket]:
    yield from serve_fleet(provisioned_tpm, tmp_path)


def attest_with_log(
    docket: Docket,
    swtpm: SoftwareTpm,
    provisioned_tpm: ProvisionedState,
    log: bytes,
    tmp_path: Path,
) -> tuple[int, str, Path]:
    path = tmp_path / "binary_bios_measurements"
    path.write_bytes(log)
    out = tmp_path / "creds"
    done = docket_attest(
        docket,
        swtpm,
        out,
        *("--ek-intermediate", str(provisioned_tpm.issuer_cert)),
        *("--event-log", str(path)),
    )
    return done.returncode, done.stdout + done.stderr, out


def test_a_booted_swtpm_and_its_log_earn_the_boot_posture(
    docket: Docket, swtpm: SoftwareTpm, provisioned_tpm: ProvisionedState, tmp_path: Path
) -> None:
    events = eventlogs.standard_boot()
    booted(swtpm, events, tmp_path)
    log = eventlogs.crypto_agile(events)
    code, output, out = attest_with_log(docket, swtpm, provisioned_tpm, log, tmp_path)
    assert code == 0, output
    assert "device class  fleet" in output
    assert f"Secure Boot on, boot chain {CHAIN[:16]}" in output
    leaf, *_ = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())
    extension = leaf.extensions.get_extension_for_oid(POSTURE_EXTENSION).value
    assert isinstance(extension, x509.UnrecognizedExtension)
    in_svid = _read_posture(extension.value)
    boot = {
        "device_class": "fleet",
        "secure_boot": True,
        "measured_boot_ok": True,
        "boot_chain": CHAIN,
        "dbx_revision": 371,
        "crtm_version": "1.0.2",
    }
    assert {k: in_svid[k] for k in boot} == boot
    token = jwt.decode((out / "jwt").read_text(), options={"verify_signature": False})
    assert {k: token[JWT_POSTURE_CLAIM][k] for k in boot} == boot
    (entry,) = [e for e in docket.audit_entries("attestation") if e["decision"] == "allow"]
    assert {k: entry["detail"]["posture"][k] for k in boot} == boot
    assert entry["detail"]["event_log"] == {"sha256": sha256(log), "bytes": len(log)}


def test_a_log_with_one_event_changed_is_refused_naming_the_pcr(
    docket: Docket, swtpm: SoftwareTpm, provisioned_tpm: ProvisionedState, tmp_path: Path
) -> None:
    events = eventlogs.standard_boot()
    booted(swtpm, events, tmp_path)
    # The log says the allowed second kernel ran; the TPM measured the first.
    kernel = len(events) - 3
    lying = eventlogs.with_event(events, kernel, digests={"sha256": bytes.fromhex("ab" * 32)})
    code, output, _ = attest_with_log(
        docket, swtpm, provisioned_tpm, eventlogs.crypto_agile(lying), tmp_path
    )
    assert code == 1, output
    assert "fleet: PCR 4 (sha256) does not replay" in output
    refusal = docket.audit_entries("attestation")[-1]
    assert refusal["decision"] == "deny"
    assert "PCR 4 (sha256) does not replay" in refusal["detail"]["reason"]


def test_a_log_that_replays_with_secure_boot_off_is_refused_by_the_appraisal(
    docket: Docket, swtpm: SoftwareTpm, provisioned_tpm: ProvisionedState, tmp_path: Path
) -> None:
    events = eventlogs.standard_boot(secure_boot=False)
    booted(swtpm, events, tmp_path)
    code, output, _ = attest_with_log(
        docket, swtpm, provisioned_tpm, eventlogs.crypto_agile(events), tmp_path
    )
    assert code == 1, output
    assert "fleet: Secure Boot is off (SecureBoot = 00)" in output


def test_a_device_that_sends_no_log_is_told_the_class_needs_one(
    docket: Docket, swtpm: SoftwareTpm, provisioned_tpm: ProvisionedState, tmp_path: Path
) -> None:
    booted(swtpm, eventlogs.standard_boot(), tmp_path)
    code, output, _ = attest_with_log(docket, swtpm, provisioned_tpm, b"", tmp_path)
    assert code == 1, output
    assert "fleet: no boot event log was sent" in output


def test_the_agent_daemon_sends_the_log_it_is_given(
    docket: Docket, swtpm: SoftwareTpm, provisioned_tpm: ProvisionedState, tmp_path: Path
) -> None:
    """``docket agent run`` takes ``docket attest``'s flags, --event-log among them."""
    events = eventlogs.standard_boot()
    booted(swtpm, events, tmp_path)
    path = tmp_path / "binary_bios_measurements"
    path.write_bytes(eventlogs.crypto_agile(events))
    running, short = start_agent(
        docket, swtpm, provisioned_tpm, tmp_path, *("--event-log", str(path))
    )
    try:
        running.wait_for("agent: SVID issued", timeout=60)
    finally:
        stop(running.process, "docket agent run")
        shutil.rmtree(short, ignore_errors=True)
    leaf, *_ = x509.load_pem_x509_certificates((tmp_path / "creds" / "svid.pem").read_bytes())
    extension = leaf.extensions.get_extension_for_oid(POSTURE_EXTENSION).value
    assert isinstance(extension, x509.UnrecognizedExtension)
    posture = _read_posture(extension.value)
    assert (posture["device_class"], posture["boot_chain"]) == ("fleet", CHAIN)
