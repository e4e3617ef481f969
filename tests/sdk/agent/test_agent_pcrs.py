"""PCR selections (sdk/agent/_pcrs.py): building, parsing, and cutting tpm2_pcrread's
output into values."""

from __future__ import annotations

from typing import Any

import pytest

from sdk import InvalidRequestError
from sdk.agent import TpmError, pcr_selection
from sdk.agent._pcrs import parse_selection, split_pcr_values

SELECTIONS = [
    pytest.param({"sha256": [0, 1, 2]}, "sha256:0,1,2", id="one-bank"),
    pytest.param({"sha256": [7, 0, 7, 3]}, "sha256:0,3,7", id="sorted-deduplicated"),
    pytest.param({"sha256": [0], "sha1": [23]}, "sha256:0+sha1:23", id="banks-keep-order"),
    pytest.param({"sha512": range(3)}, "sha512:0,1,2", id="any-iterable"),
]


@pytest.mark.parametrize(("banks", "expected"), SELECTIONS)
def test_pcr_selection(banks: dict[str, Any], expected: str) -> None:
    assert pcr_selection(banks) == expected


BAD_SELECTIONS = [
    pytest.param({"md5": [0]}, "unknown PCR bank 'md5'", id="unknown-bank"),
    pytest.param({"sha256": [24]}, "PCR 24 of bank sha256 is outside 0-23", id="too-high"),
    pytest.param({"sha256": [-1]}, "outside", id="negative"),
    pytest.param({"sha256": []}, "selects no PCR", id="empty-bank"),
    pytest.param({}, "no PCRs selected", id="nothing"),
]


@pytest.mark.parametrize(("banks", "message"), BAD_SELECTIONS)
def test_bad_pcr_selection_is_refused(banks: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        pcr_selection(banks)


def test_selection_string_parses_back() -> None:
    assert parse_selection("sha256:7,0+sha1:3+sha256:1") == [("sha256", [0, 1, 7]), ("sha1", [3])]


@pytest.mark.parametrize("text", ["all", "sha256", "sha256:", "sha256:0,,1", "sha256:a", ""])
def test_unparseable_selection_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_selection(text)


def test_pcr_values_are_cut_in_selection_order() -> None:
    raw = b"".join(bytes([i]) * 32 for i in (0, 1)) + bytes([9]) * 20
    assert split_pcr_values("sha256:0,1+sha1:5", raw) == {
        (0x000B, 0): bytes([0]) * 32,
        (0x000B, 1): bytes([1]) * 32,
        (0x0004, 5): bytes([9]) * 20,
    }


def test_pcr_values_of_the_wrong_size_are_a_tpm_error() -> None:
    with pytest.raises(TpmError, match="returned 32 bytes for sha256:0,1, expected 64"):
        split_pcr_values("sha256:0,1", bytes(32))
