"""The TCG PC Client boot event log (pure: bytes in, values out; no I/O).

Every name the package offers is importable from here; ``attestation`` exports the public
ones.
"""

from attestation._eventlog.log import (
    EVENT_TYPES,
    MAX_EVENT_LOG_BYTES,
    MAX_EVENT_LOG_EVENTS,
    REPLAYED_PCRS,
    EfiImageLoad,
    EfiVariable,
    Event,
    EventLog,
    check_event_data,
    check_replay,
    efi_image_load,
    efi_variable,
    event_text,
    parse_event_log,
    replay,
    type_name,
)

__all__ = [
    "EVENT_TYPES",
    "MAX_EVENT_LOG_BYTES",
    "MAX_EVENT_LOG_EVENTS",
    "REPLAYED_PCRS",
    "EfiImageLoad",
    "EfiVariable",
    "Event",
    "EventLog",
    "check_event_data",
    "check_replay",
    "efi_image_load",
    "efi_variable",
    "event_text",
    "parse_event_log",
    "replay",
    "type_name",
]
