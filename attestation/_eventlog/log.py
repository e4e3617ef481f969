"""The TCG PC Client boot event log: its values and its strict parser.

The log is the firmware's record of what it measured into the TPM
(``/sys/kernel/security/tpm0/binary_bios_measurements`` on Linux), in the format of the TCG
PC Client Platform Firmware Profile (PFP), all integers little-endian:

- **SHA-1** (TPM 1.2 era): every event a TCG_PCClientPCREvent — pcrIndex, eventType, a
  20-byte SHA-1 digest, eventDataSize, the data;
- **crypto agile**: a first TCG_PCClientPCREvent of type EV_NO_ACTION in PCR 0 whose data is
  the TCG_EfiSpecIDEvent (``Spec ID Event03``: the digest algorithms and their sizes), then
  TCG_PCR_EVENT2 records — pcrIndex, eventType, a digest count and that many (algorithm id,
  digest) pairs, eventSize, the data.

Parsing is strict: any malformed input raises EventLogError with the offset, the event and
what is wrong; nothing else escapes.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from attestation._errors import EventLogError
from attestation._tpm import HASHES

MAX_EVENT_LOG_BYTES: Final = 1 << 20
"""The largest log parsed. Real logs are 15-75 KB (a long dbx and many option ROMs
included); a MiB is over ten times that and what the Attest request carries at most."""
MAX_EVENT_LOG_EVENTS: Final = 10_000
"""The most events parsed: real logs hold 50-300; replay is bounded by this many hashes."""
REPLAYED_PCRS: Final = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14)
"""The PCRs the boot log covers: firmware and UEFI (0-7), the boot loader (8, 9) and shim's
MOK lists (14)."""

# Event types of the PFP (section 10.4.1), and the names they go by.
EV_NO_ACTION: Final = 0x00000003
EV_SEPARATOR: Final = 0x00000004
EV_ACTION: Final = 0x00000005
EV_S_CRTM_VERSION: Final = 0x00000008
EV_IPL: Final = 0x0000000D
EV_EFI_VARIABLE_DRIVER_CONFIG: Final = 0x80000001
EV_EFI_VARIABLE_BOOT: Final = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION: Final = 0x80000003
EV_EFI_BOOT_SERVICES_DRIVER: Final = 0x80000004
EV_EFI_RUNTIME_SERVICES_DRIVER: Final = 0x80000005
EV_EFI_ACTION: Final = 0x80000007
EV_EFI_VARIABLE_BOOT2: Final = 0x8000000C
EV_EFI_VARIABLE_AUTHORITY: Final = 0x800000E0
EV_EFI_SPDM_DEVICE_POLICY: Final = 0x800000E3

EVENT_TYPES: Final[Mapping[int, str]] = MappingProxyType(
    {
        0x00000000: "EV_PREBOOT_CERT",
        0x00000001: "EV_POST_CODE",
        0x00000002: "EV_UNUSED",
        EV_NO_ACTION: "EV_NO_ACTION",
        EV_SEPARATOR: "EV_SEPARATOR",
        EV_ACTION: "EV_ACTION",
        0x00000006: "EV_EVENT_TAG",
        0x00000007: "EV_S_CRTM_CONTENTS",
        EV_S_CRTM_VERSION: "EV_S_CRTM_VERSION",
        0x00000009: "EV_CPU_MICROCODE",
        0x0000000A: "EV_PLATFORM_CONFIG_FLAGS",
        0x0000000B: "EV_TABLE_OF_DEVICES",
        0x0000000C: "EV_COMPACT_HASH",
        EV_IPL: "EV_IPL",
        0x0000000E: "EV_IPL_PARTITION_DATA",
        0x0000000F: "EV_NONHOST_CODE",
        0x00000010: "EV_NONHOST_CONFIG",
        0x00000011: "EV_NONHOST_INFO",
        0x00000012: "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x00000013: "EV_POST_CODE2",
        0x80000000: "EV_EFI_EVENT_BASE",
        EV_EFI_VARIABLE_DRIVER_CONFIG: "EV_EFI_VARIABLE_DRIVER_CONFIG",
        EV_EFI_VARIABLE_BOOT: "EV_EFI_VARIABLE_BOOT",
        EV_EFI_BOOT_SERVICES_APPLICATION: "EV_EFI_BOOT_SERVICES_APPLICATION",
        EV_EFI_BOOT_SERVICES_DRIVER: "EV_EFI_BOOT_SERVICES_DRIVER",
        EV_EFI_RUNTIME_SERVICES_DRIVER: "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x80000006: "EV_EFI_GPT_EVENT",
        EV_EFI_ACTION: "EV_EFI_ACTION",
        0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x80000009: "EV_EFI_HANDOFF_TABLES",
        0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000000B: "EV_EFI_HANDOFF_TABLES2",
        EV_EFI_VARIABLE_BOOT2: "EV_EFI_VARIABLE_BOOT2",
        0x8000000D: "EV_EFI_GPT_EVENT2",
        0x80000010: "EV_EFI_HCRTM_EVENT",
        EV_EFI_VARIABLE_AUTHORITY: "EV_EFI_VARIABLE_AUTHORITY",
        0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
        EV_EFI_SPDM_DEVICE_POLICY: "EV_EFI_SPDM_DEVICE_POLICY",
        0x800000E4: "EV_EFI_SPDM_DEVICE_AUTHORITY",
    }
)
"""EV_* number -> name; other numbers are named ``EV_UNKNOWN_0x…`` (8 hex digits)."""

# Digest algorithms a Spec ID event may list that the package's hash table lacks: they are
# parsed (the Spec ID gives their size) and named, but cannot be replayed.
_OTHER_ALGORITHMS: Final = {
    0x0012: "sm3_256",
    0x0027: "sha3_256",
    0x0028: "sha3_384",
    0x0029: "sha3_512",
}
PCR_COUNT: Final = 24
"""PCRs 0-23, as the PC Client profile has them."""
_MAX_SPEC_ALGORITHMS: Final = 16
_MAX_DIGEST_SIZE: Final = 64
_SPEC_ID_03: Final = b"Spec ID Event03\x00"
_SPEC_ID: Final = re.compile(rb"Spec ID Event\d\d\x00")
_STARTUP_LOCALITY: Final = b"StartupLocality\x00"
_LOCALITIES: Final = (0, 3, 4)

_SHA1_HEADER: Final = struct.Struct("<II20sI")  # pcrIndex, eventType, digest, eventDataSize
_AGILE_HEADER: Final = struct.Struct("<III")  # pcrIndex, eventType, digest count
_U32: Final = struct.Struct("<I")
_U16: Final = struct.Struct("<H")
_SPEC_BODY: Final = struct.Struct("<IBBBBI")  # platformClass, minor, major, errata, uintn, n
_ALG_SIZE: Final = struct.Struct("<HH")


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the log: ``digests`` maps each bank ("sha256") to this event's digest."""

    index: int
    pcr: int
    type: int
    type_name: str
    digests: Mapping[str, bytes]
    data: bytes
    offset: int


