"""An event's data: proven by its digest or not, and decoded by the event's type.

A replayed log proves the *digests*; an event's *data* is only proven where its digest is
of that data (``check_event_data``): an image load's digest is of the image, not of the
device path it names; EDK2 in cloud VMs measures an EV_EFI_VARIABLE_BOOT variable's value
alone (TPM 1.2 era firmware every variable's), leaving its name and GUID unproven.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from attestation._errors import EventLogError
from attestation._eventlog.log import (
    EV_ACTION,
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_BOOT_SERVICES_DRIVER,
    EV_EFI_RUNTIME_SERVICES_DRIVER,
    EV_EFI_SPDM_DEVICE_POLICY,
    EV_EFI_VARIABLE_AUTHORITY,
    EV_EFI_VARIABLE_BOOT,
    EV_EFI_VARIABLE_BOOT2,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_IPL,
    EV_S_CRTM_VERSION,
    Event,
)

_VARIABLE_HEAD: Final = struct.Struct("<16sQQ")  # VariableName GUID, name length, data length
_IMAGE_HEAD: Final = struct.Struct("<QQQQ")  # location, length, link-time address, path length
_NODE_HEAD: Final = struct.Struct("<BBH")  # device path node: type, subtype, length


@dataclass(frozen=True, slots=True)
class EfiVariable:
    """UEFI_VARIABLE_DATA: the variable's vendor GUID (``8be4df61-93ca-11d2-aa0d-…``), its
    name ("SecureBoot", "db") and its data."""

    guid: str
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class EfiImageLoad:
    """UEFI_IMAGE_LOAD_EVENT: where the image was loaded, its length, its link-time address
    and the UEFI device path it was loaded from. The event's digest is of the image (a PE
    Authenticode hash), not of these fields: they are the firmware's word only."""

    location: int
    length: int
    link_time_address: int
    device_path: bytes

    @property
    def file_path(self) -> str | None:
        """The text of the device path's file-path nodes (``\\EFI\\BOOT\\BOOTX64.EFI``),
        or None when it has none or is malformed."""
        path, parts = self.device_path, []
        offset = 0
        while offset + _NODE_HEAD.size <= len(path):
            kind, subtype, length = _NODE_HEAD.unpack_from(path, offset)
            if length < _NODE_HEAD.size or offset + length > len(path) or kind == 0x7F:
                break
            if (kind, subtype) == (4, 4):  # MEDIA_DEVICE_PATH / MEDIA_FILEPATH_DP
                try:
                    parts.append(path[offset + 4 : offset + length].decode("utf-16-le"))
                except UnicodeDecodeError:
                    return None
            offset += length
        text = "".join(part.rstrip("\x00") for part in parts)
        return text or None


def _wrong(event: Event, what: str) -> EventLogError:
    return EventLogError(
        f"event {event.index} ({event.type_name}) at offset {event.offset}: {what}"
    )


def check_event_data(event: Event, bank: str) -> None:
    """The event's digest in ``bank`` is the digest of its data, so what its data says was
    measured (after check_replay proved the digest). Raises EventLogError otherwise: for
    events that measure something else (an image, a file) and for data edited under a kept
    digest."""
    digest = event.digests.get(bank)
    if digest is None:
        raise _wrong(event, f"has no {bank} digest")
    try:
        measured = hashlib.new(bank, event.data).digest()
    except ValueError:
        raise _wrong(event, f"the {bank} digest cannot be computed here") from None
    if measured != digest:
        raise _wrong(event, f"its data is not what its {bank} digest measures")


_VARIABLE_EVENTS: Final = frozenset(
    {
        EV_EFI_VARIABLE_DRIVER_CONFIG,
        EV_EFI_VARIABLE_BOOT,
        EV_EFI_VARIABLE_BOOT2,
        EV_EFI_VARIABLE_AUTHORITY,
        EV_EFI_SPDM_DEVICE_POLICY,
    }
)
_IMAGE_EVENTS: Final = frozenset(
    {EV_EFI_BOOT_SERVICES_APPLICATION, EV_EFI_BOOT_SERVICES_DRIVER, EV_EFI_RUNTIME_SERVICES_DRIVER}
)


