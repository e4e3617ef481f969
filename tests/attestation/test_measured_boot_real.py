"""Measured-boot appraisal on real boot event logs (go-attestation, go-tpm-tools, Keylime;
the data and its provenance: tests/attestation/fixtures/eventlogs/README.md).

Each log with the PCRs its project recorded replays to them and is appraised by a class
derived from it (what ``docket policy derive-boot`` proposes), with Secure Boot as its
project's tests say; what the default rules refuse in real logs is refused by name; a
change under a kept digest is refused. go-attestation's Windows dump, which ships with its
quote, goes through the whole Attest verification: the real quote, the real log, appraised.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from attestation import ALG_SHA1, ReferenceValues, check_replay, derive_boot_policy
from attestation._errors import EvidenceError
from attestation._eventlog import EventLog, parse_event_log
from attestation._measured_boot import EventLogPolicy, appraise_boot
from attestation._reference import ReferenceClass
from attestation._verifier import DEFAULT_QUOTE_HASHES, PendingChallenge, verify_answer
from tests.attestation.test_eventlog_real import MANIFEST, log, names, raw, recorded

pytestmark = pytest.mark.skipif(
    not MANIFEST, reason="no real event logs: tests/attestation/fixtures/eventlogs/README.md"
)

REFUSED_BY_DEFAULT = {
    # TPM 1.2-era firmware measures a variable's value alone: its name is unproven.
    "ga-linux-tpm12": r"EV_EFI_VARIABLE_DRIVER_CONFIG\) at offset 285: its data is not what",
    # A real machine whose firmware logged that DMA protection was off (PCR 7).
    "gtt-gdc-host": "unexpected action 'DMA Protection Disabled'",
}


def bank_of(parsed: EventLog) -> str:
    return "sha256" if "sha256" in parsed.banks else "sha1"


def fleet(parsed: EventLog, *, secure_boot: bool) -> ReferenceClass:
    """The class ``docket policy derive-boot`` proposes from this one log."""
    derived = derive_boot_policy([parsed], bank_of(parsed))
    return ReferenceClass.model_validate(
        {
            "class": "fleet",
            "secure_boot": secure_boot,
            "measured_boot": True,
            "event_log": derived.policy.model_dump(),
        }
    )


@pytest.mark.parametrize("name", names("secure_boot"))
def test_secure_boot_is_what_the_projects_tests_say(name: str) -> None:
    parsed, expected = log(name), MANIFEST[name]["facts"]["secure_boot"]
    if name in REFUSED_BY_DEFAULT:
        pytest.skip("refused by the default rules: see the next test")
    policy = fleet(parsed, secure_boot=expected).event_log
    assert policy is not None
    facts = appraise_boot(parsed, policy, secure_boot=expected)
    assert facts.secure_boot is expected
    assert derive_boot_policy([parsed], bank_of(parsed)).secure_boot is expected
    if not expected:
        with pytest.raises(EvidenceError, match=r"Secure Boot is off"):
            appraise_boot(parsed, policy, secure_boot=True)


@pytest.mark.parametrize("name", sorted(REFUSED_BY_DEFAULT))
def test_what_the_default_rules_refuse_in_real_logs(name: str) -> None:
    parsed = log(name)
    policy = EventLogPolicy.model_validate({"bank": bank_of(parsed)})  # no rule but rule 1
    with pytest.raises(EvidenceError, match=REFUSED_BY_DEFAULT[name]):
        appraise_boot(parsed, policy, secure_boot=False)


def _replayable() -> list[str]:
    """Logs with PCRs recorded in the bank a class would appraise them in."""
    return [
        n
        for n in names("pcrs")
        if n not in REFUSED_BY_DEFAULT and bank_of(log(n)) in MANIFEST[n]["pcrs"]
    ]


@pytest.mark.parametrize("name", _replayable())
def test_a_real_log_replays_to_its_pcrs_and_its_derived_class_appraises_it(name: str) -> None:
    parsed = log(name)
    bank = bank_of(parsed)
    quoted = {i: v for i, v in recorded(name, bank).items() if i < 10}
    check_replay(parsed, bank, quoted)
    policy = fleet(parsed, secure_boot=False).event_log
    assert policy is not None
    facts = appraise_boot(parsed, policy, secure_boot=False)
    assert facts.boot_chain is None or len(facts.boot_chain) == 64


@pytest.mark.parametrize("name", names("quote"))
def test_a_real_quote_and_its_log_pass_the_whole_attest_verification(name: str) -> None:
    # go-attestation's Windows dump (GCP Shielded VM): an RSA AK, a SHA-1 quote of all 24
    # SHA-1 PCRs over an empty nonce, and the log it signed; Secure Boot on.
    quote: dict[str, Any] = MANIFEST[name]["quote"]
    parsed = log(name)
    ak = bytes.fromhex(quote["ak_public"])
    now = datetime(2026, 1, 1, tzinfo=UTC)
    pending = PendingChallenge(
        challenge_id="real",
        secret=b"s" * 32,
        nonce=bytes.fromhex(quote["nonce"]),
        ak_public=len(ak).to_bytes(2, "big") + ak,
        ek_hash=bytes(32),
        expires_at=now + timedelta(minutes=1),
    )
    pcrs = {(ALG_SHA1, i): v for i, v in recorded(name, "sha1", skip_ima=False).items()}

    def verify(event_log: bytes) -> Any:
        return verify_answer(
            pending,
            activated_secret=b"s" * 32,
            quote=bytes.fromhex(quote["attest"]),
            signature=bytes.fromhex(quote["signature"]),
            pcr_values=pcrs,
            reference=ReferenceValues(classes=(fleet(parsed, secure_boot=True),)),
            last_clock=None,
            now=now,
            accepted_hashes=DEFAULT_QUOTE_HASHES | {ALG_SHA1},
            event_log=event_log,
        )

    attested = verify(raw(name))
    assert attested.posture.device_class == "fleet"
    assert attested.posture.secure_boot is True
    assert attested.posture.boot_chain is not None
    # The same quote with a boot application's digest changed in the log: refused.
    flipped = bytearray(raw(name))
    application = next(e for e in parsed.events if e.type == 0x80000003 and e.pcr == 4)
    at = raw(name).index(application.digests["sha1"], application.offset)
    flipped[at] ^= 1
    with pytest.raises(EvidenceError, match=r"fleet: PCR 4 \(sha1\) does not replay"):
        verify(bytes(flipped))


def test_a_changed_secure_boot_variable_under_its_kept_digest_is_refused() -> None:
    name = "kl-binary-bios-measurements-secureboot"
    parsed = log(name)
    policy = fleet(parsed, secure_boot=True).event_log
    assert policy is not None
    data = bytearray(raw(name))
    variable = next(e for e in parsed.events if b"S\x00e\x00c\x00u\x00r\x00e" in e.data)
    end = raw(name).index(variable.data, variable.offset) + len(variable.data)
    data[end - 1] = 0  # SecureBoot 01 -> 00, the digests kept
    with pytest.raises(EvidenceError, match="its data is not what its sha256 digest measures"):
        appraise_boot(parse_event_log(bytes(data)), policy, secure_boot=False)
