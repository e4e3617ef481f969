"""A log's side of c2sp.org/tlog-witness: submit a checkpoint to each configured witness
with a consistency proof from the size that witness last cosigned, and gather the
cosignatures a site needs before it treats the checkpoint as final.

The witness's size is asked of its monitoring endpoint, or taken from a 409 (the
specification's way: a first request with old size 0 learns it); the proof comes from
the caller (the audit store's :meth:`~audit._store.Store.consistency_proof`). HTTP is
the standard library's. Every failure is a :class:`~audit._errors.WitnessError`
(``status`` None when the witness could not be reached) or a
:class:`~audit._errors.CosignatureError`.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from audit._cosignature import (
    Cosignature,
    CosignedCheckpoint,
    cosignatures_of,
    open_cosigned_checkpoint,
    with_cosignatures,
)
from audit._errors import CosignatureError, KeyFormatError, NoteError, WitnessError
from audit._note import ALG_COSIGNATURE_V1, Checkpoint, VerifierKey, parse_note
from audit._witness import MAX_BODY, origin_hash

__all__ = ["ProofSource", "WitnessClient", "gather_cosignatures", "http_request"]

ProofSource = Callable[[int, int], Sequence[bytes]]
"""``(old_size, new_size)`` → the RFC 6962 consistency proof between them."""

log = structlog.get_logger("docket.witness")


@dataclass(frozen=True)
class WitnessClient:
    """One witness: its submission ``url`` prefix (monitoring is the same prefix) and
    its cosignature/v1 verifier ``key``."""

    url: str
    key: VerifierKey
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise KeyFormatError(f"a witness URL is http(s), not {self.url!r}")
        if self.key.alg != ALG_COSIGNATURE_V1:
            raise KeyFormatError(f"{self.key.name}: a witness key is a cosignature/v1 key")

    @classmethod
    def parse(cls, text: str, timeout: float = 10.0) -> WitnessClient:
        """Read ``URL=VKEY`` (the URL up to the first ``=``). Raises
        :class:`~audit._errors.KeyFormatError`."""
        url, equals, vkey = text.partition("=")
        if not equals:
            raise KeyFormatError(f"a witness is URL=VKEY, not {text!r}")
        return cls(url.rstrip("/"), VerifierKey.parse(vkey, ALG_COSIGNATURE_V1), timeout)

    def _request(self, path: str, body: bytes | None = None) -> tuple[int, str, bytes]:
        return http_request(f"witness {self.url}", self.url + path, body, self.timeout)

    def latest_size(self, origin: str) -> int:
        """The size the witness last cosigned for ``origin`` (0: never), from its
        monitoring endpoint; the checkpoint served must carry the witness's valid
        cosignature. Raises :class:`~audit._errors.WitnessError`."""
        status, _, body = self._request(f"/{origin_hash(origin)}/checkpoint")
        if status == 404:
            return 0
        if status != 200:
            raise WitnessError(status, f"witness {self.url}: checkpoint: HTTP {status}")
        try:
            note = parse_note(body)
            checkpoint = Checkpoint.parse_body(note.text)
            if not cosignatures_of(checkpoint, note, [self.key]):
                raise CosignatureError("it does not carry the witness's cosignature")
        except NoteError as exc:
            raise WitnessError(200, f"witness {self.url}: its checkpoint: {exc}") from exc
        return checkpoint.size

    def add_checkpoint(self, note: str, old_size: int, proof: Sequence[bytes]) -> Cosignature:
        """POST add-checkpoint; the witness's verified cosignature of the checkpoint.
        Raises :class:`~audit._errors.WitnessError` with the witness's status (with
        ``size`` on a 409) or :class:`~audit._errors.CosignatureError` when the answer
        holds no valid cosignature by :attr:`key`."""
        lines = "".join(base64.b64encode(node).decode("ascii") + "\n" for node in proof)
        body = f"old {old_size}\n{lines}\n{note}".encode()
        status, kind, answer = self._request("/add-checkpoint", body)
        text = answer.decode("utf-8", "replace")
        if status == 409 and kind == "text/x.tlog.size" and text.strip().isdigit():
            size = int(text.strip())
            raise WitnessError(409, f"witness {self.url} holds size {size}", size=size)
        if status != 200:
            raise WitnessError(status, f"witness {self.url}: HTTP {status}: {text.strip()}")
        checkpoint = Checkpoint.parse_body(parse_note(note).text)
        found = cosignatures_of(checkpoint, parse_note(note + text), [self.key])
        if not found:
            raise CosignatureError(f"witness {self.url} answered without its cosignature")
        return found[0]


def http_request(
    who: str, url: str, body: bytes | None, timeout: float, limit: int = MAX_BODY
) -> tuple[int, str, bytes]:
    """GET ``url`` (or POST ``body``): the status, content type and at most ``limit``
    bytes of the answer, whatever the status. Raises
    :class:`~audit._errors.WitnessError` (``status`` None) naming ``who`` when there is
    no answer."""
    # The scheme is http(s): the callers' URLs are checked when their clients are made.
    request = urllib.request.Request(  # noqa: S310
        url, data=body, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return answer.status, answer.headers.get_content_type(), answer.read(limit)
    except urllib.error.HTTPError as answer:
        with answer:
            return answer.code, answer.headers.get_content_type(), answer.read(limit)
    except (OSError, ValueError) as exc:
        raise WitnessError(None, f"{who}: no answer: {exc}") from exc


def _proof(proofs: ProofSource, old: int, new: int) -> Sequence[bytes]:
    return [] if old in (0, new) else proofs(old, new)


def _cosign_one(client: WitnessClient, note: str, size: int, proofs: ProofSource) -> Cosignature:
    origin = Checkpoint.parse_body(parse_note(note).text).origin
    old = client.latest_size(origin)
    for _ in range(2):  # the size may move between asking and submitting: retry once
        if old > size:
            raise WitnessError(409, f"witness {client.url} holds size {old} > {size}", size=old)
        try:
            return client.add_checkpoint(note, old, _proof(proofs, old, size))
        except WitnessError as exc:
            if exc.status != 409 or exc.size is None:
                raise
            old = exc.size
    raise WitnessError(409, f"witness {client.url}: its size keeps changing", size=old)


def gather_cosignatures(
    note: str,
    log_keys: Sequence[VerifierKey],
    witnesses: Sequence[WitnessClient],
    proofs: ProofSource,
    *,
    quorum: int | None = None,
) -> tuple[str, CosignedCheckpoint]:
    """Submit the log's signed checkpoint ``note`` to each witness and return the note
    with the cosignatures gathered, verified as final (``quorum`` of ``witnesses``, all
    by default; see :func:`~audit._cosignature.open_cosigned_checkpoint`). A witness
    that refuses or cannot be reached is logged and skipped. Raises
    :class:`~audit._errors.CosignatureError` when too few cosigned (a fork refused by a
    witness is then in the log as ``witness.refused`` with status 422)."""
    size = Checkpoint.parse_body(parse_note(note).text).size
    gathered: list[Cosignature] = []
    for client in witnesses:
        try:
            gathered.append(_cosign_one(client, note, size, proofs))
        except (WitnessError, CosignatureError) as exc:
            status = getattr(exc, "status", None)
            log.warning("witness.refused", witness=client.url, status=status, problem=str(exc))
    cosigned = with_cosignatures(note, gathered)
    keys = [client.key for client in witnesses]
    return cosigned, open_cosigned_checkpoint(cosigned, log_keys, keys, quorum=quorum)