def _guid(raw: bytes) -> str:
    a, b, c = struct.unpack_from("<IHH", raw)
    return f"{a:08x}-{b:04x}-{c:04x}-{raw[8:10].hex()}-{raw[10:16].hex()}"


def efi_variable(event: Event) -> EfiVariable:
    """The UEFI_VARIABLE_DATA of an EV_EFI_VARIABLE_* event (DRIVER_CONFIG, BOOT, BOOT2,
    AUTHORITY, SPDM_DEVICE_POLICY). Raises EventLogError for another type, lengths that run
    past the event's data, or a name that is not UTF-16. Bytes after the variable's data
    are ignored: GCE's firmware pads its EV_EFI_VARIABLE_AUTHORITY events with six."""
    if event.type not in _VARIABLE_EVENTS:
        raise _wrong(event, "not an EFI variable event")
    data = event.data
    if len(data) < _VARIABLE_HEAD.size:
        raise _wrong(event, f"UEFI_VARIABLE_DATA of {len(data)} bytes is shorter than its header")
    guid, name_chars, value_size = _VARIABLE_HEAD.unpack_from(data)
    start = _VARIABLE_HEAD.size
    value = start + 2 * name_chars
    if value + value_size > len(data):
        raise _wrong(
            event,
            f"UEFI_VARIABLE_DATA lengths (a name of {name_chars} characters, {value_size} bytes "
            f"of data) run past its {len(data)} bytes",
        )
    try:
        name = data[start:value].decode("utf-16-le")
    except UnicodeDecodeError:
        raise _wrong(event, "the variable name is not UTF-16") from None
    return EfiVariable(_guid(guid), name, data[value : value + value_size])


def efi_image_load(event: Event) -> EfiImageLoad:
    """The UEFI_IMAGE_LOAD_EVENT of an EV_EFI_BOOT_SERVICES_APPLICATION, _DRIVER or
    EV_EFI_RUNTIME_SERVICES_DRIVER event. Raises EventLogError for another type or a device
    path that runs past the data. Bytes after the device path are ignored: shim and some
    firmware pad these events (8 or 9 bytes in GCE, RHEL and Fedora logs)."""
    if event.type not in _IMAGE_EVENTS:
        raise _wrong(event, "not an EFI image load event")
    data = event.data
    if len(data) < _IMAGE_HEAD.size:
        raise _wrong(
            event, f"UEFI_IMAGE_LOAD_EVENT of {len(data)} bytes is shorter than its header"
        )
    location, length, link_time, path_size = _IMAGE_HEAD.unpack_from(data)
    if path_size > len(data) - _IMAGE_HEAD.size:
        follow = len(data) - _IMAGE_HEAD.size
        raise _wrong(event, f"a device path of {path_size} bytes, but {follow} follow the header")
    path = data[_IMAGE_HEAD.size : _IMAGE_HEAD.size + path_size]
    return EfiImageLoad(location, length, link_time, path)


_ASCII_TEXT: Final = frozenset({EV_ACTION, EV_EFI_ACTION})


def event_text(event: Event) -> str:
    """The text of an EV_EFI_ACTION or EV_ACTION (ASCII), EV_S_CRTM_VERSION (UTF-16) or
    EV_IPL event (UTF-16 as systemd-boot writes it, else UTF-8 as GRUB does), without
    trailing NULs. Raises EventLogError for another type or text that does not decode."""
    data = event.data
    if event.type in _ASCII_TEXT:
        encoding = "ascii"
    elif event.type == EV_S_CRTM_VERSION:
        encoding = "utf-16-le"
    elif event.type == EV_IPL:
        encoding = (
            "utf-16-le" if len(data) % 2 == 0 and len(data) >= 2 and data[1] == 0 else "utf-8"
        )
    else:
        raise _wrong(event, "carries no text")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        label = {"ascii": "ASCII", "utf-16-le": "UTF-16", "utf-8": "UTF-8"}[encoding]
        raise _wrong(event, f"its text is not {label}") from None
    return text.rstrip("\x00")
