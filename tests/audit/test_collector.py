"""The collector's judging and store, in process, over real site logs (SQLite): entries
stored with the cosigned checkpoint, backlogs in chunks, and each bad push refused with
its status and reason while the last good state is kept. (Over HTTP with real
processes and PostgreSQL: tests/e2e/test_fleet.py.)"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import (
    ALG_COSIGNATURE_V1,
    AuditLog,
    Checkpoint,
    Collector,
    CollectorStore,
    CosignatureError,
    Cosigner,
    ForkDetected,
    Push,
    SignerKey,
    WitnessClient,
    WitnessError,
    final_checkpoint,
    finalize,
    next_push,
    open_cosigned_checkpoint,
)
from audit._collector import MAX_ENTRIES, encode_push, parse_push
from audit._merkle import leaf_hash
from audit._note import sign_checkpoint
from tests.audit.conftest import QUIET, sample_entry

WITNESS = SignerKey.generate("collector.test/w1", ALG_COSIGNATURE_V1)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog.open(f"sqlite:///{tmp_path / 'site.db'}", keys=tmp_path / "keys", **QUIET)
    log.start()
    yield log
    log.close()


@pytest.fixture
def collector(tmp_path: Path, site: AuditLog) -> Iterator[Collector]:
    store = CollectorStore(f"sqlite:///{tmp_path / 'collector.db'}")
    store.add_site("eu-1", site.verifiers())
    yield Collector(store, Cosigner([WITNESS]))
    store.close()


def _grow(site: AuditLog, start: int, count: int) -> None:
    site.record([sample_entry(start + n) for n in range(count)])
    site.checkpoint()


def _push(site: AuditLog, old: int, **options: int) -> Push:
    push = next_push(site.store, "eu-1", old, **options)
    assert push is not None
    return push


def _refused(collector: Collector, push: Push | bytes) -> WitnessError:
    body = push if isinstance(push, bytes) else encode_push(push)
    with pytest.raises(WitnessError) as refused:
        collector.push(body)
    return refused.value


def test_entries_are_stored_and_the_checkpoint_cosigned(
    site: AuditLog, collector: Collector
) -> None:
    _grow(site, 0, 5)
    accepted = collector.push(encode_push(_push(site, 0)))
    assert accepted.size == 5
    held = [(i, p, leaf) for i, p, leaf in collector.store.entries("eu-1")]
    assert held == [(r.idx, r.payload, r.leaf) for r in site.store.entries(0, 5)]
    cosigned = open_cosigned_checkpoint(accepted.note, site.verifiers(), [WITNESS.verifier()])
    assert cosigned.checkpoint.size == 5
    _grow(site, 5, 3)
    assert collector.push(encode_push(_push(site, 5))).size == 8
    assert [size for size, _ in collector.store.checkpoints("eu-1")] == [5, 8]


def test_a_site_takes_a_checkpoint_as_final_only_with_its_witnesses(
    site: AuditLog, collector: Collector
) -> None:
    _grow(site, 0, 4)
    push = _push(site, 0)
    lines = collector.push(encode_push(push)).lines
    witness = WitnessClient("http://collector.invalid", WITNESS.verifier())
    finalize(site.store, push.note + lines, site.verifiers(), [witness])
    final = final_checkpoint(site.store)
    assert final is not None
    assert final.endswith(lines)
    other = WitnessClient("http://127.0.0.1:9", SignerKey.generate("w2", 4).verifier(), 0.5)
    with pytest.raises(CosignatureError):  # w2 cannot be reached: not final
        finalize(site.store, push.note + lines, site.verifiers(), [witness, other])


def test_a_backlog_goes_in_chunks_each_ending_at_a_checkpoint(
    site: AuditLog, collector: Collector
) -> None:
    for start in range(0, 12, 3):
        _grow(site, start, 3)
    size = 0
    sizes = []
    while (push := next_push(site.store, "eu-1", size, limit=7)) is not None:
        size = collector.push(encode_push(push)).size
        sizes.append(size)
    assert sizes == [6, 12]
    assert len(list(collector.store.entries("eu-1"))) == 12


def test_a_push_from_another_size_gets_409_with_the_size_held(
    site: AuditLog, collector: Collector
) -> None:
    _grow(site, 0, 5)
    collector.push(encode_push(_push(site, 0)))
    _grow(site, 5, 2)
    refused = _refused(collector, _push(site, 0))
    assert (refused.status, refused.size) == (409, 5)


def test_a_forked_checkpoint_is_refused_and_kept_as_evidence(
    site: AuditLog, collector: Collector
) -> None:
    """The site's own key signs a second checkpoint of size 5, another root."""
    _grow(site, 0, 5)
    collector.push(encode_push(_push(site, 0)))
    assert site.keys is not None
    forged = sign_checkpoint(Checkpoint(site.origin, 5, leaf_hash(b"other")), site.keys.signers())
    push = dataclasses.replace(
        _push(site, 0),
        old_size=5,
        note=forged,
        entries=(),
        proof=(),
        checkpoint=Checkpoint(site.origin, 5, leaf_hash(b"other")),
    )
    refused = _refused(collector, push)
    assert isinstance(refused, ForkDetected)
    assert refused.status == 422
    (incident,) = collector.store.incidents("eu-1")
    assert (incident.size, incident.offered) == (5, forged)
    assert collector.store.statuses()[0].incidents == 1


