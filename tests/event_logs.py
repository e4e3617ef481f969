"""TCG PC Client event logs built from events, for tests and benchmarks.

An encoder written from the PC Client Platform Firmware Profile (TCG_PCClientPCREvent,
TCG_EfiSpecIDEvent, TCG_PCR_EVENT2, UEFI_VARIABLE_DATA, UEFI_IMAGE_LOAD_EVENT) that
computes the PCRs it expects with hashlib directly: an oracle independent of
``attestation``'s parser. ``BOOT`` is a small Secure Boot boot, every event type appraisal
reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import attestation as at
from attestation import REPLAYED_PCRS

EV_NO_ACTION = 0x3
EV_SEPARATOR = 0x4
EV_ACTION = 0x5
EV_S_CRTM_VERSION = 0x8
EV_IPL = 0xD
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_BOOT = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_GPT_EVENT = 0x80000006
EV_EFI_ACTION = 0x80000007
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
ALG_IDS = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D}
GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
IMAGE_SECURITY = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"


@dataclass(frozen=True)
class Ev:
    """One event to encode: its digests are of ``measured`` (the event data by default)."""

    pcr: int
    type: int
    data: bytes
    measured: bytes | None = None

    def digest(self, bank: str) -> bytes:
        if self.type == EV_NO_ACTION:
            return bytes(hashlib.new(bank).digest_size)
        return hashlib.new(bank, self.data if self.measured is None else self.measured).digest()


def spec_id_data(
    algs: Sequence[tuple[int, int]], *, vendor: bytes = b"", uintn: int = 2, signature: bytes = b""
) -> bytes:
    """TCG_EfiSpecIDEvent: signature, platformClass, version 2.0 errata 0, uintnSize, the
    algorithm list (id, digest size) and vendor info."""
    body = struct.pack("<IBBBBI", 0, 0, 2, 0, uintn, len(algs))
    body += b"".join(struct.pack("<HH", alg, size) for alg, size in algs)
    return (signature or b"Spec ID Event03\x00") + body + bytes([len(vendor)]) + vendor


def legacy_event(pcr: int, etype: int, digest: bytes, data: bytes) -> bytes:
    """TCG_PCClientPCREvent: pcrIndex, eventType, SHA-1 digest, eventDataSize, event."""
    return struct.pack("<II", pcr, etype) + digest + struct.pack("<I", len(data)) + data


def agile_event(pcr: int, etype: int, digests: Sequence[tuple[int, bytes]], data: bytes) -> bytes:
    """TCG_PCR_EVENT2: pcrIndex, eventType, TPML_DIGEST_VALUES, eventSize, event."""
    out = struct.pack("<III", pcr, etype, len(digests))
    out += b"".join(struct.pack("<H", alg) + digest for alg, digest in digests)
    return out + struct.pack("<I", len(data)) + data


def agile_log(events: Iterable[Ev], banks: Sequence[str] = ("sha1", "sha256")) -> bytes:
    algs = [(ALG_IDS[b], hashlib.new(b).digest_size) for b in banks]
    out = legacy_event(0, EV_NO_ACTION, bytes(20), spec_id_data(algs))
    for e in events:
        out += agile_event(e.pcr, e.type, [(ALG_IDS[b], e.digest(b)) for b in banks], e.data)
    return out


def sha1_log(events: Iterable[Ev]) -> bytes:
    return b"".join(legacy_event(e.pcr, e.type, e.digest("sha1"), e.data) for e in events)


def expected_pcrs(events: Iterable[Ev], bank: str, locality: int = 0) -> dict[int, bytes]:
    size = hashlib.new(bank).digest_size
    pcrs = {i: bytes(size) for i in REPLAYED_PCRS}
    pcrs[0] = bytes(size - 1) + bytes([locality])
    for e in events:
        if e.type != EV_NO_ACTION and e.pcr in pcrs:
            pcrs[e.pcr] = hashlib.new(bank, pcrs[e.pcr] + e.digest(bank)).digest()
    return pcrs


def utf16(text: str) -> bytes:
    return (text + "\x00").encode("utf-16-le")


def variable_data(guid: str, name: str, data: bytes) -> bytes:
    """UEFI_VARIABLE_DATA: VariableName GUID, UnicodeNameLength, VariableDataLength, the
    name (UTF-16, no NUL) and the data."""
    encoded = name.encode("utf-16-le")
    head = uuid.UUID(guid).bytes_le + struct.pack("<QQ", len(name), len(data))
    return head + encoded + data


def image_load(location: int, length: int, device_path: bytes) -> bytes:
    """UEFI_IMAGE_LOAD_EVENT: location, length, link-time address, device path."""
    return struct.pack("<QQQQ", location, length, 0, len(device_path)) + device_path


def file_path_node(path: str) -> bytes:
    """A device path: one MEDIA_FILEPATH_DP node and the end node."""
    text = utf16(path)
    return struct.pack("<BBH", 4, 4, 4 + len(text)) + text + b"\x7f\xff\x04\x00"


SEPARATOR = b"\x00\x00\x00\x00"
DBX = Ev(7, EV_EFI_VARIABLE_DRIVER_CONFIG, variable_data(IMAGE_SECURITY, "dbx", b"dbx" * 300))
BOOT = [
    Ev(0, EV_S_CRTM_VERSION, utf16("Docket Test Firmware v1")),
    Ev(7, EV_EFI_VARIABLE_DRIVER_CONFIG, variable_data(GLOBAL, "SecureBoot", b"\x01")),
    Ev(7, EV_EFI_VARIABLE_DRIVER_CONFIG, variable_data(GLOBAL, "PK", b"pk-list" * 40)),
    Ev(7, EV_EFI_VARIABLE_DRIVER_CONFIG, variable_data(IMAGE_SECURITY, "db", b"db-list" * 90)),
    DBX,
    Ev(1, EV_EFI_VARIABLE_BOOT, variable_data(GLOBAL, "BootOrder", b"\x00\x00")),
    Ev(4, EV_EFI_ACTION, b"Calling EFI Application from Boot Option"),
    *[Ev(pcr, EV_SEPARATOR, SEPARATOR) for pcr in range(8)],
    Ev(7, EV_EFI_VARIABLE_AUTHORITY, variable_data(IMAGE_SECURITY, "db", b"signer" * 20)),
    Ev(
        4,
        EV_EFI_BOOT_SERVICES_APPLICATION,
        image_load(0x7E000000, 0x10000, file_path_node(r"\EFI\BOOT\BOOTX64.EFI")),
        measured=b"the shim image",
    ),
    Ev(5, EV_EFI_GPT_EVENT, b"\x00" * 92 + struct.pack("<Q", 0)),
    Ev(8, EV_IPL, b"grub_cmd: linux /vmlinuz root=/dev/sda1\x00"),
    Ev(9, EV_IPL, b"/boot/vmlinuz\x00", measured=b"the kernel image"),
    Ev(14, EV_IPL, b"MokList\x00"),
    Ev(5, EV_EFI_ACTION, b"Exit Boot Services Invocation"),
    Ev(5, EV_EFI_ACTION, b"Exit Boot Services Returned with Success"),
]


def sized_boot(size: int) -> list[Ev]:
    """``BOOT`` grown to about ``size`` bytes as a crypto-agile log of ``SIZED_BANKS``, the
    way real 40 KB logs are: a dbx of some 9 KB, then GRUB's commands, one event each."""
    dbx = BOOT.index(DBX)
    events = [*BOOT[:dbx], replace(DBX, data=variable_data(IMAGE_SECURITY, "dbx", bytes(9000)))]
    events += BOOT[dbx + 1 :]
    line = 0
    while len(agile_log(events, SIZED_BANKS)) < size:
        line += 1
        command = f"grub_cmd: search --set=root --fs-uuid {line:08x}\x00"
        events.append(Ev(8, EV_IPL, command.encode()))
    return events


SIZED_BANKS = ("sha1", "sha256", "sha384")


def use_every_way(raw: bytes) -> None:
    """Parse ``raw`` and, if it parses, replay every bank, check every event's data and
    decode it every way: for the fuzz tests, where only EventLogError may come out."""
    try:
        log = at.parse_event_log(raw)
    except at.EventLogError:
        return
    for bank in log.banks:
        with contextlib.suppress(at.EventLogError):
            at.check_replay(log, bank, at.replay(log, bank))
    for event in log.events:
        for bank in log.banks:
            with contextlib.suppress(at.EventLogError):
                at.check_event_data(event, bank)
        with contextlib.suppress(at.EventLogError):
            assert at.efi_image_load(event).file_path != ""
        for decode in (at.efi_variable, at.event_text):
            with contextlib.suppress(at.EventLogError):
                decode(event)
