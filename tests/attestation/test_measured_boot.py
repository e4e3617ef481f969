"""Measured-boot appraisal (attestation._measured_boot) on synthetic crypto-agile logs: each
rule in turn refuses, naming itself; the boot facts; a policy derived from known-good logs
admits them and refuses a change."""

from __future__ import annotations

import hashlib
import tomllib
from typing import Any

import eventlogs
import pytest
from eventlogs import LogEvent

from attestation._errors import EvidenceError
from attestation._eventlog import parse_event_log
from attestation._measured_boot import (
    STANDARD_ACTIONS,
    BootFacts,
    EventLogPolicy,
    appraise_boot,
    boot_class_toml,
    derive_boot_policy,
)
from attestation._reference import parse_reference


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


IMAGES = (eventlogs.SHIM, eventlogs.GRUB, eventlogs.KERNEL)
CHAIN = hashlib.sha256(b"".join(hashlib.sha256(i).digest() for i in IMAGES)).hexdigest()
POLICY: dict[str, Any] = {
    "pk": [sha256(eventlogs.PK)],
    "kek_entries": [sha256(b"kek certificate one"), sha256(b"kek certificate two")],
    "db": [sha256(eventlogs.DB), "00" * 32],
    "dbx_revisions": {sha256(eventlogs.DBX): 371},
    "min_dbx_revision": 371,
    "boot": [
        {"name": "shim", "digests": [sha256(eventlogs.SHIM)]},
        {"name": "grub", "digests": ["11" * 32, sha256(eventlogs.GRUB)]},
        {"name": "kernel", "digests": [sha256(eventlogs.KERNEL)]},
    ],
    "min_crtm_version": "1.0.1",
}


def appraise(events: list[LogEvent], *, secure_boot: bool = True, **policy: Any) -> BootFacts:
    log = parse_event_log(eventlogs.crypto_agile(events))
    return appraise_boot(
        log, EventLogPolicy.model_validate({**POLICY, **policy}), secure_boot=secure_boot
    )


def test_a_good_log_gives_the_boot_facts() -> None:
    facts = appraise(eventlogs.standard_boot())
    assert facts == BootFacts(
        secure_boot=True, boot_chain=CHAIN, dbx_revision=371, crtm_version="1.0.2"
    )


def test_with_no_rules_only_unexpected_events_are_refused() -> None:
    log = parse_event_log(eventlogs.crypto_agile(eventlogs.standard_boot(secure_boot=False)))
    facts = appraise_boot(log, EventLogPolicy(), secure_boot=False)
    assert facts == BootFacts(False, CHAIN, None, "1.0.2")


def _dbx_twice() -> list[LogEvent]:
    return [*eventlogs.standard_boot(), eventlogs.variable("dbx", eventlogs.DBX)]


# (events, policy changes, the refusal)
REFUSALS: list[Any] = [
    pytest.param(
        eventlogs.standard_boot(extra=[eventlogs.action(7, "UEFI Debug Mode")]),
        {},
        r"event 16 \(EV_EFI_ACTION, PCR 7\): unexpected action 'UEFI Debug Mode'",
        id="debug-mode",
    ),
    pytest.param(
        eventlogs.standard_boot(extra=[eventlogs.action(7, "DMA Protection Disabled")]),
        {},
        "unexpected action 'DMA Protection Disabled'",
        id="dma-protection-off",
    ),
    pytest.param(
        eventlogs.standard_boot(extra=[LogEvent(2, 0x7777, b"?")]),
        {},
        r"PCR 2\): an event type the appraisal does not know",
        id="unknown-type",
    ),
    pytest.param(
        eventlogs.standard_boot(extra=[eventlogs.separator(1, value=1)]),
        {},
        "separator 01000000",
        id="error-separator",
    ),
    pytest.param(_dbx_twice(), {}, "dbx is measured twice", id="variable-twice"),
    pytest.param(
        eventlogs.standard_boot(secure_boot=False),
        {},
        r"Secure Boot is off \(SecureBoot = 00\)",
        id="secure-boot-off",
    ),
    pytest.param(
        [e for e in eventlogs.standard_boot() if b"S\x00e\x00c" not in e.data],
        {},
        "the SecureBoot variable was not measured",
        id="secure-boot-absent",
    ),
    pytest.param(
        eventlogs.standard_boot(), {"pk": ["22" * 32]}, "PK .* is not one the class allows", id="pk"
    ),
    pytest.param(
        eventlogs.standard_boot(),
        {"kek_entries": [sha256(b"kek certificate one")]},
        f"KEK holds an entry the class does not allow: {sha256(b'kek certificate two')}",
        id="kek-entry",
    ),
    pytest.param(
        eventlogs.standard_boot(),
        {"min_dbx_revision": 372},
        "dbx revision 371 is below the minimum 372",
        id="dbx-old",
    ),
    pytest.param(
        eventlogs.standard_boot(),
        {"dbx_revisions": {"33" * 32: 400}},
        "dbx .* is not a revision the class knows",
        id="dbx-unknown",
    ),
    pytest.param(
        eventlogs.standard_boot(images=(eventlogs.SHIM, b"evil grub", eventlogs.KERNEL)),
        {},
        rf"boot application 2 \(grub\) sha256 {sha256(b'evil grub')} is not one the class",
        id="boot-loader",
    ),
    pytest.param(
        eventlogs.standard_boot(images=(eventlogs.SHIM, eventlogs.KERNEL)),
        {},
        r"2 boot applications were measured \(PCR 4\); the class expects 3 \(shim, grub, kernel\)",
        id="chain-short",
    ),
    pytest.param(
        eventlogs.standard_boot(crtm="0.9.9"),
        {},
        "firmware version '0.9.9' is below the minimum 1.0.1",
        id="firmware-old",
    ),
    pytest.param(
        eventlogs.standard_boot(),
        {"min_crtm_version": None, "crtm_versions": ["2.0"]},
        "firmware version '1.0.2' is not one the class allows",
        id="firmware-not-listed",
    ),
]


