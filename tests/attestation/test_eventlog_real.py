"""Real TCG event logs from go-attestation, go-tpm-tools and Keylime (recorded on real
machines and cloud VMs): each parses, replays to the PCRs its project recorded (and to the
quote where one ships), and shows the facts those projects' own tests assert. Corrupted
copies are refused with the right reason.

The logs are data fetched from those projects and are not kept in this repository: they
live in ``shared/eventlogs/`` beside it (or where ``EVENTLOG_FIXTURES`` points), with
``manifest.json`` giving each file's provenance, recorded PCRs and facts.
``fixtures/eventlogs/README.md`` says where each comes from. Without them these tests skip,
saying where they looked.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from event_logs import use_every_way
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation import (
    REPLAYED_PCRS,
    Event,
    EventLog,
    EventLogError,
    check_event_data,
    check_replay,
    efi_image_load,
    efi_variable,
    event_text,
    parse_event_log,
    replay,
)
from attestation._tpm import (
    parse_attest,
    parse_public,
    parse_signature,
    pcr_digest,
    verify_quote_signature,
)

ROOT = Path(__file__).resolve().parents[2]
EVENTLOGS = Path(os.environ.get("EVENTLOG_FIXTURES") or ROOT.parent / "shared" / "eventlogs")
MANIFEST: dict[str, dict[str, Any]] = (
    json.loads((EVENTLOGS / "manifest.json").read_text())
    if (EVENTLOGS / "manifest.json").is_file()
    else {}
)
pytestmark = pytest.mark.skipif(
    not MANIFEST,
    reason=f"no real event logs at {EVENTLOGS}: tests/attestation/fixtures/eventlogs/README.md",
)

EV_NO_ACTION = 0x3
EV_SEPARATOR = 0x4
EV_IPL = 0xD
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_BOOT = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_ACTION = 0x80000007
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
IMAGE_SECURITY = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
IMA_PCR = 10  # extended by the kernel's IMA, which is not in this log


def names(where: str | None = None) -> list[str]:
    """The logs of the manifest that parse, or those having ``where`` (a key or a fact)."""
    return sorted(
        name
        for name, entry in MANIFEST.items()
        if not entry["facts"].get("invalid")
        and (where is None or where in entry or where in entry["facts"])
    )


def raw(name: str) -> bytes:
    data = (EVENTLOGS / MANIFEST[name]["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == MANIFEST[name]["sha256"], f"{name} has changed"
    return data


def log(name: str) -> EventLog:
    return parse_event_log(raw(name))


def recorded(name: str, bank: str, *, skip_ima: bool = True) -> dict[int, bytes]:
    values = MANIFEST[name]["pcrs"][bank]
    return {
        int(i): bytes.fromhex(v) for i, v in values.items() if not (skip_ima and int(i) == IMA_PCR)
    }


def banks_recorded(key: str = "pcrs") -> list[tuple[str, str]]:
    return [(name, bank) for name in names(key) for bank in MANIFEST[name][key]]


def secure_boot(parsed: EventLog) -> bool:
    """What the SecureBoot variable measured into PCR 7 says (its data proven by its
    digest), the way go-attestation and Keylime read it."""
    for event in parsed.events:
        if event.type == EV_EFI_VARIABLE_DRIVER_CONFIG:
            variable = efi_variable(event)
            if (variable.guid, variable.name) == (GLOBAL, "SecureBoot"):
                for bank in parsed.banks:
                    check_event_data(event, bank)
                return variable.data == b"\x01"
    raise AssertionError("no SecureBoot variable measured")


# --- each log parses and replays ----------------------------------------------------------


def test_the_manifest_lists_every_kind_of_log() -> None:
    assert MANIFEST  # (the module skips without one)
    sources = {entry["source"]["repo"] for entry in MANIFEST.values()}
    assert sources == {"google/go-attestation", "google/go-tpm-tools", "keylime/keylime"}
    formats = {parse_event_log(raw(name)).spec_id for name in names()}
    assert {None, "Spec ID Event03"} <= formats


@pytest.mark.parametrize("name", names())
def test_real_log_parses_and_its_events_decode_or_say_why(name: str) -> None:
    parsed = log(name)
    assert parsed.events
    assert parsed.banks
    for event in parsed.events:
        for decode in (efi_variable, efi_image_load, event_text):
            with contextlib.suppress(EventLogError):
                decode(event)


@pytest.mark.parametrize("name", names("tpm2_eventlog"))
def test_real_log_has_as_many_events_as_tpm2_tools_counts(name: str) -> None:
    assert len(log(name).events) == MANIFEST[name]["tpm2_eventlog"]["events"]


@pytest.mark.parametrize(("name", "bank"), banks_recorded(), ids=lambda v: v)
def test_real_log_replays_to_the_recorded_pcrs(name: str, bank: str) -> None:
    # Every recorded PCR but IMA's: the boot PCRs, and the ones the log never touches
    # (16, 23 at zero; 17-22 at all ones where the project recorded all 24).
    quoted = recorded(name, bank)
    assert set(REPLAYED_PCRS) & set(quoted)
    check_replay(log(name), bank, quoted)


def _extending_no_action(parsed: EventLog, bank: str) -> dict[int, bytes]:
    """Replay as tpm2_eventlog 5.4 does: EV_NO_ACTION events after the Spec ID event
    extended (with their zero digests), the StartupLocality ignored."""
    size = hashlib.new(bank).digest_size
    values = {pcr: (b"\xff" if 17 <= pcr <= 22 else b"\x00") * size for pcr in range(24)}
    for event in parsed.events[1:]:
        if event.pcr < 24:
            values[event.pcr] = hashlib.new(bank, values[event.pcr] + event.digests[bank]).digest()
    return values


@pytest.mark.parametrize("name", [n for n in names("tpm2_eventlog") if "pcrs" not in MANIFEST[n]])
def test_real_log_replays_as_tpm2_tools_replays_it(name: str) -> None:
    # Keylime ships no PCRs: tpm2_eventlog's replay is a second implementation's word. It
    # differs from the spec, and from the PCRs recorded on real machines above, in one way:
    # it extends EV_NO_ACTION events and ignores StartupLocality; so PCRs with such events
    # are compared with that rule, the others with replay.
    parsed = log(name)
    for bank, values in MANIFEST[name]["tpm2_eventlog"]["pcrs"].items():
        ours, theirs = replay(parsed, bank), _extending_no_action(parsed, bank)
        for index, value in values.items():
            pcr = int(index)
            no_action = any(e.pcr == pcr and e.type == EV_NO_ACTION for e in parsed.events[1:])
            assert (theirs if no_action else ours)[pcr].hex() == value, (bank, pcr)


@pytest.mark.parametrize("name", names("quote"))
def test_real_quote_signs_the_pcrs_the_log_replays_to(name: str) -> None:
    # go-attestation's Windows dump: the AK, a quote of all 24 SHA-1 PCRs and its
    # signature, the PCRs and the log (TestEventLog).
    quote = MANIFEST[name]["quote"]
    attest_bytes = bytes.fromhex(quote["attest"])
    signature = parse_signature(bytes.fromhex(quote["signature"]))
    verify_quote_signature(parse_public(bytes.fromhex(quote["ak_public"])), attest_bytes, signature)
    attest = parse_attest(attest_bytes)
    assert attest.extra_data == bytes.fromhex(quote["nonce"])
    ((selection,),) = [attest.pcr_select]
    bank = {0x0004: "sha1", 0x000B: "sha256"}[selection.hash_alg]
    values = recorded(name, bank, skip_ima=False)
    assert selection.pcrs == set(values)
    keyed = {(selection.hash_alg, i): v for i, v in values.items()}
    assert pcr_digest(attest.pcr_select, keyed, signature.hash_alg) == attest.pcr_digest
    check_replay(log(name), bank, values)


# --- what the projects' own tests assert --------------------------------------------------


@pytest.mark.parametrize("name", names("secure_boot"))
def test_secure_boot_state_is_what_the_project_says(name: str) -> None:
    # go-attestation TestSecureBoot (Windows: on), Keylime test_create_mb_refstate
    # (binary_bios_measurements-secureboot on, binary_bios_measurements off), and the
    # logs named "no secure boot" (go-attestation, go-tpm-tools).
    assert secure_boot(log(name)) is MANIFEST[name]["facts"]["secure_boot"]


@pytest.mark.parametrize("name", names("efi_app_digests"))
def test_efi_application_digests_are_the_projects(name: str) -> None:
    # go-tpm-tools TestParseEfiState: the digests of the boot applications (shim, GRUB,
    # the kernel) in PCR 4, in order, in every bank the log carries.
    parsed = log(name)
    for bank, expected in MANIFEST[name]["facts"]["efi_app_digests"].items():
        if bank not in parsed.banks:
            continue
        apps = [
            e for e in parsed.events if e.type == EV_EFI_BOOT_SERVICES_APPLICATION and e.pcr == 4
        ]
        assert [e.digests[bank].hex() for e in apps] == expected
        for app in apps:
            efi_image_load(app)


@pytest.mark.parametrize("name", names("kernel_cmdline"))
def test_kernel_command_line_is_the_projects(name: str) -> None:
    # go-tpm-tools TestParseLinuxKernelState: GRUB's "kernel_cmdline: " EV_IPL in PCR 8.
    prefix = "kernel_cmdline: "
    lines = [
        event_text(e)
        for e in log(name).events
        if e.type == EV_IPL and e.pcr == 8 and event_text(e).startswith(prefix)
    ]
    assert lines[-1].removeprefix(prefix) == MANIFEST[name]["facts"]["kernel_cmdline"].rstrip("\0")


@pytest.mark.parametrize("name", names("post_separator_authority"))
def test_authority_events_after_the_separator_are_the_projects(name: str) -> None:
    # go-attestation TestSecureBootBug157 (3) and TestSecureBootOptionRom (2): the
    # EV_EFI_VARIABLE_AUTHORITY events in PCR 7 after its separator, each a db entry.
    parsed, after = log(name), []
    separated = False
    for event in parsed.events:
        if event.pcr == 7 and event.type == EV_SEPARATOR:
            separated = True
        elif separated and event.pcr == 7 and event.type == EV_EFI_VARIABLE_AUTHORITY:
            after.append(efi_variable(event))
    assert len(after) == MANIFEST[name]["facts"]["post_separator_authority"]
    assert all(v.guid in (IMAGE_SECURITY, "605dab50-e046-4300-abb6-3dd810dd8b23") for v in after)


@pytest.mark.parametrize("name", names("db_certificates"))
def test_db_holds_the_certificates_the_project_names(name: str) -> None:
    # go-tpm-tools TestParseSecureBootState: Microsoft's two CAs are in db.
    (db,) = [
        efi_variable(e)
        for e in log(name).events
        if e.type == EV_EFI_VARIABLE_DRIVER_CONFIG and efi_variable(e).name == "db"
    ]
    for subject in MANIFEST[name]["facts"]["db_certificates"]:
        assert subject.encode() in db.data


@pytest.mark.parametrize("name", names("efi_app_before_calling_efi_application"))
def test_an_application_before_calling_efi_application_is_seen(name: str) -> None:
    # go-tpm-tools TestParseEventLogCallingEFIAppError: these logs load an EFI application
    # before the "Calling EFI Application from Boot Option" action.
    # (Arch's systemd-boot log has no such action at all.)
    events = log(name).events
    calling = [
        e.index
        for e in events
        if e.type == EV_EFI_ACTION and event_text(e) == "Calling EFI Application from Boot Option"
    ]
    before = events[: calling[0]] if calling else events
    assert any(e.type == EV_EFI_BOOT_SERVICES_APPLICATION for e in before)


@pytest.mark.parametrize("name", names("pcrs"))
def test_pcr_7_has_one_zero_separator_its_digests_measure(name: str) -> None:
    parsed = log(name)
    (separator,) = [e for e in parsed.events if e.pcr == 7 and e.type == EV_SEPARATOR]
    assert separator.data == bytes(4)
    for bank in parsed.banks:
        check_event_data(separator, bank)


@pytest.mark.parametrize("name", names())
def test_variable_digests_measure_the_whole_data_or_the_value_alone(name: str) -> None:
    # SecureBoot, PK, KEK, db, dbx (what appraisal reads) are measured whole (PFP 10.4.4) by
    # every crypto-agile firmware here; the TPM 1.2 era Lenovo firmware measured the values
    # alone. Boot#### and BootOrder: whole on the laptops and workstations, the value alone
    # by EDK2 in the cloud VMs. Where the value alone is measured, the name is not proven.
    parsed = log(name)
    agile = parsed.spec_id == "Spec ID Event03"
    for event in parsed.events:
        if event.type in (EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EFI_VARIABLE_BOOT):
            for bank in parsed.banks:
                config = event.type == EV_EFI_VARIABLE_DRIVER_CONFIG
                assert _measures(event, bank) in (
                    ("whole",) if agile and config else ("whole", "value")
                )


def _measures(event: Event, bank: str) -> str:
    """What the event's digest is of: its whole data, the variable's value, or neither."""
    if hashlib.new(bank, event.data).digest() == event.digests[bank]:
        check_event_data(event, bank)
        return "whole"
    with pytest.raises(EventLogError, match="not what its"):
        check_event_data(event, bank)
    value = efi_variable(event).data
    return "value" if hashlib.new(bank, value).digest() == event.digests[bank] else "neither"


def test_keylime_bogus_and_empty_logs_are_refused() -> None:
    # Keylime test_create_mb_refstate: both are invalid.
    (bogus,) = [n for n, e in MANIFEST.items() if e["facts"].get("invalid")]
    with pytest.raises(EventLogError, match="runs past the end of the log"):
        parse_event_log(raw(bogus))
    with pytest.raises(EventLogError, match="empty"):
        parse_event_log(b"")


# --- corrupted copies are refused ----------------------------------------------------------


def _agile(parsed: EventLog) -> bool:
    return parsed.spec_id == "Spec ID Event03"


def _digest_offset(parsed: EventLog, event: Event, bank: str) -> int:
    """Where ``bank``'s digest of ``event`` sits in the raw log (digests keep file order)."""
    if not _agile(parsed):
        return event.offset + 8
    at = event.offset + 12
    for name, digest in event.digests.items():
        if name == bank:
            return at + 2
        at += 2 + len(digest)
    raise AssertionError(f"no {bank} digest")


