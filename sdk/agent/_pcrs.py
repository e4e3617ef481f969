"""PCR selections as tpm2-tools writes them (``"sha256:0,1,2+sha1:7"``) and the PCR values
``tpm2_pcrread -o`` returns for one: pure, no TPM needed."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from sdk._errors import InvalidRequestError, TpmError

__all__ = ["PCR_BANKS", "PCR_COUNT", "parse_selection", "pcr_selection", "split_pcr_values"]

PCR_BANKS: Final[dict[str, tuple[int, int]]] = {
    "sha1": (0x0004, 20),
    "sha256": (0x000B, 32),
    "sha384": (0x000C, 48),
    "sha512": (0x000D, 64),
}
"""PCR bank name → (TPM_ALG_ID, digest size)."""

PCR_COUNT: Final = 24
_SELECTION = re.compile(r"^(\w+):(\d+(?:,\d+)*)$")


def pcr_selection(banks: Mapping[str, Iterable[int]]) -> str:
    """The tpm2-tools selection for ``{"sha256": [0, 1, 2]}``: ``"sha256:0,1,2"``.

    Banks keep their order, indexes are sorted and deduplicated, banks joined by ``+``.
    Raises ``InvalidRequestError`` for an unknown bank, a PCR outside 0-23, an empty bank
    or no bank at all.
    """
    parts: list[str] = []
    for bank, indexes in banks.items():
        if bank not in PCR_BANKS:
            known = ", ".join(PCR_BANKS)
            raise InvalidRequestError(f"unknown PCR bank {bank!r}: expected one of {known}")
        chosen = sorted(set(indexes))
        if not chosen:
            raise InvalidRequestError(f"PCR bank {bank} selects no PCR")
        bad = [i for i in chosen if not 0 <= i < PCR_COUNT]
        if bad:
            raise InvalidRequestError(f"PCR {bad[0]} of bank {bank} is outside 0-{PCR_COUNT - 1}")
        parts.append(f"{bank}:{','.join(str(i) for i in chosen)}")
    if not parts:
        raise InvalidRequestError("no PCRs selected")
    return "+".join(parts)


def parse_selection(selection: str) -> list[tuple[str, list[int]]]:
    """``"sha256:0,1+sha1:7"`` → ``[("sha256", [0, 1]), ("sha1", [7])]``, in the order
    tpm2-tools reports them (banks as given, indexes ascending). Raises
    ``InvalidRequestError`` for anything else (``all``, names of PCR sets, bad banks)."""
    merged: dict[str, set[int]] = {}
    for part in selection.split("+"):
        match = _SELECTION.match(part.strip())
        if match is None:
            raise InvalidRequestError(
                f"PCR selection {selection!r} is not of the form sha256:0,1,2[+sha1:0,...]"
            )
        merged.setdefault(match[1], set()).update(int(i) for i in match[2].split(","))
    normal = pcr_selection(merged)  # validates banks and indexes
    return [
        (bank, [int(i) for i in indexes.split(",")])
        for bank, _, indexes in (p.partition(":") for p in normal.split("+"))
    ]


def split_pcr_values(selection: str, raw: bytes) -> dict[tuple[int, int], bytes]:
    """Cut ``tpm2_pcrread -o`` output (the digests back to back) into
    ``{(alg_id, index): digest}``. Raises ``TpmError`` when the size does not match,
    which is what an inactive bank looks like."""
    layout = [
        (PCR_BANKS[bank][0], index, PCR_BANKS[bank][1])
        for bank, indexes in parse_selection(selection)
        for index in indexes
    ]
    expected = sum(size for _, _, size in layout)
    if len(raw) != expected:
        raise TpmError(
            f"tpm2_pcrread returned {len(raw)} bytes for {selection}, expected {expected}: "
            "is every bank of the selection active on this TPM? (tpm2_getcap pcrs)"
        )
    values: dict[tuple[int, int], bytes] = {}
    offset = 0
    for alg, index, size in layout:
        values[(alg, index)] = raw[offset : offset + size]
        offset += size
    return values
