"""c2sp.org/tlog-witness against a real ``docket witness serve``, behaviour by behaviour:
each status code and body the specification names, the fork record, persistence across
a restart, concurrent submissions, and a site gathering cosignatures with
``docket witness cosign``. Every 200's cosignature is checked by :func:`by_hand`,
written from the specification's text, not with Docket's code.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from e2e.docket_process import DOCKET
from e2e.witness_process import (
    TinyLog,
    WitnessProcess,
    aics_feed,
    by_hand,
    make_witness_key,
    start_aics_witness,
    start_witness,
)

from audit import (
    ALG_COSIGNATURE_V1,
    AuditLog,
    Entry,
    SignerKey,
    VerifierKey,
    open_cosigned_checkpoint,
    origin_hash,
)
from audit.merkle import EMPTY_ROOT

pytestmark = pytest.mark.e2e

NAME = "witness.test/w1"
ORIGINS = [
    "first",
    "growth",
    "stale",
    "bad-proof",
    "proof-from-zero",
    "forged",
    "old-past-size",
    "malformed",
    "oversize",
    "size-zero",
    "concurrent",
    "monitor",
    "interop",
]
LOGS = {name: TinyLog(f"site.test/{name}") for name in ORIGINS}


class Served:
    def __init__(self, process: WitnessProcess, vkey: str, public: bytes) -> None:
        self.process = process
        self.vkey = vkey
        self.public = public

    def cosigned(self, answer: httpx.Response, tiny: TinyLog, size: int) -> int:
        """Check a 200's body: one cosignature line by the witness over ``tiny``'s
        checkpoint of ``size``; returns its timestamp."""
        assert answer.status_code == 200, answer.text
        (line,) = answer.text.splitlines(keepends=True)
        return by_hand(line, tiny.checkpoint(size).body(), self.public, NAME)


@pytest.fixture(scope="module")
def witness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("witness")
    vkey, public = make_witness_key(root / "witness.key", NAME)
    process = start_witness(root, root / "witness.key", list(LOGS.values()))
    try:
        yield Served(process, vkey, public)
    finally:
        assert process.stop() == 0, process.log.read_text()


def test_a_first_checkpoint_from_old_size_0_is_cosigned(witness: Served) -> None:
    tiny = LOGS["first"]
    answer = witness.process.post(tiny.body(0, 5))
    stamp = witness.cosigned(answer, tiny, 5)
    assert abs(datetime.fromtimestamp(stamp, UTC) - datetime.now(UTC)) < timedelta(minutes=5)


def test_growth_with_a_good_proof_is_cosigned(witness: Served) -> None:
    tiny = LOGS["growth"]
    for old, new in [(0, 3), (3, 7), (7, 7), (7, 8), (8, 21)]:
        witness.cosigned(witness.process.post(tiny.body(old, new)), tiny, new)


def test_a_stale_old_size_gets_409_with_the_witness_size(witness: Served) -> None:
    tiny = LOGS["stale"]
    witness.cosigned(witness.process.post(tiny.body(0, 6)), tiny, 6)
    for old in (0, 4):
        answer = witness.process.post(tiny.body(old, 9))
        assert answer.status_code == 409
        assert answer.headers["content-type"] == "text/x.tlog.size"
        assert answer.text == "6\n"
    witness.cosigned(witness.process.post(tiny.body(6, 9)), tiny, 9)


def test_a_bad_consistency_proof_gets_422(witness: Served) -> None:
    tiny = LOGS["bad-proof"]
    witness.cosigned(witness.process.post(tiny.body(0, 5)), tiny, 5)
    proof = tiny.proof(5, 12)
    proof[0] = bytes(32)
    assert witness.process.post(tiny.body(5, 12, proof)).status_code == 422
    assert witness.process.post(tiny.body(5, 12, proof[:-1])).status_code == 422
    witness.cosigned(witness.process.post(tiny.body(5, 12)), tiny, 12)  # nothing moved


def test_a_proof_from_size_0_must_be_empty(witness: Served) -> None:
    tiny = LOGS["proof-from-zero"]
    assert witness.process.post(tiny.body(0, 5, [bytes(32)])).status_code == 422


def test_a_forged_signature_gets_403(witness: Served) -> None:
    tiny = LOGS["forged"]
    impostor = SignerKey.generate(tiny.origin)  # the log's name, another key
    body = f"old 0\n\n{tiny.note(4, impostor)}".encode()
    assert witness.process.post(body).status_code == 403
    # A line with the trusted key's name and id but a broken signature: 403 too.
    note = tiny.note(4)
    text, _, line = note.rpartition("\n\n")
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[-1] ^= 1
    broken = f"{text}\n\n\N{EM DASH} {tiny.origin} {base64.b64encode(raw).decode()}\n"
    assert witness.process.post(f"old 0\n\n{broken}".encode()).status_code == 403


def test_an_unknown_origin_gets_404(witness: Served) -> None:
    stranger = TinyLog("site.test/nobody-knows")
    assert witness.process.post(stranger.body(0, 3)).status_code == 404


def test_an_old_size_past_the_checkpoint_gets_400(witness: Served) -> None:
    tiny = LOGS["old-past-size"]
    assert witness.process.post(f"old 9\n\n{tiny.note(4)}".encode()).status_code == 400


MALFORMED = {
    "empty": b"",
    "no-checkpoint": b"old 0\n",
    "leading-zero": b"old 00\n\n{note}",
    "negative": b"old -1\n\n{note}",
    "not-old": b"new 0\n\n{note}",
    "proof-not-base64": b"old 0\nnot base64!\n\n{note}",
    "proof-not-32-bytes": b"old 0\nAAAA\n\n{note}",
    "not-utf8": b"old 0\n\n\xff\xfe",
    "unsigned-note": b"old 0\n\nsite.test/malformed\n1\n",
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_body_gets_400(witness: Served, body: bytes) -> None:
    body = body.replace(b"{note}", LOGS["malformed"].note(2).encode())
    assert witness.process.post(body).status_code == 400


def test_more_than_63_proof_lines_gets_400(witness: Served) -> None:
    tiny = LOGS["malformed"]
    assert witness.process.post(tiny.body(0, 2, [bytes(32)] * 64)).status_code == 400


def test_an_oversize_body_is_refused_unread(witness: Served) -> None:
    tiny = LOGS["oversize"]
    body = tiny.body(0, 2) + b"x" * (70 * 1024)
    assert witness.process.post(body).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused as it grows
        yield body[:1000]
        for _ in range(80):
            yield b"\n" * 1024

    answer = httpx.post(f"{witness.process.url}/add-checkpoint", content=chunks(), timeout=10)
    assert answer.status_code == 413


def test_a_size_0_checkpoint_needs_the_empty_root(witness: Served) -> None:
    tiny = LOGS["size-zero"]
    assert tiny.checkpoint(0).root == EMPTY_ROOT
    witness.cosigned(witness.process.post(tiny.body(0, 0)), tiny, 0)


def test_concurrent_submissions_from_one_old_size_never_both_succeed(witness: Served) -> None:
    tiny = LOGS["concurrent"]
    witness.cosigned(witness.process.post(tiny.body(0, 10)), tiny, 10)
    sizes = list(range(11, 31))
    with ThreadPoolExecutor(len(sizes)) as pool:
        answers = list(pool.map(lambda n: witness.process.post(tiny.body(10, n)), sizes))
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 1, codes
    winner = sizes[codes.index(200)]
    assert all(a.text == f"{winner}\n" for a in answers if a.status_code == 409)
    assert set(codes) == {200, 409}


def test_add_checkpoint_is_a_post_and_other_paths_are_not_found(witness: Served) -> None:
    answer = httpx.get(f"{witness.process.url}/add-checkpoint", timeout=10)
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert httpx.post(f"{witness.process.url}/other", content=b"x", timeout=10).status_code == 404


def test_monitors_read_the_latest_cosigned_checkpoint(witness: Served) -> None:
    tiny = LOGS["monitor"]
    url = f"{witness.process.url}/{origin_hash(tiny.origin)}/checkpoint"
    assert httpx.get(url, timeout=10).status_code == 404
    witness.cosigned(witness.process.post(tiny.body(0, 3)), tiny, 3)
    note = httpx.get(url, timeout=10).text
    assert note.startswith(tiny.checkpoint(3).body() + "\n")
    assert f"\N{EM DASH} {tiny.origin} " in note
    line = next(x for x in note.splitlines(keepends=True) if x.startswith(f"\N{EM DASH} {NAME}"))
    by_hand(line, tiny.checkpoint(3).body(), witness.public, NAME)


def test_a_fork_gets_422_and_is_recorded_with_both_checkpoints(tmp_path: Path) -> None:
    """Same size, another root, both signed by the log: 422, a log line, and a fork
    record with both notes, kept across a restart; the witness still holds the first."""
    tiny = LOGS["first"]
    fork = TinyLog(tiny.origin)
    fork.key, fork.salt = tiny.key, "other "
    _, public = make_witness_key(tmp_path / "witness.key", NAME)
    process = start_witness(tmp_path, tmp_path / "witness.key", [tiny])
    try:
        assert process.post(tiny.body(0, 8)).status_code == 200
        answer = process.post(fork.body(8, 8))
        assert answer.status_code == 422
        assert "fork" in answer.text
        # The fork's extension is refused too: the witness holds the first tree.
        assert process.post(fork.body(8, 12, fork.proof(8, 12))).status_code == 422
    finally:
        assert process.stop() == 0
    assert "witness.fork" in process.log.read_text()
    process = start_witness(tmp_path, tmp_path / "witness.key", [tiny])
    try:  # after a restart: the state and the record are still there
        assert process.post(tiny.body(0, 9)).text == "8\n"
        answer = process.post(tiny.body(8, 9))
        assert answer.status_code == 200
        by_hand(answer.text, tiny.checkpoint(9).body(), public, NAME)
    finally:
        assert process.stop() == 0
    shown = subprocess.run(
        [DOCKET, "witness", "logs", "--json", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (record,) = json.loads(shown)["forks"]
    assert record["size"] == 8
    assert record["held"].startswith(tiny.checkpoint(8).body())
    assert record["offered"] == fork.note(8)


# -- a site gathers cosignatures: `docket witness cosign` over a real audit log ------------


class Site:
    """A site's audit log under ``root/data`` (as ``docket serve`` keeps it), grown and
    checkpointed on demand."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.log = AuditLog.open(
            f"sqlite:///{self.data / 'docket.db'}",
            keys=self.data / "audit-keys",
            checkpoint_every=10**9,
            checkpoint_interval=3600.0,
        ).start()

    @property
    def origin(self) -> str:
        return self.log.origin

    def vkey(self) -> str:
        return str(self.log.verifiers()[0])

    def grow(self, entries: int) -> int:
        now = datetime.now(UTC)
        self.log.record([Entry(kind="decision", time=now) for _ in range(entries)])
        return self.log.checkpoint().size

    def our_witness(self, root: Path) -> tuple[WitnessProcess, str, bytes]:
        """A `docket witness serve` under ``root`` that knows this site's log: the
        process, its verifier key and its raw public key."""
        vkey, public = make_witness_key(root / "w.key", NAME)
        knows = f"--log={self.origin}={self.vkey()}"
        return start_witness(root / "w", root / "w.key", [], knows), vkey, public

    def cosign(
        self, *witnesses: str, quorum: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        flags = [f"--witness={w}" for w in witnesses]
        flags += [] if quorum is None else ["--quorum", str(quorum)]
        return subprocess.run(
            [DOCKET, "witness", "cosign", "--data-dir", str(self.data), *flags],
            capture_output=True,
            text=True,
            check=False,
        )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = Site(tmp_path / "site")
    with contextlib.closing(made.log):
        yield made


def test_a_site_gathers_cosignatures_and_treats_the_checkpoint_as_final(
    tmp_path: Path, site: Site
) -> None:
    site.grow(5)
    process, vkey, public = site.our_witness(tmp_path)
    witness = f"{process.url}={vkey}"
    try:
        first = site.cosign(witness)
        assert first.returncode == 0, first.stderr
        size = site.grow(7)
        second = site.cosign(witness)  # from the witness's 5, with the store's proof
        assert second.returncode == 0, second.stderr
        absent = SignerKey.generate("witness.test/w2", ALG_COSIGNATURE_V1).verifier()
        down = f"http://127.0.0.1:9={absent}"  # nothing listens on the discard port
        refused = site.cosign(witness, down)
        assert refused.returncode == 1
        assert "not final" in refused.stderr
        assert site.cosign(witness, down, quorum=1).returncode == 0
    finally:
        assert process.stop() == 0
    opened = open_cosigned_checkpoint(
        second.stdout, site.log.verifiers(), [VerifierKey.parse(vkey, ALG_COSIGNATURE_V1)]
    )
    assert opened.checkpoint.size == size == 12
    body = opened.checkpoint.body()
    line = next(
        x for x in second.stdout.splitlines(keepends=True) if x.startswith(f"\N{EM DASH} {NAME} ")
    )
    by_hand(line, body, public, NAME)


# -- interoperation with a witness and a client we did not write (aics-witness, PyPI, in a
# virtualenv of its own that the first test to need it installs: see witness_process.py) ---


def test_a_site_is_cosigned_by_our_witness_and_one_we_did_not_write(
    tmp_path: Path, site: Site
) -> None:
    site.grow(4)
    ours, ours_vkey, _ = site.our_witness(tmp_path)
    theirs, theirs_vkey = start_aics_witness(
        tmp_path / "theirs", "witness.test/aics", {site.origin: site.vkey()}
    )
    witnesses = [f"{ours.url}={ours_vkey}", f"{theirs.url}={theirs_vkey}"]
    try:
        for grow in (0, 9, 1):  # the first, then growth with proofs from the site's store
            size = site.grow(grow) if grow else 4
            cosigned = site.cosign(*witnesses)
            assert cosigned.returncode == 0, cosigned.stderr + theirs.log.read_text()
            keys = [VerifierKey.parse(v, ALG_COSIGNATURE_V1) for v in (ours_vkey, theirs_vkey)]
            opened = open_cosigned_checkpoint(cosigned.stdout, site.log.verifiers(), keys)
            assert opened.checkpoint.size == size
    finally:
        assert ours.stop() == 0
        theirs.stop()


def test_our_witness_answers_a_client_we_did_not_write(witness: Served, tmp_path: Path) -> None:
    """aics-witness's client submits to `docket witness serve` and checks each
    cosignature with aics-tlog; a fork is refused with 422."""
    tiny = LOGS["interop"]
    fork = TinyLog(tiny.origin)
    fork.key, fork.salt = tiny.key, "fork "
    steps = [
        (0, [], tiny.note(3)),
        (3, tiny.proof(3, 10), tiny.note(10)),
        (10, [], tiny.note(10)),
        (10, [], fork.note(10)),
    ]
    answers = aics_feed(witness.process.url, witness.vkey, steps)
    assert [a.get("rejected") for a in answers] == [None, None, None, 422]
    for answer, size in zip(answers[:3], (3, 10, 10), strict=True):
        assert isinstance(answer["lines"], str)
        by_hand(answer["lines"], tiny.checkpoint(size).body(), witness.public, NAME)