@dataclass(frozen=True, slots=True)
class EventLog:
    """A parsed log: every event in order (a crypto-agile log's Spec ID event is event 0),
    the banks its events carry, the Spec ID signature (``None`` for a SHA-1 log without
    one) and the locality the TPM started at (a StartupLocality event; 0 without one)."""

    events: tuple[Event, ...]
    banks: tuple[str, ...]
    spec_id: str | None
    startup_locality: int = 0


def type_name(event_type: int) -> str:
    """The EV_* name of an event type number."""
    name = EVENT_TYPES.get(event_type)
    return name if name is not None else f"EV_UNKNOWN_0x{event_type:08X}"


# --- parsing -------------------------------------------------------------------------------


class _Spec:
    """What the Spec ID event says about every later event: (id -> (bank, size))."""

    __slots__ = ("algorithms", "banks")

    def __init__(self, algorithms: dict[int, tuple[str, int]]) -> None:
        self.algorithms = algorithms
        self.banks = tuple(bank for bank, _ in algorithms.values())


def _at(offset: int, index: int, what: str) -> EventLogError:
    return EventLogError(f"event log offset {offset} (event {index}): {what}")


def parse_event_log(
    raw: bytes, *, max_bytes: int = MAX_EVENT_LOG_BYTES, max_events: int = MAX_EVENT_LOG_EVENTS
) -> EventLog:
    """Parse a TCG PC Client event log, SHA-1 or crypto agile (told apart by its first
    event). Raises EventLogError, with the offset and the reason, on an empty log, one over
    ``max_bytes`` or ``max_events``, a truncated header or digest, a digest count or an
    algorithm the Spec ID event does not announce, event data past the end, a PCR index
    over 23 (an EV_NO_ACTION event aside: Windows logs some in PCR -1, and they are never
    extended), a malformed Spec ID or StartupLocality event, and trailing bytes."""
    if len(raw) > max_bytes:
        raise EventLogError(f"event log of {len(raw)} bytes exceeds the limit of {max_bytes}")
    if not raw:
        raise EventLogError("event log is empty")
    raw = bytes(raw)
    events: list[Event] = []
    first = _sha1_event(raw, 0, 0)
    spec_id = _SPEC_ID.match(first.data) if first.type == EV_NO_ACTION else None
    if spec_id is not None and spec_id.group() == _SPEC_ID_03:
        spec = _spec_id_event(first)
        events.append(first)
        _agile_events(
            raw, first.offset + _SHA1_HEADER.size + len(first.data), spec, events, max_events
        )
        banks = spec.banks
    else:
        _sha1_events(raw, events, max_events)
        banks = ("sha1",)
    signature = spec_id.group()[:-1].decode() if spec_id is not None else None
    return EventLog(tuple(events), banks, signature, _startup_locality(events))


