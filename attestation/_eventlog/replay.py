"""Replaying a parsed event log: the PCR values its digests extend to, against a quote's."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from attestation._errors import EventLogError
from attestation._eventlog.log import EV_NO_ACTION, PCR_COUNT, REPLAYED_PCRS, EventLog
from attestation._tpm import HASH_IDS, HASHES


def _hash(log: EventLog, bank: str) -> tuple[str, int]:
    if bank not in log.banks:
        raise EventLogError(f"the log has no {bank} bank (it has {', '.join(log.banks)})")
    if bank not in HASH_IDS:
        raise EventLogError(f"the {bank} bank cannot be replayed (no such hash here)")
    return bank, HASHES[HASH_IDS[bank]].digest_size


def _initial(pcr: int, size: int, locality: int) -> bytes:
    if not 0 <= pcr < PCR_COUNT:
        raise EventLogError(f"PCR index {pcr} is out of range (0-23)")
    if 17 <= pcr <= 22:  # the dynamic (DRTM) PCRs start at all ones
        return b"\xff" * size
    return bytes(size - 1) + bytes([locality if pcr == 0 else 0])


def replay(log: EventLog, bank: str, pcrs: Iterable[int] = REPLAYED_PCRS) -> dict[int, bytes]:
    """The values ``pcrs`` hold after extending, from their initial values (PCR 0 at the
    StartupLocality; 17-22 all ones), every event of ``bank`` but EV_NO_ACTION ones, in
    order. Raises EventLogError for a bank the log lacks or cannot be replayed."""
    name, size = _hash(log, bank)
    values = {pcr: _initial(pcr, size, log.startup_locality) for pcr in pcrs}
    new = hashlib.new
    for event in log.events:
        value = values.get(event.pcr)
        if value is not None and event.type != EV_NO_ACTION:
            values[event.pcr] = new(name, value + event.digests[bank]).digest()
    return values


def check_replay(log: EventLog, bank: str, quoted: Mapping[int, bytes]) -> None:
    """The log replays to every quoted PCR (a PCR the log never extends must hold its
    initial value). Raises EventLogError naming the first PCR, in index order, that does
    not: ``PCR 4 (sha256) does not replay: log gives …, quote has …``. Only events of the
    quoted PCRs are proven by this; the caller quotes the PCRs whose events it reads."""
    _, size = _hash(log, bank)
    for pcr in sorted(quoted):
        if len(quoted[pcr]) != size:
            raise EventLogError(
                f"PCR {pcr} ({bank}): the quote gives {len(quoted[pcr])} bytes, not {size}"
            )
    replayed = replay(log, bank, sorted(quoted))
    for pcr, value in replayed.items():
        if value != quoted[pcr]:
            raise EventLogError(
                f"PCR {pcr} ({bank}) does not replay: "
                f"log gives {value.hex()}, quote has {quoted[pcr].hex()}"
            )
