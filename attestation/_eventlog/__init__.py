"""The TCG PC Client boot event log (pure: bytes in, values out; no I/O), by reason to change:

    log.py      the values (Event, EventLog) and the strict parser (parse_event_log)
    replay.py   the PCRs the log extends to (replay), against a quote's (check_replay)
    data.py     an event's data: proven by its digest (check_event_data), decoded by type
                (efi_variable, efi_image_load, event_text)

Imports point up this list (``data`` and ``replay`` use ``log``).
Every name the package offers is importable from here (EventLogError too, whose home is
``attestation._errors``); ``attestation`` exports the public ones.
"""

from attestation._errors import EventLogError
from attestation._eventlog.data import (
    EfiImageLoad,
    EfiVariable,
    check_event_data,
    efi_image_load,
    efi_variable,
    event_text,
)
from attestation._eventlog.log import (
    EVENT_TYPES,
    MAX_EVENT_LOG_BYTES,
    MAX_EVENT_LOG_EVENTS,
    REPLAYED_PCRS,
    Event,
    EventLog,
    parse_event_log,
    type_name,
)
from attestation._eventlog.replay import check_replay, replay

__all__ = [
    "EVENT_TYPES",
    "MAX_EVENT_LOG_BYTES",
    "MAX_EVENT_LOG_EVENTS",
    "REPLAYED_PCRS",
    "EfiImageLoad",
    "EfiVariable",
    "Event",
    "EventLog",
    "EventLogError",
    "check_event_data",
    "check_replay",
    "efi_image_load",
    "efi_variable",
    "event_text",
    "parse_event_log",
    "replay",
    "type_name",
]
