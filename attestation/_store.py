"""Where pending challenges and TPM clocks live: two tables in the audit database.

A :class:`~attestation._verifier.PendingChallenge` holds the nonce and the activation
secret the device must answer with. It is stored by :meth:`ChallengeStore.put`. An Attest
reads it, with the device's last TPM clock, by :meth:`ChallengeStore.read` (nothing
written), has the pure verifier judge the answer, then writes what the verifier says to
persist (:class:`~attestation._verifier.ToPersist`) by :meth:`ChallengeStore.write`: the
challenge marked used, by a conditional update that only one writer can win, and the
clock moved forward, in one transaction. :meth:`ChallengeStore.consume` reads and marks a
challenge in one transaction. The mark is in the database, not in memory, so an answer
replayed after a restart or to another replica sharing the database is refused. Old
challenges (used or expired more than :data:`PRUNE_AFTER` ago) are deleted a bounded
batch at a time by each :meth:`ChallengeStore.put` given ``now``, and all at once by
:meth:`ChallengeStore.prune` (the attestation service calls it when it starts).

The (resetCount, clock) of each AK's last accepted quote is kept in the same way, and
:meth:`ChallengeStore.record_clock` refuses to move it backwards.

Tables (created when missing, next to the audit tables; of ``audit`` this module uses
only :func:`audit.sqlite.sqlite_engine`, to open the shared SQLite file the same way):

- ``attestation_challenge``: one row per challenge, ``consumed_at`` NULL until used;
- ``attestation_clock``: one row per AK name.

Times are stored as integer microseconds since the Unix epoch, UTC (``BIGINT``): they
compare as numbers on SQLite and PostgreSQL alike, and round-trip an aware datetime
exactly. Every datetime passed in must be aware.

Errors: :class:`EvidenceError` for an unknown, used or expired challenge and for a clock
going backwards; :class:`StoreUnavailable` when the database cannot be opened, read or
written. sqlalchemy's exceptions never leave this module.

    AttestationError
    └── StoreUnavailable       the challenge store's database failed (defined here)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Field, SQLModel

from attestation._errors import EvidenceError, StoreUnavailable
from attestation._verifier import PendingChallenge, ToPersist
from audit.sqlite import sqlite_engine

__all__ = ["ChallengeStore", "StoreUnavailable", "Stored"]

PRUNE_AFTER = timedelta(hours=1)
"""How long a used or expired challenge is kept before :meth:`ChallengeStore.prune`."""
PRUNE_BATCH = 64
"""The most old challenges one :meth:`ChallengeStore.put` deletes: more than it adds, so
the table stays bounded by the challenges of the last :data:`PRUNE_AFTER`, and every
insert does bounded work."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_INT64 = 2**63
_CREATE_LOCK = 0x646F636B6574_01  # distinct from the audit store's advisory lock


class ChallengeRow(SQLModel, table=True):
    """A pending challenge; ``consumed_at`` is NULL until :meth:`ChallengeStore.consume`."""

    __tablename__ = "attestation_challenge"

    challenge_id: str = Field(sa_column=sa.Column(sa.String(128), primary_key=True))
    secret: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    nonce: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    ak_public: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    ek_hash: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    expires_at: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False, index=True))
    tpm_manufacturer: str = Field(
        default="", sa_column=sa.Column(sa.String(64), nullable=False, server_default="")
    )
    consumed_at: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger))


class ClockRow(SQLModel, table=True):
    """The (resetCount, clock) of an AK's last accepted quote."""

    __tablename__ = "attestation_clock"

    ak_name: bytes = Field(sa_column=sa.Column(sa.LargeBinary, primary_key=True))
    reset_count: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    clock: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


_CHALLENGE = ChallengeRow.__table__  # type: ignore[attr-defined]
_CLOCK = ClockRow.__table__  # type: ignore[attr-defined]
_TABLES = [_CHALLENGE, _CLOCK]


def _to_micros(moment: datetime, what: str) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime (UTC)")
    return (moment - _EPOCH) // _MICROSECOND


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True, slots=True)
class Stored:
    """What an Attest reads before the verifier: the pending challenge (unused when read)
    and the last TPM clock recorded for its device (None before its first attestation)."""

    pending: PendingChallenge
    last_clock: tuple[int, int] | None


def _reason(exc: BaseException) -> str:
    original = getattr(exc, "orig", None)
    return str(original or exc).splitlines()[0]