def _sha1_event(raw: bytes, offset: int, index: int) -> Event:
    left = len(raw) - offset
    if left < _SHA1_HEADER.size:
        raise _at(
            offset,
            index,
            f"truncated event header: {left} bytes left, a header needs {_SHA1_HEADER.size}",
        )
    pcr, etype, digest, size = _SHA1_HEADER.unpack_from(raw, offset)
    start = offset + _SHA1_HEADER.size
    return _event(raw, offset, index, pcr, etype, {"sha1": digest}, start, size)


def _event(
    raw: bytes,
    offset: int,
    index: int,
    pcr: int,
    etype: int,
    digests: dict[str, bytes],
    start: int,
    size: int,
) -> Event:
    if size > len(raw) - start:
        raise _at(
            offset,
            index,
            f"event data of {size} bytes runs past the end of the log ({len(raw) - start} left)",
        )
    if pcr >= PCR_COUNT and etype != EV_NO_ACTION:  # Windows logs EV_NO_ACTION in PCR -1
        raise _at(offset, index, f"PCR index {pcr} is out of range (0-23)")
    data = raw[start : start + size]
    return Event(index, pcr, etype, type_name(etype), MappingProxyType(digests), data, offset)


def _sha1_events(raw: bytes, events: list[Event], max_events: int) -> None:
    offset = 0
    while offset < len(raw):
        if len(events) >= max_events:
            raise _at(offset, len(events), f"more than {max_events} events")
        event = _sha1_event(raw, offset, len(events))
        events.append(event)
        offset += _SHA1_HEADER.size + len(event.data)


def _agile_events(
    raw: bytes, offset: int, spec: _Spec, events: list[Event], max_events: int
) -> None:
    algorithms, count_wanted, end = spec.algorithms, len(spec.algorithms), len(raw)
    header, u16, u32 = _AGILE_HEADER, _U16, _U32
    while offset < end:
        index = len(events)
        if index >= max_events:
            raise _at(offset, index, f"more than {max_events} events")
        if end - offset < header.size:
            raise _at(
                offset,
                index,
                f"truncated event header: {end - offset} bytes left, a header needs {header.size}",
            )
        pcr, etype, count = header.unpack_from(raw, offset)
        if count != count_wanted:
            raise _at(offset, index, f"{count} digests, the Spec ID event announces {count_wanted}")
        digests: dict[str, bytes] = {}
        at = offset + header.size
        for _ in range(count):
            if end - at < 2:
                raise _at(offset, index, "truncated digest algorithm id")
            (alg,) = u16.unpack_from(raw, at)
            known = algorithms.get(alg)
            if known is None:
                raise _at(
                    offset, index, f"digest algorithm 0x{alg:04x} is not in the Spec ID event"
                )
            bank, size = known
            if bank in digests:
                raise _at(offset, index, f"the {bank} digest appears twice")
            at += 2
            if end - at < size:
                raise _at(offset, index, f"truncated {bank} digest ({end - at} of {size} bytes)")
            digests[bank] = raw[at : at + size]
            at += size
        if end - at < 4:
            raise _at(offset, index, "truncated event size")
        (size,) = u32.unpack_from(raw, at)
        event = _event(raw, offset, index, pcr, etype, digests, at + 4, size)
        events.append(event)
        offset = at + 4 + size


