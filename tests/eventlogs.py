"""Synthetic boot event logs for the appraisal tests: what a UEFI firmware with shim, grub
and a kernel writes, and what it extends a TPM's PCRs with.

The encoding is tests/event_logs.py's (the parser tests' oracle); this module adds events
whose digests can lie (``digests``), :func:`standard_boot` (a plausible Secure Boot log:
CRTM version, the Secure Boot variables with EFI_SIGNATURE_LISTs, separators, the actions
around the boot option, shim → grub → kernel), and :func:`extend_commands`, the
``tpm2_pcrextend`` arguments that put a log's events into a (software) TPM.

Each :class:`LogEvent`'s digests are of ``measured`` (what the firmware hashed: the event
data for most events, the image for a boot application), unless ``digests`` overrides
them (a lying log).
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import event_logs

EV_POST_CODE = 0x1
EV_NO_ACTION = 0x3
EV_SEPARATOR = 0x4
EV_S_CRTM_VERSION = 0x8
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_ACTION = 0x80000007
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0

EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
EFI_CERT_X509 = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
EFI_CERT_SHA256 = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328")
OWNER = uuid.UUID("77fa9abd-0359-4d32-bd60-28f4e78f784b")  # Microsoft's signature owner

SIZES = {"sha1": 20, "sha256": 32}


@dataclass(frozen=True)
class LogEvent(event_logs.Ev):
    """tests/event_logs.py's event (PCR, type, data, what its digests are of), whose
    digests may also be given outright: a log that lies."""

    digests: Mapping[str, bytes] = field(default_factory=dict)

    def digest(self, bank: str) -> bytes:
        """The event's digest in ``bank``: the one given, else of what it measured."""
        return self.digests[bank] if bank in self.digests else super().digest(bank)


def variable_data(guid: uuid.UUID, name: str, value: bytes) -> bytes:
    """UEFI_VARIABLE_DATA (tests/event_logs.py's), for a GUID given as a UUID."""
    return event_logs.variable_data(str(guid), name, value)


def signature_list(kind: uuid.UUID, entries: Sequence[bytes]) -> bytes:
    """An EFI_SIGNATURE_LIST of same-size entries (each SignatureOwner + data)."""
    size = 16 + len(entries[0])
    body = b"".join(OWNER.bytes_le + entry for entry in entries)
    return kind.bytes_le + struct.pack("<III", 28 + len(body), 0, size) + body


def image_load_data(path: str) -> bytes:
    """UEFI_IMAGE_LOAD_EVENT of an image at ``path`` (one file path node)."""
    return event_logs.image_load(0x7E000000, 0x100000, event_logs.file_path_node(path))


def variable(name: str, value: bytes) -> LogEvent:
    """A Secure Boot variable measured into PCR 7 (db and dbx under the image security
    database GUID, the others under the global variable GUID)."""
    guid = EFI_IMAGE_SECURITY_DATABASE if name in ("db", "dbx") else EFI_GLOBAL_VARIABLE
    return LogEvent(7, EV_EFI_VARIABLE_DRIVER_CONFIG, variable_data(guid, name, value))


def action(pcr: int, text: str) -> LogEvent:
    """An EV_EFI_ACTION: its ASCII text, hashed as is (no NUL)."""
    return LogEvent(pcr, EV_EFI_ACTION, text.encode())


def application(path: str, image: bytes) -> LogEvent:
    """A boot application measured into PCR 4: the digest is of the image."""
    return LogEvent(4, EV_EFI_BOOT_SERVICES_APPLICATION, image_load_data(path), measured=image)


def separator(pcr: int, value: int = 0) -> LogEvent:
    """EV_SEPARATOR (0: the normal one; 1 signals a firmware error)."""
    return LogEvent(pcr, EV_SEPARATOR, struct.pack("<I", value))


def crtm_version(text: str) -> LogEvent:
    """EV_S_CRTM_VERSION in PCR 0: UTF-16LE text with its NUL."""
    return LogEvent(0, EV_S_CRTM_VERSION, (text + "\x00").encode("utf-16-le"))


PK = signature_list(EFI_CERT_X509, [b"platform key certificate"])
KEK = signature_list(EFI_CERT_X509, [b"kek certificate one", b"kek certificate two"])
DB = signature_list(EFI_CERT_X509, [b"windows production ca", b"uefi third party ca.."])
DBX = signature_list(
    EFI_CERT_SHA256, [hashlib.sha256(b"revoked %d" % i).digest() for i in range(3)]
)
SHIM, GRUB, KERNEL = b"shim image", b"grub image", b"vmlinuz image"


def standard_boot(
    *,
    secure_boot: bool = True,
    images: Sequence[bytes] = (SHIM, GRUB, KERNEL),
    crtm: str = "1.0.2",
    extra: Iterable[LogEvent] = (),
) -> list[LogEvent]:
    """A Secure Boot log as OVMF + shim + grub write it (``extra`` goes before the boot
    applications)."""
    events = [
        crtm_version(crtm),
        variable("SecureBoot", b"\x01" if secure_boot else b"\x00"),
        variable("PK", PK),
        variable("KEK", KEK),
        variable("db", DB),
        variable("dbx", DBX),
        action(4, "Calling EFI Application from Boot Option"),
        *(separator(pcr) for pcr in range(8)),
        *extra,
    ]
    names = ("shim", "grub", "kernel")
    events += [
        application(f"\\EFI\\{names[i % 3]}{i}.efi", image) for i, image in enumerate(images)
    ]
    events += [
        action(5, "Exit Boot Services Invocation"),
        action(5, "Exit Boot Services Returned with Success"),
    ]
    return events


def with_event(events: Sequence[LogEvent], index: int, **changes: object) -> list[LogEvent]:
    """``events`` with event ``index`` changed (a dataclass replace)."""
    changed = list(events)
    changed[index] = replace(changed[index], **changes)  # type: ignore[arg-type]
    return changed


def crypto_agile(events: Iterable[LogEvent], banks: Sequence[str] = ("sha1", "sha256")) -> bytes:
    """The log's bytes: the Spec ID header (a SHA-1 format event), then each event with a
    digest in every bank of ``banks`` (what :meth:`LogEvent.digest` says, lies included)."""
    algs = [(event_logs.ALG_IDS[b], SIZES[b]) for b in banks]
    out = event_logs.legacy_event(0, EV_NO_ACTION, bytes(20), event_logs.spec_id_data(algs))
    for event in events:
        digests = [(event_logs.ALG_IDS[b], event.digest(b)) for b in banks]
        out += event_logs.agile_event(event.pcr, event.type, digests, event.data)
    return out


def replay(events: Iterable[LogEvent], bank: str = "sha256") -> dict[int, bytes]:
    """The PCR values the events extend to (PCRs 0-9 and 14), from locality 0."""
    return event_logs.expected_pcrs(events, bank)


def extend_commands(
    events: Iterable[LogEvent], banks: Sequence[str] = ("sha1", "sha256")
) -> list[list[str]]:
    """``tpm2_pcrextend`` argument lists that extend a TPM's PCRs as the events say."""
    return [
        [
            "tpm2_pcrextend",
            f"{event.pcr}:" + ",".join(f"{b}={event.digest(b).hex()}" for b in banks),
        ]
        for event in events
        if event.type != EV_NO_ACTION
    ]