class ChallengeStore:
    """Pending challenges and AK clocks in the database at ``url`` (SQLite or PostgreSQL).

    Thread-safe; share one per process. Any number of processes may use one database.
    Raises :class:`StoreUnavailable` when the database cannot be opened or the tables
    cannot be created.
    """

    def __init__(self, url: str) -> None:
        try:
            parsed = sa.make_url(url)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"not a database URL: {url!r}") from exc
        self.url = parsed.render_as_string(hide_password=True)
        self._sqlite = parsed.get_backend_name() == "sqlite"
        try:
            if self._sqlite:
                database = parsed.database
                if database and database != ":memory:":
                    Path(database).parent.mkdir(parents=True, exist_ok=True)
                self._engine = sqlite_engine(parsed)
            else:
                self._engine = sa.create_engine(parsed, pool_pre_ping=True)
            with self._engine.begin() as conn:
                if not self._sqlite:
                    # Replicas starting at once would race to create the same tables.
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_CREATE_LOCK)))
                SQLModel.metadata.create_all(conn, tables=_TABLES)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(
                f"cannot open the challenge store {self.url}: {_reason(exc)}"
            ) from exc
        except OSError as exc:
            raise StoreUnavailable(f"cannot open the challenge store {self.url}: {exc}") from exc

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    # -- challenges -----------------------------------------------------------------

    def put(self, pending: PendingChallenge, *, now: datetime | None = None) -> None:
        """Store a new challenge; given ``now``, first delete up to :data:`PRUNE_BATCH`
        challenges used or expired more than :data:`PRUNE_AFTER` before it, in the same
        transaction. Raises :class:`StoreUnavailable` (also when its id is already
        stored) and ValueError when ``expires_at`` or ``now`` is naive."""
        cutoff = None if now is None else _to_micros(now - PRUNE_AFTER, "now")
        row = {
            "challenge_id": pending.challenge_id,
            "secret": pending.secret,
            "nonce": pending.nonce,
            "ak_public": pending.ak_public,
            "ek_hash": pending.ek_hash,
            "expires_at": _to_micros(pending.expires_at, "expires_at"),
            "tpm_manufacturer": pending.tpm_manufacturer,
            "consumed_at": None,
        }
        try:
            with self._engine.begin() as conn:
                if cutoff is not None:
                    old = (
                        sa.select(_CHALLENGE.c.challenge_id)
                        .where(self._old(cutoff))
                        .limit(PRUNE_BATCH)
                        .scalar_subquery()
                    )
                    conn.execute(sa.delete(_CHALLENGE).where(_CHALLENGE.c.challenge_id.in_(old)))
                conn.execute(sa.insert(_CHALLENGE).values(**row))
        except IntegrityError as exc:
            raise StoreUnavailable(f"challenge {pending.challenge_id!r} is already stored") from exc
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot store a challenge: {_reason(exc)}") from exc

    def consume(self, challenge_id: str, *, now: datetime) -> PendingChallenge:
        """Take a challenge back and mark it used, atomically: of any number of callers
        in any number of processes, one gets it.

        Raises :class:`EvidenceError` when the challenge is unknown, already used (a
        replay) or expired at ``now`` (it is marked used all the same), and
        :class:`StoreUnavailable` when the database fails.
        """
        stamp = _to_micros(now, "now")
        try:
            with self._engine.begin() as conn:
                row = self._unused(conn, challenge_id)
                self._mark_used(conn, challenge_id, stamp)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot consume a challenge: {_reason(exc)}") from exc
        # Raised after the commit, so an expired challenge stays used.
        if stamp > row.expires_at:
            raise EvidenceError("challenge expired")
        return _pending(row)

    def read(self, challenge_id: str) -> Stored:
        """The challenge and its device's last TPM clock, in one transaction; nothing is
        written (:meth:`write` marks it used). Expiry is the verifier's to judge.

        Raises :class:`EvidenceError` when the challenge is unknown or already used (a
        replay), :class:`StoreUnavailable` when the database fails.
        """
        try:
            with self._engine.begin() as conn:
                row = self._unused(conn, challenge_id)
                clock = self._clock(conn, bytes(row.ek_hash))
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot read a challenge: {_reason(exc)}") from exc
        return Stored(_pending(row), clock)

    def write(self, persist: ToPersist) -> None:
        """Persist what the verifier judged, in one transaction: the challenge used (of
        any number of writers in any number of processes, one succeeds), then, when
        ``persist`` carries one, the device's TPM clock moved forward to it.

        Raises :class:`EvidenceError` when the challenge was used meanwhile (a replay:
        nothing is written), or when the recorded clock is later than this one (the
        challenge stays used) or it is out of range; :class:`StoreUnavailable` when the
        database fails (nothing is written).
        """
        stamp = _to_micros(persist.used_at, "used_at")
        if persist.tpm_clock is not None:
            _check_clock_range(*persist.tpm_clock)
        try:
            with self._engine.begin() as conn:
                self._mark_used(conn, persist.challenge_id, stamp)
                refused = None
                if persist.tpm_clock is not None:
                    refused = self._forward(conn, persist.ek_hash, *persist.tpm_clock)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot write an attestation: {_reason(exc)}") from exc
        if refused is not None:  # committed: the challenge stays used
            raise refused

    @staticmethod
    def _unused(conn: sa.Connection, challenge_id: str) -> Any:
        """The challenge's row; EvidenceError when there is none or it was used."""
        row = conn.execute(
            sa.select(_CHALLENGE).where(_CHALLENGE.c.challenge_id == challenge_id)
        ).first()
        if row is None:
            raise EvidenceError("unknown challenge")
        if row.consumed_at is not None:
            raise EvidenceError("challenge already used (replay)")
        return row

    @staticmethod
    def _mark_used(conn: sa.Connection, challenge_id: str, stamp: int) -> None:
        """Mark the challenge used, or raise EvidenceError (replay) when it already is."""
        # A read does not lock the row on PostgreSQL: this conditional UPDATE is what
        # decides, and only one transaction's can match.
        marked = conn.execute(
            sa.update(_CHALLENGE)
            .where(
                _CHALLENGE.c.challenge_id == challenge_id,
                _CHALLENGE.c.consumed_at.is_(None),
            )
            .values(consumed_at=stamp)
        ).rowcount
        if marked != 1:
            raise EvidenceError("challenge already used (replay)")

    @staticmethod
    def _old(cutoff: int) -> sa.ColumnElement[bool]:
        """Used or expired before ``cutoff`` (microseconds)."""
        return sa.or_(_CHALLENGE.c.expires_at < cutoff, _CHALLENGE.c.consumed_at < cutoff)

    def prune(self, now: datetime) -> int:
        """Delete challenges used or expired more than :data:`PRUNE_AFTER` before ``now``;
        return how many. Raises :class:`StoreUnavailable`."""
        cutoff = _to_micros(now - PRUNE_AFTER, "now")
        try:
            with self._engine.begin() as conn:
                return int(conn.execute(sa.delete(_CHALLENGE).where(self._old(cutoff))).rowcount)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot prune challenges: {_reason(exc)}") from exc

    # -- clocks -----------------------------------------------------------------------

    def last_clock(self, ak_name: bytes) -> tuple[int, int] | None:
        """The (resetCount, clock) last recorded for ``ak_name``, or None.
        Raises :class:`StoreUnavailable`."""
        try:
            with self._engine.begin() as conn:
                return self._clock(conn, ak_name)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot read a TPM clock: {_reason(exc)}") from exc

    def record_clock(self, ak_name: bytes, reset_count: int, clock: int) -> None:
        """Record the (resetCount, clock) of an accepted quote by ``ak_name``.

        Raises :class:`EvidenceError` when it is before the recorded one (an old quote, or
        a TPM whose clock was rolled back) or out of range, :class:`StoreUnavailable` when
        the database fails. Equal values are accepted.
        """
        _check_clock_range(reset_count, clock)
        try:
            with self._engine.begin() as conn:
                refused = self._forward(conn, ak_name, reset_count, clock)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot record a TPM clock: {_reason(exc)}") from exc
        if refused is not None:
            raise refused

    @staticmethod
    def _clock(conn: sa.Connection, ak_name: bytes) -> tuple[int, int] | None:
        row = conn.execute(
            sa.select(_CLOCK.c.reset_count, _CLOCK.c.clock).where(_CLOCK.c.ak_name == ak_name)
        ).first()
        return None if row is None else (int(row.reset_count), int(row.clock))

    def _forward(
        self, conn: sa.Connection, ak_name: bytes, reset_count: int, clock: int
    ) -> EvidenceError | None:
        """Move the recorded clock forward (or to equal values); the refusal when it is
        later than this one (then nothing changes)."""
        insert: Any = (sqlite if self._sqlite else postgresql).insert(_CLOCK)
        insert = insert.values(ak_name=ak_name, reset_count=reset_count, clock=clock)
        new = insert.excluded
        # The upsert only moves forward; a refused one changes (and returns) no row.
        forward = sa.or_(
            _CLOCK.c.reset_count < new.reset_count,
            sa.and_(_CLOCK.c.reset_count == new.reset_count, _CLOCK.c.clock <= new.clock),
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[_CLOCK.c.ak_name],
            set_={"reset_count": new.reset_count, "clock": new.clock},
            where=forward,
        ).returning(_CLOCK.c.ak_name)  # psycopg reports no rowcount for an upsert
        if conn.execute(upsert).first() is not None:
            return None
        recorded = self._clock(conn, ak_name)
        return EvidenceError(f"the TPM clock went backwards: ({reset_count}, {clock}) < {recorded}")


def _check_clock_range(reset_count: int, clock: int) -> None:
    for what, value in (("resetCount", reset_count), ("clock", clock)):
        if not 0 <= value < _INT64:
            raise EvidenceError(f"the TPM {what} is out of range ({value})")


def _pending(row: Any) -> PendingChallenge:
    return PendingChallenge(
        challenge_id=row.challenge_id,
        secret=bytes(row.secret),
        nonce=bytes(row.nonce),
        ak_public=bytes(row.ak_public),
        ek_hash=bytes(row.ek_hash),
        expires_at=_from_micros(row.expires_at),
        tpm_manufacturer=row.tpm_manufacturer,
    )
