"""The TCG PC Client event-log parser, replay and event decoders, on logs built here.

The logs are built by ``tests/event_logs.py``, an encoder written from the PC Client
Platform Firmware Profile that computes the PCRs it expects with hashlib directly: an
oracle independent of the parser. Real logs from public projects are in
test_eventlog_real.py.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from event_logs import (
    BOOT,
    EV_ACTION,
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_VARIABLE_AUTHORITY,
    EV_EFI_VARIABLE_BOOT,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_IPL,
    EV_NO_ACTION,
    EV_S_CRTM_VERSION,
    EV_SEPARATOR,
    GLOBAL,
    IMAGE_SECURITY,
    SEPARATOR,
    SIZED_BANKS,
    Ev,
    agile_event,
    agile_log,
    expected_pcrs,
    file_path_node,
    image_load,
    legacy_event,
    sha1_log,
    sized_boot,
    spec_id_data,
    use_every_way,
    utf16,
    variable_data,
)
from hypothesis import given
from hypothesis import strategies as st

from attestation import (
    MAX_EVENT_LOG_BYTES,
    REPLAYED_PCRS,
    AttestationError,
    EfiImageLoad,
    EfiVariable,
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

AGILE = agile_log(BOOT)
LEGACY = sha1_log(BOOT)


def error(raw: bytes, **limits: int) -> str:
    with pytest.raises(EventLogError) as caught:
        parse_event_log(raw, **limits)
    return str(caught.value)


# --- parsing -------------------------------------------------------------------------------


def test_crypto_agile_log_parses_every_event_with_every_bank() -> None:
    log = parse_event_log(AGILE)
    assert log.spec_id == "Spec ID Event03"
    assert log.banks == ("sha1", "sha256")
    assert len(log.events) == len(BOOT) + 1  # the Spec ID event is event 0
    assert [e.index for e in log.events] == list(range(len(BOOT) + 1))
    first, crtm = log.events[0], log.events[1]
    assert (first.type, first.type_name, first.offset) == (EV_NO_ACTION, "EV_NO_ACTION", 0)
    assert crtm.offset == 32 + len(first.data)
    assert (crtm.pcr, crtm.type_name, crtm.data) == (0, "EV_S_CRTM_VERSION", BOOT[0].data)
    assert dict(crtm.digests) == {b: BOOT[0].digest(b) for b in ("sha1", "sha256")}


def test_sha1_log_parses_as_one_sha1_bank() -> None:
    log = parse_event_log(LEGACY)
    assert (log.spec_id, log.banks) == (None, ("sha1",))
    assert [(e.pcr, e.type, e.data) for e in log.events] == [(e.pcr, e.type, e.data) for e in BOOT]
    assert all(set(e.digests) == {"sha1"} for e in log.events)
    assert log.events[3].offset == sum(32 + len(e.data) for e in BOOT[:3])


def test_sha1_log_keeps_an_older_spec_id_event() -> None:
    # A TPM 1.2 era UEFI log starts with a "Spec ID Event00" event and stays SHA-1 only.
    head = legacy_event(0, EV_NO_ACTION, bytes(20), b"Spec ID Event00\x00" + bytes(8))
    log = parse_event_log(head + LEGACY)
    assert (log.spec_id, log.banks, len(log.events)) == (
        "Spec ID Event00",
        ("sha1",),
        1 + len(BOOT),
    )


def test_spec_id_banks_in_its_order_and_all_four_hashes() -> None:
    banks = ("sha512", "sha1", "sha384", "sha256")
    log = parse_event_log(agile_log(BOOT, banks))
    assert log.banks == banks
    for bank in banks:
        assert replay(log, bank) == expected_pcrs(BOOT, bank)


def test_an_unknown_algorithm_the_spec_id_sizes_is_carried_but_not_replayed() -> None:
    algs = [(0x000B, 32), (0x0012, 32)]  # sha256 and SM3-256
    raw = legacy_event(0, EV_NO_ACTION, bytes(20), spec_id_data(algs))
    raw += agile_event(0, EV_SEPARATOR, [(0x0012, b"\x01" * 32), (0x000B, b"\x02" * 32)], SEPARATOR)
    log = parse_event_log(raw)
    assert log.banks == ("sha256", "sm3_256")
    assert log.events[1].digests == {"sha256": b"\x02" * 32, "sm3_256": b"\x01" * 32}
    with pytest.raises(EventLogError, match="sm3_256 bank cannot be replayed"):
        replay(log, "sm3_256")


def test_event_type_names() -> None:
    log = parse_event_log(
        agile_log([Ev(4, 0x80000003, b""), Ev(4, 0x1234, b""), Ev(7, 0x800000E0, b"")])
    )
    assert [e.type_name for e in log.events[1:]] == [
        "EV_EFI_BOOT_SERVICES_APPLICATION",
        "EV_UNKNOWN_0x00001234",
        "EV_EFI_VARIABLE_AUTHORITY",
    ]


def test_events_are_frozen() -> None:
    event = parse_event_log(AGILE).events[1]
    with pytest.raises(AttributeError):
        event.pcr = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.digests["sha1"] = b""  # type: ignore[index]


def _spec_event(data: bytes) -> bytes:
    return legacy_event(0, EV_NO_ACTION, bytes(20), data)


SHA256_ONLY = [(0x000B, 32)]
TAIL = agile_event(0, EV_SEPARATOR, [(0x000B, hashlib.sha256(SEPARATOR).digest())], SEPARATOR)

# (raw log, the reason the error must give); each case's id says what is wrong.
MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty", b"", "event log is empty"),
    ("truncated first header", AGILE[:20], r"offset 0 \(event 0\): truncated event header"),
    ("truncated spec id data", AGILE[:40], "event data of 37 bytes runs past the end"),
    ("truncated agile header", AGILE + struct.pack("<II", 4, 4), "truncated event header"),
    ("trailing garbage", AGILE + b"\x01\x02\x03", "3 bytes left"),
    ("truncated event data", AGILE[:-1], "runs past the end of the log"),
    ("truncated sha1 event data", LEGACY[:-3], "runs past the end of the log"),
    (
        "event size past the end",
        _spec_event(spec_id_data(SHA256_ONLY))
        + TAIL[:-8]
        + struct.pack("<I", 0xFFFFFFFF)
        + SEPARATOR,
        "event data of 4294967295 bytes runs past the end of the log",
    ),
    (
        "digest count mismatch",
        _spec_event(spec_id_data(SHA256_ONLY))
        + agile_event(0, EV_SEPARATOR, [(0x000B, bytes(32)), (0x000B, bytes(32))], SEPARATOR),
        "2 digests, the Spec ID event announces 1",
    ),
    (
        "unknown algorithm without a size",
        _spec_event(spec_id_data(SHA256_ONLY))
        + agile_event(0, EV_SEPARATOR, [(0x0012, bytes(32))], b""),
        "digest algorithm 0x0012 is not in the Spec ID event",
    ),
    (
        "duplicate bank in an event",
        _spec_event(spec_id_data([(0x000B, 32), (0x0004, 20)]))
        + agile_event(0, EV_SEPARATOR, [(0x000B, bytes(32)), (0x000B, bytes(32))], b""),
        "sha256 digest appears twice",
    ),
    (
        "truncated digest",
        _spec_event(spec_id_data(SHA256_ONLY)) + struct.pack("<IIIH", 0, 4, 1, 0x000B) + bytes(10),
        "truncated sha256 digest",
    ),
    (
        "pcr out of range",
        sha1_log([Ev(24, EV_SEPARATOR, SEPARATOR)]),
        "PCR index 24 is out of range",
    ),
    (
        "spec id: unknown uintn size",
        _spec_event(spec_id_data(SHA256_ONLY, uintn=3)),
        "Spec ID event: uintnSize 3 is neither 1 nor 2",
    ),
    ("spec id: no algorithm", _spec_event(spec_id_data([])), "Spec ID event: no digest algorithm"),
    (
        "spec id: wrong size for a known algorithm",
        _spec_event(spec_id_data([(0x000B, 20)])),
        "Spec ID event: sha256 digests are 32 bytes, not 20",
    ),
    (
        "spec id: algorithm twice",
        _spec_event(spec_id_data([(0x000B, 32), (0x000B, 32)])),
        "Spec ID event: sha256 listed twice",
    ),
    (
        "spec id: zero-size unknown algorithm",
        _spec_event(spec_id_data([(0x0099, 0)])),
        "Spec ID event: algorithm 0x0099 has a digest size of 0",
    ),
    (
        "spec id: vendor info past the end",
        _spec_event(spec_id_data(SHA256_ONLY)[:-1] + b"\x05"),
        "Spec ID event: vendor info of 5 bytes runs past the end",
    ),
    (
        "spec id: trailing bytes",
        _spec_event(spec_id_data(SHA256_ONLY) + b"\x00"),
        "Spec ID event: 1 trailing byte",
    ),
    (
        "spec id: not in pcr 0",
        legacy_event(1, EV_NO_ACTION, bytes(20), spec_id_data(SHA256_ONLY)),
        "the Spec ID event must be in PCR 0",
    ),
    (
        "spec id: nonzero digest",
        legacy_event(0, EV_NO_ACTION, b"\x01" * 20, spec_id_data(SHA256_ONLY)),
        "the Spec ID event's digest must be zero",
    ),
    (
        "startup locality: not a startup locality",
        agile_log([Ev(0, EV_NO_ACTION, b"StartupLocality\x00\x02")]),
        "StartupLocality event: locality 2 is not 0, 3 or 4",
    ),
    (
        "startup locality: wrong length",
        agile_log([Ev(0, EV_NO_ACTION, b"StartupLocality\x00\x03\x00")]),
        "StartupLocality event: 18 bytes, not 17",
    ),
    (
        "startup locality: after pcr 0 was extended",
        agile_log([BOOT[0], Ev(0, EV_NO_ACTION, b"StartupLocality\x00\x03")]),
        "StartupLocality event after PCR 0 was extended",
    ),
    (
        "startup locality: twice",
        agile_log([Ev(0, EV_NO_ACTION, b"StartupLocality\x00\x03")] * 2),
        "a second StartupLocality event",
    ),
]


@pytest.mark.parametrize(("case", "raw", "reason"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_logs_are_refused_with_offset_and_reason(
    case: str, raw: bytes, reason: str
) -> None:
    with pytest.raises(EventLogError, match=reason):
        parse_event_log(raw)


def test_errors_name_the_offset_and_the_event() -> None:
    cut = AGILE[:-1]
    last = parse_event_log(AGILE).events[-1]
    assert f"event log offset {last.offset} (event {last.index}):" in error(cut)


def test_log_too_big_is_refused_before_parsing() -> None:
    assert error(AGILE, max_bytes=len(AGILE) - 1) == (
        f"event log of {len(AGILE)} bytes exceeds the limit of {len(AGILE) - 1}"
    )
    assert parse_event_log(AGILE, max_bytes=len(AGILE)).events
    assert error(bytes(MAX_EVENT_LOG_BYTES + 1)).endswith("exceeds the limit of 1048576")


def test_too_many_events_is_refused() -> None:
    n = len(BOOT) + 1
    assert len(parse_event_log(AGILE, max_events=n).events) == n
    assert f"more than {n - 1} events" in error(AGILE, max_events=n - 1)
    assert f"more than {n - 2} events" in error(LEGACY, max_events=n - 2)


def test_every_truncation_is_refused_or_is_a_shorter_log() -> None:
    # A cut at an event boundary is a (shorter) valid log; anywhere else it is refused.
    boundaries = {e.offset for e in parse_event_log(AGILE).events[1:]} | {len(AGILE)}
    for n in range(len(AGILE)):
        if n in boundaries:
            assert len(parse_event_log(AGILE[:n]).events) < len(BOOT) + 1
        else:
            with pytest.raises(EventLogError):
                parse_event_log(AGILE[:n])


def test_a_log_of_only_the_spec_id_event_has_no_other_event() -> None:
    log = parse_event_log(_spec_event(spec_id_data(SHA256_ONLY)))
    assert (len(log.events), log.banks) == (1, ("sha256",))
    assert replay(log, "sha256", [0, 7]) == {0: bytes(32), 7: bytes(32)}


# --- replay --------------------------------------------------------------------------------


@pytest.mark.parametrize("bank", ["sha1", "sha256"])
def test_replay_matches_the_oracle(bank: str) -> None:
    assert replay(parse_event_log(AGILE), bank) == expected_pcrs(BOOT, bank)


def test_a_40_kb_log_of_three_banks_replays_in_each() -> None:
    # The benchmark's log (benchmarks/bench_eventlog.py).
    events = sized_boot(40_000)
    raw = agile_log(events, SIZED_BANKS)
    assert 40_000 <= len(raw) < 41_000
    log = parse_event_log(raw)
    assert len(log.events) == len(events) + 1
    for bank in SIZED_BANKS:
        check_replay(log, bank, expected_pcrs(events, bank))


def test_replay_of_a_sha1_log() -> None:
    assert replay(parse_event_log(LEGACY), "sha1") == expected_pcrs(BOOT, "sha1")


def test_replayed_pcrs_are_0_to_9_and_14() -> None:
    assert REPLAYED_PCRS == (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14)
    assert set(replay(parse_event_log(AGILE), "sha256")) == set(REPLAYED_PCRS)
    assert set(replay(parse_event_log(AGILE), "sha256", [4, 16, 17])) == {4, 16, 17}


def test_untouched_pcrs_have_their_initial_values() -> None:
    values = replay(parse_event_log(AGILE), "sha256", [10, 16, 17, 22, 23])
    assert values == {
        10: bytes(32),
        16: bytes(32),
        17: b"\xff" * 32,
        22: b"\xff" * 32,
        23: bytes(32),
    }


def test_no_action_events_are_not_extended() -> None:
    noise = Ev(4, EV_NO_ACTION, b"anything at all")
    log = parse_event_log(agile_log([*BOOT[:8], noise, *BOOT[8:]]))
    assert replay(log, "sha256") == expected_pcrs(BOOT, "sha256")


@pytest.mark.parametrize("locality", [0, 3, 4])
def test_startup_locality_sets_pcr_0s_initial_value(locality: int) -> None:
    events = [Ev(0, EV_NO_ACTION, b"StartupLocality\x00" + bytes([locality])), *BOOT]
    log = parse_event_log(agile_log(events))
    assert log.startup_locality == locality
    assert replay(log, "sha256") == expected_pcrs(BOOT, "sha256", locality)
    assert replay(log, "sha256")[0] != expected_pcrs(BOOT, "sha256")[0] or locality == 0


def test_replay_refuses_a_bank_the_log_does_not_have() -> None:
    with pytest.raises(EventLogError, match=r"the log has no sha384 bank \(it has sha1, sha256\)"):
        replay(parse_event_log(AGILE), "sha384")


def test_replay_refuses_a_pcr_out_of_range() -> None:
    with pytest.raises(EventLogError, match="PCR index 24 is out of range"):
        replay(parse_event_log(AGILE), "sha256", [24])


def test_check_replay_accepts_the_quoted_values() -> None:
    log = parse_event_log(AGILE)
    check_replay(log, "sha256", expected_pcrs(BOOT, "sha256"))
    check_replay(log, "sha256", {7: expected_pcrs(BOOT, "sha256")[7], 16: bytes(32)})


def test_check_replay_names_the_first_pcr_that_differs() -> None:
    log = parse_event_log(AGILE)
    quoted = expected_pcrs(BOOT, "sha256")
    quoted[4] = quoted[5] = b"\x11" * 32
    with pytest.raises(EventLogError) as caught:
        check_replay(log, "sha256", quoted)
    assert str(caught.value) == (
        f"PCR 4 (sha256) does not replay: log gives {expected_pcrs(BOOT, 'sha256')[4].hex()}, "
        f"quote has {'11' * 32}"
    )


def test_check_replay_refuses_an_extended_pcr_the_log_never_touches() -> None:
    quoted = {10: hashlib.sha256(bytes(64)).digest()}
    with pytest.raises(
        EventLogError, match=f"PCR 10 \\(sha256\\) does not replay: log gives {'00' * 32}"
    ):
        check_replay(parse_event_log(AGILE), "sha256", quoted)


def test_check_replay_refuses_a_value_of_the_wrong_size() -> None:
    with pytest.raises(EventLogError, match=r"PCR 0 \(sha256\): the quote gives 20 bytes, not 32"):
        check_replay(parse_event_log(AGILE), "sha256", {0: bytes(20)})


def _encode(events: Sequence[Ev]) -> bytes:
    return agile_log(events)


def test_a_flipped_digest_is_named_by_its_pcr() -> None:
    log = parse_event_log(AGILE)
    shim = next(e for e in log.events if e.type == EV_EFI_BOOT_SERVICES_APPLICATION)
    forged = replace(shim, digests={**shim.digests, "sha256": b"\x00" * 32})
    tampered = replace(log, events=tuple(forged if e is shim else e for e in log.events))
    with pytest.raises(EventLogError, match=r"PCR 4 \(sha256\) does not replay"):
        check_replay(tampered, "sha256", expected_pcrs(BOOT, "sha256"))


def test_a_reordered_event_is_named_by_its_pcr() -> None:
    swapped = list(BOOT)
    i, j = 1, 2  # SecureBoot and PK, both PCR 7
    swapped[i], swapped[j] = swapped[j], swapped[i]
    with pytest.raises(EventLogError, match=r"PCR 7 \(sha256\) does not replay"):
        check_replay(parse_event_log(_encode(swapped)), "sha256", expected_pcrs(BOOT, "sha256"))


def test_a_dropped_event_is_named_by_its_pcr() -> None:
    dropped = [e for e in BOOT if e.pcr != 9]
    with pytest.raises(EventLogError, match=r"PCR 9 \(sha256\) does not replay"):
        check_replay(parse_event_log(_encode(dropped)), "sha256", expected_pcrs(BOOT, "sha256"))


# --- decoders ------------------------------------------------------------------------------


def _event(log: EventLog, type_: int, nth: int = 0) -> Event:
    return [e for e in log.events if e.type == type_][nth]


def test_efi_variable_decodes_uefi_variable_data() -> None:
    log = parse_event_log(AGILE)
    assert efi_variable(_event(log, EV_EFI_VARIABLE_DRIVER_CONFIG)) == EfiVariable(
        GLOBAL, "SecureBoot", b"\x01"
    )
    dbx = efi_variable(_event(log, EV_EFI_VARIABLE_DRIVER_CONFIG, 3))
    assert (dbx.guid, dbx.name, dbx.data) == (IMAGE_SECURITY, "dbx", b"dbx" * 300)
    assert efi_variable(_event(log, EV_EFI_VARIABLE_BOOT)).name == "BootOrder"
    assert efi_variable(_event(log, EV_EFI_VARIABLE_AUTHORITY)).data == b"signer" * 20


def test_efi_image_load_decodes_the_image_event() -> None:
    image = efi_image_load(_event(parse_event_log(AGILE), EV_EFI_BOOT_SERVICES_APPLICATION))
    assert image == EfiImageLoad(
        location=0x7E000000,
        length=0x10000,
        link_time_address=0,
        device_path=file_path_node(r"\EFI\BOOT\BOOTX64.EFI"),
    )
    assert image.file_path == r"\EFI\BOOT\BOOTX64.EFI"


def test_event_text_by_type() -> None:
    log = parse_event_log(AGILE)
    assert event_text(_event(log, EV_S_CRTM_VERSION)) == "Docket Test Firmware v1"
    assert event_text(_event(log, EV_EFI_ACTION)) == "Calling EFI Application from Boot Option"
    assert event_text(_event(log, EV_IPL)) == "grub_cmd: linux /vmlinuz root=/dev/sda1"
    systemd_boot = Ev(12, EV_IPL, utf16("initrd=\\initrd.img quiet"))
    assert event_text(parse_event_log(agile_log([systemd_boot])).events[1]) == (
        "initrd=\\initrd.img quiet"
    )
    assert event_text(parse_event_log(agile_log([Ev(5, EV_ACTION, b"Hello")])).events[1]) == "Hello"


def _decode_error(decode: Callable[[Event], object], pcr: int, type_: int, data: bytes) -> str:
    event = parse_event_log(agile_log([Ev(pcr, type_, data)])).events[1]
    with pytest.raises(EventLogError) as caught:
        decode(event)
    return str(caught.value)


GOOD_VAR = variable_data(GLOBAL, "SecureBoot", b"\x01")
VAR = EV_EFI_VARIABLE_DRIVER_CONFIG
APP = EV_EFI_BOOT_SERVICES_APPLICATION
DECODE_ERRORS: list[tuple[str, Callable[[Event], object], int, bytes, str]] = [
    ("variable: wrong type", efi_variable, EV_SEPARATOR, SEPARATOR, "not an EFI variable event"),
    ("variable: short", efi_variable, VAR, GOOD_VAR[:31], "UEFI_VARIABLE_DATA of 31 bytes"),
    ("variable: data past the end", efi_variable, VAR, GOOD_VAR[:-1], "run past its 52 bytes"),
    (
        "variable: huge lengths",
        efi_variable,
        EV_EFI_VARIABLE_BOOT,
        GOOD_VAR[:16] + b"\xff" * 16 + GOOD_VAR[32:],
        "run past",
    ),
    (
        "variable: name not utf-16",
        efi_variable,
        EV_EFI_VARIABLE_BOOT,
        GOOD_VAR[:32] + b"\x00\xd8" + GOOD_VAR[34:],
        "variable name is not UTF-16",
    ),
    ("image: wrong type", efi_image_load, EV_IPL, b"x", "not an EFI image load event"),
    ("image: short", efi_image_load, APP, bytes(31), "UEFI_IMAGE_LOAD_EVENT of 31 bytes"),
    (
        "image: path cut",
        efi_image_load,
        APP,
        image_load(0, 0, b"abc")[:-1],
        "device path of 3 bytes",
    ),
    ("text: wrong type", event_text, EV_SEPARATOR, SEPARATOR, "carries no text"),
    ("text: action not ascii", event_text, EV_EFI_ACTION, b"caf\xc3\xa9", "text is not ASCII"),
    ("text: crtm odd length", event_text, EV_S_CRTM_VERSION, b"abc", "text is not UTF-16"),
    ("text: ipl not utf-8", event_text, EV_IPL, b"\xff\xfe\xfd", "text is not UTF-8"),
]


@pytest.mark.parametrize(
    ("case", "decode", "type_", "data", "reason"), DECODE_ERRORS, ids=[c[0] for c in DECODE_ERRORS]
)
def test_decoders_refuse_bad_data(
    case: str, decode: Callable[[Event], object], type_: int, data: bytes, reason: str
) -> None:
    message = _decode_error(decode, 7, type_, data)
    assert reason in message
    name = parse_event_log(agile_log([Ev(7, type_, data)])).events[1].type_name
    assert message.startswith(f"event 1 ({name}) at offset ")


def test_check_event_data_accepts_data_its_digest_covers() -> None:
    log = parse_event_log(AGILE)
    for event in (_event(log, EV_EFI_VARIABLE_DRIVER_CONFIG), _event(log, EV_EFI_ACTION)):
        for bank in log.banks:
            check_event_data(event, bank)


def test_check_event_data_refuses_data_the_digest_does_not_cover() -> None:
    # An image load's digest is of the image, not of the event data (the device path).
    image = _event(parse_event_log(AGILE), EV_EFI_BOOT_SERVICES_APPLICATION)
    with pytest.raises(
        EventLogError,
        match=r"event \d+ \(EV_EFI_BOOT_SERVICES_APPLICATION\) at offset \d+: "
        "its data is not what its sha256 digest measures",
    ):
        check_event_data(image, "sha256")


def test_check_event_data_catches_data_edited_under_a_kept_digest() -> None:
    # SecureBoot measured as 0 (the digest replays), the data rewritten to say 1.
    measured_off = variable_data(GLOBAL, "SecureBoot", b"\x00")
    claims_on = variable_data(GLOBAL, "SecureBoot", b"\x01")
    log = parse_event_log(
        agile_log([Ev(7, EV_EFI_VARIABLE_DRIVER_CONFIG, claims_on, measured_off)])
    )
    assert efi_variable(log.events[1]).data == b"\x01"
    with pytest.raises(EventLogError, match="not what its sha1 digest measures"):
        check_event_data(log.events[1], "sha1")


def test_check_event_data_refuses_a_bank_the_event_lacks() -> None:
    with pytest.raises(EventLogError, match="has no sha384 digest"):
        check_event_data(parse_event_log(AGILE).events[1], "sha384")


def test_decoders_ignore_padding_after_the_structure() -> None:
    # Real firmware and shim pad these events (see test_eventlog_real.py).
    padded_var = Ev(7, EV_EFI_VARIABLE_AUTHORITY, GOOD_VAR + bytes(6))
    padded_image = Ev(4, APP, image_load(1, 2, b"abc") + bytes(9))
    log = parse_event_log(agile_log([padded_var, padded_image]))
    assert efi_variable(log.events[1]) == EfiVariable(GLOBAL, "SecureBoot", b"\x01")
    assert efi_image_load(log.events[2]) == EfiImageLoad(1, 2, 0, b"abc")


def test_windows_no_action_events_may_name_pcr_minus_one() -> None:
    # Not extended, so harmless; any other event type there is refused.
    raw = sha1_log([*BOOT, Ev(0xFFFFFFFF, EV_NO_ACTION, b"WBCL")])
    assert parse_event_log(raw).events[-1].pcr == 0xFFFFFFFF
    assert replay(parse_event_log(raw), "sha1") == expected_pcrs(BOOT, "sha1")
    with pytest.raises(EventLogError, match="PCR index 4294967295 is out of range"):
        parse_event_log(sha1_log([Ev(0xFFFFFFFF, EV_SEPARATOR, SEPARATOR)]))


def test_device_path_without_a_file_path_node() -> None:
    image = EfiImageLoad(0, 0, 0, b"\x7f\xff\x04\x00")
    assert image.file_path is None
    short_node = b"\x04\x04\x02"  # shorter than a node header
    assert EfiImageLoad(0, 0, 0, short_node).file_path is None


def test_event_log_error_is_an_attestation_error() -> None:
    assert issubclass(EventLogError, AttestationError)


# --- fuzzing -------------------------------------------------------------------------------


@given(raw=st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_event_log_error(raw: bytes) -> None:
    use_every_way(raw)


@given(raw=st.binary(max_size=400))
def test_arbitrary_bytes_after_a_spec_id_event_raise_only_event_log_error(raw: bytes) -> None:
    use_every_way(_spec_event(spec_id_data([(0x000B, 32), (0x0004, 20)])) + raw)


@pytest.mark.parametrize("base", [AGILE, LEGACY], ids=["agile", "sha1"])
@given(
    mutations=st.lists(
        st.tuples(st.integers(0, 100_000), st.integers(1, 255)), min_size=1, max_size=4
    )
)
def test_mutated_logs_raise_only_event_log_error(
    base: bytes, mutations: list[tuple[int, int]]
) -> None:
    data = bytearray(base)
    for pos, xor in mutations:
        data[pos % len(data)] ^= xor
    use_every_way(bytes(data))