def test_entries_that_do_not_hash_to_their_leaves_are_refused(
    site: AuditLog, collector: Collector
) -> None:
    _grow(site, 0, 5)
    push = _push(site, 0)
    payload, leaf = push.entries[2]
    assert payload is not None
    bad = dataclasses.replace(
        push, entries=(*push.entries[:2], (payload + b" ", leaf), *push.entries[3:])
    )
    refused = _refused(collector, bad)
    assert refused.status == 422
    assert "entry 2" in str(refused)
    assert collector.store.site("eu-1").log.size == 0  # type: ignore[union-attr]


def test_entries_that_do_not_reach_the_signed_root_are_refused_as_evidence(
    site: AuditLog, collector: Collector
) -> None:
    _grow(site, 0, 5)
    push = _push(site, 0)
    swapped = (push.entries[1], push.entries[0], *push.entries[2:])
    refused = _refused(collector, dataclasses.replace(push, entries=swapped))
    assert refused.status == 422
    assert "do not extend" in str(refused)
    assert len(collector.store.incidents("eu-1")) == 1
    assert list(collector.store.entries("eu-1")) == []


@pytest.mark.parametrize(
    ("mangle", "status", "reason"),
    [
        (lambda body: body[: len(body) // 2], 400, "not JSON"),
        (lambda body: body.replace(b'"eu-1"', b'"nowhere"'), 404, "unknown site"),
        (lambda body: body.replace(b'"old_size":0', b'"old_size":"0"'), 400, "old_size"),
    ],
    ids=["truncated-body", "unknown-site", "mistyped-field"],
)
def test_bad_bodies_are_refused_with_their_reason(
    site: AuditLog, collector: Collector, mangle: object, status: int, reason: str
) -> None:
    _grow(site, 0, 3)
    body = encode_push(_push(site, 0))
    assert callable(mangle)
    refused = _refused(collector, mangle(body))
    assert refused.status == status
    assert reason in str(refused)
    collector.push(body)  # the last good state was kept: the good push still fits


def test_a_checkpoint_not_signed_by_the_site_is_refused(
    site: AuditLog, collector: Collector
) -> None:
    _grow(site, 0, 3)
    push = _push(site, 0)
    stranger = SignerKey.generate(site.origin)
    forged = dataclasses.replace(push, note=sign_checkpoint(push.checkpoint, [stranger]))
    assert _refused(collector, forged).status == 403


def test_more_entries_than_a_push_may_carry_are_refused(
    site: AuditLog, collector: Collector
) -> None:
    _grow(site, 0, 1)
    push = _push(site, 0)
    many = dataclasses.replace(push, entries=push.entries * (MAX_ENTRIES + 1))
    assert _refused(collector, many).status == 413


def test_an_idle_site_is_cosigned_again_without_entries(
    site: AuditLog, collector: Collector
) -> None:
    """A heartbeat: the checkpoint the collector holds, pushed again, is cosigned anew
    (the site is alive, not lagging) and stores nothing more."""
    _grow(site, 0, 4)
    collector.push(encode_push(_push(site, 0)))
    assert next_push(site.store, "eu-1", 4) is None
    again = next_push(site.store, "eu-1", 4, heartbeat=True)
    assert again is not None
    assert (again.old_size, again.checkpoint.size, again.entries) == (4, 4, ())
    assert collector.push(encode_push(again)).size == 4
    assert [size for size, _ in collector.store.checkpoints("eu-1")] == [4]


def _refusal(body: bytes) -> int | None:
    """The status ``parse_push`` refuses ``body`` with (None: it reads it)."""
    try:
        parse_push(body)
    except WitnessError as exc:
        return exc.status
    return None


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=512), st.text(max_size=512).map(str.encode)))
def test_a_push_body_of_any_bytes_raises_only_the_collector_s_refusal(body: bytes) -> None:
    assert _refusal(body) in (None, 400, 413)


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
))  # fmt: skip
def test_any_json_document_raises_only_the_collector_s_refusal(document: object) -> None:
    assert _refusal(json.dumps(document).encode()) in (None, 400, 413)