def _spec_id_event(event: Event) -> _Spec:
    """The TCG_EfiSpecIDEvent of a crypto-agile log's first event."""

    def wrong(what: str) -> EventLogError:
        return _at(0, 0, f"Spec ID event: {what}")

    if event.pcr != 0:
        raise _at(0, 0, "the Spec ID event must be in PCR 0")
    if any(event.digests["sha1"]):
        raise _at(0, 0, "the Spec ID event's digest must be zero")
    data = event.data
    at = len(_SPEC_ID_03)
    if len(data) < at + _SPEC_BODY.size:
        raise wrong(f"{len(data)} bytes, too short")
    *_, uintn, count = _SPEC_BODY.unpack_from(data, at)
    at += _SPEC_BODY.size
    if uintn not in (1, 2):
        raise wrong(f"uintnSize {uintn} is neither 1 nor 2")
    if count == 0:
        raise wrong("no digest algorithm")
    if count > _MAX_SPEC_ALGORITHMS:
        raise wrong(f"{count} digest algorithms, more than {_MAX_SPEC_ALGORITHMS}")
    if len(data) - at < count * _ALG_SIZE.size + 1:
        raise wrong(f"the list of {count} digest algorithms runs past the end")
    algorithms: dict[int, tuple[str, int]] = {}
    for _ in range(count):
        alg, size = _ALG_SIZE.unpack_from(data, at)
        at += _ALG_SIZE.size
        known = HASHES.get(alg)
        bank = known.name if known is not None else _OTHER_ALGORITHMS.get(alg, f"alg_0x{alg:04x}")
        if known is not None and size != known.digest_size:
            raise wrong(f"{bank} digests are {known.digest_size} bytes, not {size}")
        if not 0 < size <= _MAX_DIGEST_SIZE:
            raise wrong(f"algorithm 0x{alg:04x} has a digest size of {size}")
        if alg in algorithms:
            raise wrong(f"{bank} listed twice")
        algorithms[alg] = (bank, size)
    vendor = data[at]
    at += 1
    if vendor > len(data) - at:
        raise wrong(f"vendor info of {vendor} bytes runs past the end")
    extra = len(data) - at - vendor
    if extra:
        raise wrong(f"{extra} trailing byte{'s' if extra > 1 else ''}")
    return _Spec(algorithms)


def _startup_locality(events: list[Event]) -> int:
    """The StartupLocality event's locality (PFP 10.4.5.3), which PCR 0 starts at; it must
    come before any event extends PCR 0, once at most."""
    locality, seen, extended = 0, False, False
    for event in events:
        if event.pcr != 0:
            continue
        if event.type != EV_NO_ACTION:
            extended = True
            continue
        if not event.data.startswith(_STARTUP_LOCALITY):
            continue
        where = f"event log offset {event.offset} (event {event.index}): "
        if len(event.data) != len(_STARTUP_LOCALITY) + 1:
            raise EventLogError(f"{where}StartupLocality event: {len(event.data)} bytes, not 17")
        if seen:
            raise EventLogError(f"{where}a second StartupLocality event")
        if extended:
            raise EventLogError(f"{where}StartupLocality event after PCR 0 was extended")
        locality, seen = event.data[-1], True
        if locality not in _LOCALITIES:
            raise EventLogError(
                f"{where}StartupLocality event: locality {locality} is not 0, 3 or 4"
            )
    return locality
