"""The witness's state in SQLite: kept across a reopen, advanced by one atomic
check-and-set even by two processes' worth of store handles at once, and a fork kept
as evidence. (Each status code over HTTP: tests/e2e/test_witness_serve.py.)"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from e2e.witness_process import TinyLog
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import ALG_COSIGNATURE_V1, ForkDetected, SignerKey, WitnessError
from audit._witness import Witness, parse_add_checkpoint
from audit._witness_store import WitnessStore

LINE = b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
KEY = SignerKey.generate("witness.test/unit", ALG_COSIGNATURE_V1)


def test_what_was_cosigned_survives_a_reopen(tmp_path: Path) -> None:
    tiny = TinyLog("site.test/reopen")
    store = WitnessStore(tmp_path / "witness.db")
    store.add_log(tiny.origin, [tiny.key.verifier()])
    Witness(store, [KEY]).add_checkpoint(tiny.body(0, 6))
    store.close()
    again = WitnessStore(tmp_path / "witness.db")
    state = again.log(tiny.origin)
    assert state is not None
    assert (state.size, state.root) == (6, tiny.checkpoint(6).root)
    with pytest.raises(WitnessError) as refused:
        Witness(again, [KEY]).add_checkpoint(tiny.body(0, 7))
    assert (refused.value.status, refused.value.size) == (409, 6)


def test_two_store_handles_never_both_advance_from_one_size(tmp_path: Path) -> None:
    """As two witness processes on one file would: of 16 submissions from size 4,
    exactly one is cosigned, the others see its size."""
    tiny = TinyLog("site.test/race")
    stores = [WitnessStore(tmp_path / "witness.db") for _ in range(2)]
    stores[0].add_log(tiny.origin, [tiny.key.verifier()])
    Witness(stores[0], [KEY]).add_checkpoint(tiny.body(0, 4))
    witnesses = [Witness(store, [KEY]) for store in stores]

    def submit(size: int) -> int | None:
        try:
            witnesses[size % 2].add_checkpoint(tiny.body(4, size))
        except WitnessError as exc:
            return exc.status
        return 200

    sizes = list(range(5, 21))
    with ThreadPoolExecutor(len(sizes)) as pool:
        codes = list(pool.map(submit, sizes))
    assert codes.count(200) == 1, codes
    assert set(codes) == {200, 409}, codes
    state = stores[1].log(tiny.origin)
    assert state is not None
    assert state.size == sizes[codes.index(200)]


def test_a_fork_is_kept_with_both_notes_and_changes_nothing(tmp_path: Path) -> None:
    tiny = TinyLog("site.test/fork")
    fork = TinyLog(tiny.origin)
    fork.key, fork.salt = tiny.key, "fork "
    store = WitnessStore(tmp_path / "witness.db")
    store.add_log(tiny.origin, [tiny.key.verifier()])
    witness = Witness(store, [KEY])
    witness.add_checkpoint(tiny.body(0, 5))
    with pytest.raises(ForkDetected) as caught:
        witness.add_checkpoint(fork.body(5, 5))
    assert caught.value.status == 422
    (record,) = store.forks(tiny.origin)
    assert record.size == 5
    assert record.offered == fork.note(5)
    assert record.held.startswith(tiny.note(5))  # the log's note, then the cosignature
    state = store.log(tiny.origin)
    assert state is not None
    assert state.root == tiny.checkpoint(5).root


@pytest.mark.parametrize(
    ("body", "why"),
    [
        pytest.param(b"old 0\n" + LINE * 64 + b"\nsite\n1\n", "63", id="64-lines"),
        pytest.param(b"old 01\n\n", "old <size>", id="leading-zero"),
        pytest.param(b"old 0", "blank line", id="no-blank-line"),
    ],
)
def test_a_malformed_request_says_what_is_wrong(body: bytes, why: str) -> None:
    with pytest.raises(WitnessError, match=why) as refused:
        parse_add_checkpoint(body)
    assert refused.value.status == 400


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda head, tail: head + tail,
            st.sampled_from([b"old 0\n", b"old 5\n", b"old 0\n\n", b"old 3\nAAAA\n\n"]),
            st.binary(max_size=200),
        ),
    )
)
def test_the_parser_raises_only_a_400_on_arbitrary_bytes(body: bytes) -> None:
    status = None
    try:
        parse_add_checkpoint(body)
    except WitnessError as exc:
        status = exc.status
    assert status in (None, 400)