@pytest.mark.parametrize(("events", "policy", "message"), REFUSALS)
def test_each_rule_refuses_naming_itself(
    events: list[LogEvent], policy: dict[str, Any], message: str
) -> None:
    with pytest.raises(EvidenceError, match=message):
        appraise(events, **policy)


def _kept_digest(index: int, data: bytes) -> list[LogEvent]:
    """The standard boot with event ``index``'s data replaced, its digests kept (the log's
    event ``index + 1``: the Spec ID header is its event 0)."""
    events = eventlogs.standard_boot()
    kept = {bank: events[index].digest(bank) for bank in ("sha1", "sha256")}
    return eventlogs.with_event(events, index, data=data, digests=kept)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        pytest.param(
            _kept_digest(1, eventlogs.variable("SecureBoot", b"\x01").data[:-1] + b"\x02"),
            r"event 2 \(EV_EFI_VARIABLE_DRIVER_CONFIG\) at offset \d+: its data is not",
            id="variable",
        ),
        pytest.param(
            _kept_digest(6, b"Exit Boot Services Invocation"),
            r"event 7 \(EV_EFI_ACTION\) at offset \d+: its data is not",
            id="action",
        ),
        pytest.param(
            _kept_digest(0, "9.9.9\x00".encode("utf-16-le")),
            r"the EV_S_CRTM_VERSION event cannot be read: event 1 \(EV_S_CRTM_VERSION\) at "
            r"offset \d+: its data is not .*, and the class names a firmware version",
            id="crtm",
        ),
    ],
)
def test_data_edited_under_a_kept_digest_is_refused(events: list[LogEvent], message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        appraise(events)


@pytest.mark.parametrize(
    "crtm",
    [
        pytest.param(_kept_digest(0, "9.9.9\x00".encode("utf-16-le"))[0], id="not-proven"),
        pytest.param(LogEvent(0, eventlogs.EV_S_CRTM_VERSION, b"\xff\xfe\x00\xd8"), id="binary"),
    ],
)
def test_a_crtm_version_that_cannot_be_read_refuses_only_a_class_with_a_firmware_rule(
    crtm: LogEvent,
) -> None:
    events = [crtm, *eventlogs.standard_boot()[1:]]
    assert appraise(events, min_crtm_version=None).crtm_version is None
    with pytest.raises(EvidenceError, match="the EV_S_CRTM_VERSION event cannot be read"):
        appraise(events)


def test_a_class_may_allow_an_extra_action_but_not_the_standard_ones_away() -> None:
    events = eventlogs.standard_boot(extra=[eventlogs.action(1, "Booting BIOS")])
    assert appraise(events, allowed_actions=["Booting BIOS"]).boot_chain == CHAIN
    assert "Exit Boot Services Invocation" in STANDARD_ACTIONS


def test_events_of_pcrs_past_7_are_not_appraised() -> None:
    events = eventlogs.standard_boot(extra=[eventlogs.action(8, "grub_cmd: anything")])
    assert appraise(events).crtm_version == "1.0.2"


def test_a_derived_policy_admits_its_logs_and_refuses_another_kernel() -> None:
    logs = [
        parse_event_log(eventlogs.crypto_agile(eventlogs.standard_boot(crtm=crtm, images=images)))
        for crtm, images in (
            ("1.0.2", IMAGES),
            ("1.0.3", (eventlogs.SHIM, eventlogs.GRUB, b"vmlinuz 6.9")),
        )
    ]
    derived = derive_boot_policy(logs)
    assert derived.secure_boot
    assert [len(stage.digests) for stage in derived.policy.boot] == [1, 1, 2]
    assert derived.policy.crtm_versions == ("1.0.2", "1.0.3")
    text = boot_class_toml(derived, "fleet")
    parsed = parse_reference({"fleet.toml": text.encode()}).classes[0]
    assert parsed.event_log == derived.policy
    assert tomllib.loads(text)["secure_boot"] is True
    for log in logs:
        assert appraise_boot(log, derived.policy, secure_boot=True).secure_boot
    other = parse_event_log(
        eventlogs.crypto_agile(
            eventlogs.standard_boot(images=(eventlogs.SHIM, eventlogs.GRUB, b"vmlinuz evil"))
        )
    )
    with pytest.raises(EvidenceError, match=r"boot application 3 \(kernel\)"):
        appraise_boot(other, derived.policy, secure_boot=True)


def test_deriving_from_logs_with_different_chains_is_refused() -> None:
    logs = [
        parse_event_log(eventlogs.crypto_agile(eventlogs.standard_boot(images=images)))
        for images in (IMAGES, IMAGES[:2])
    ]
    with pytest.raises(EvidenceError, match="disagree on the number of boot applications"):
        derive_boot_policy(logs)
    with pytest.raises(EvidenceError, match="no event log"):
        derive_boot_policy([])