def _record_size(parsed: EventLog, event: Event) -> int:
    if not _agile(parsed):
        return 32 + len(event.data)
    return 12 + sum(2 + len(d) for d in event.digests.values()) + 4 + len(event.data)


def _extending(parsed: EventLog, bank: str, quoted: dict[int, bytes]) -> dict[int, list[Event]]:
    """Per quoted boot PCR that the log extends, its extending events in order."""
    found: dict[int, list[Event]] = {}
    for event in parsed.events:
        if event.pcr in quoted and event.pcr in REPLAYED_PCRS and event.type != EV_NO_ACTION:
            found.setdefault(event.pcr, []).append(event)
    return dict(sorted(found.items()))


def _does_not_replay(pcr: int, bank: str, tampered: bytes, quoted: dict[int, bytes]) -> None:
    with pytest.raises(EventLogError, match=rf"^PCR {pcr} \({bank}\) does not replay"):
        check_replay(parse_event_log(tampered), bank, quoted)


@pytest.mark.parametrize(("name", "bank"), banks_recorded(), ids=lambda v: v)
def test_a_flipped_digest_in_a_real_log_is_named_by_its_pcr(name: str, bank: str) -> None:
    # One bit of the last digest each boot PCR got, one PCR at a time.
    data = raw(name)
    parsed = parse_event_log(data)
    quoted = recorded(name, bank)
    for pcr, events in _extending(parsed, bank, quoted).items():
        flipped = bytearray(data)
        flipped[_digest_offset(parsed, events[-1], bank)] ^= 0x01
        _does_not_replay(pcr, bank, bytes(flipped), quoted)


@pytest.mark.parametrize("name", names())
def test_a_truncated_real_log_is_refused(name: str) -> None:
    data = raw(name)
    last = parse_event_log(data).events[-1]
    with pytest.raises(EventLogError, match=rf"offset {last.offset} \(event {last.index}\)"):
        parse_event_log(data[:-1])
    if len(last.data) > 1:
        with pytest.raises(EventLogError, match="runs past the end of the log"):
            parse_event_log(data[: len(data) - len(last.data) // 2])


@pytest.mark.parametrize(("name", "bank"), banks_recorded(), ids=lambda v: v)
def test_a_reordered_real_log_is_named_by_its_pcr(name: str, bank: str) -> None:
    # Two records of one PCR swapped in the file, as an attacker editing it would: the
    # bytes stay well formed, and the first PCR with a pair to swap no longer replays.
    data = raw(name)
    parsed = parse_event_log(data)
    quoted = recorded(name, bank)
    swappable = [
        (pcr, a, b)
        for pcr, same in _extending(parsed, bank, quoted).items()
        for a, b in itertools.pairwise(same)
        if a.digests[bank] != b.digests[bank]
    ]
    pcr, a, b = swappable[0]
    a_end, b_end = a.offset + _record_size(parsed, a), b.offset + _record_size(parsed, b)
    swapped = (
        data[: a.offset] + data[b.offset : b_end] + data[a_end : b.offset] + data[a.offset : a_end]
    ) + data[b_end:]
    assert parse_event_log(swapped).events[a.index].data == b.data
    _does_not_replay(pcr, bank, swapped, quoted)


# --- fuzzing with real logs ----------------------------------------------------------------


@pytest.mark.parametrize("name", names()[:: max(1, len(names()) // 6)] if MANIFEST else [])
@settings(max_examples=60, deadline=None)
@given(
    mutations=st.lists(
        st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), min_size=1, max_size=6
    ),
    cut=st.integers(0, 1 << 20),
)
def test_mutated_real_logs_raise_only_event_log_error(
    name: str, mutations: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(raw(name))
    for pos, xor in mutations:
        data[pos % len(data)] ^= xor
    use_every_way(bytes(data))
    use_every_way(bytes(data[: cut % (len(data) + 1)]))
