"""What a witness remembers, in one SQLite file (opened as :mod:`audit.sqlite` opens
every Docket database: WAL, ``synchronous = FULL``, ``BEGIN IMMEDIATE``).

``witness_log``: per origin, the log's verifier keys and the latest checkpoint the
witness cosigned (size, root, and the note with the log's signatures and the witness's
cosignatures, served to monitors). ``witness_fork``: each fork seen, with both signed
checkpoints as evidence.

:meth:`WitnessStore.advance` is the check-and-set the specification asks for: the state
is read, judged and replaced inside one ``BEGIN IMMEDIATE`` transaction, so two
submissions for one origin from the same old size are serialized and the second sees
the first's new size (a 409), in one process or several.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from audit._errors import ForkDetected, KeyFormatError, StoreError, WitnessError
from audit._note import VerifierKey
from audit.sqlite import sqlite_engine

__all__ = ["Fork", "LogState", "TableStore", "WitnessStore"]

State = TypeVar("State")
Decided = TypeVar("Decided")

_META = sa.MetaData()
_LOGS = sa.Table(
    "witness_log",
    _META,
    sa.Column("origin", sa.Text, primary_key=True),
    sa.Column("keys", sa.Text, nullable=False),  # verifier keys, one per line
    sa.Column("size", sa.BigInteger, nullable=False, default=0),
    sa.Column("root", sa.LargeBinary, nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("updated", sa.Text, nullable=True),
)
_FORKS = sa.Table(
    "witness_fork",
    _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("held", sa.Text, nullable=False),
    sa.Column("offered", sa.Text, nullable=False),
    sa.Column("seen", sa.Text, nullable=False),
)


@dataclass(frozen=True)
class LogState:
    """A log the witness knows: its origin and verifier keys, and the latest
    checkpoint it cosigned (``size`` 0, ``root`` and ``note`` None: never)."""

    origin: str
    keys: tuple[VerifierKey, ...]
    size: int = 0
    root: bytes | None = None
    note: str | None = None


@dataclass(frozen=True)
class Fork:
    """A fork seen: two checkpoints of ``size`` with different roots, both signed by the
    log (``held``: the one cosigned before; ``offered``: the new one), at ``seen``."""

    origin: str
    size: int
    held: str
    offered: str
    seen: datetime


@dataclass(frozen=True)
class Advance:
    """What :meth:`WitnessStore.advance`'s judge decided: the new state to keep."""

    size: int
    root: bytes
    note: str


class TableStore:
    """A few tables (``metadata``, made when missing) behind one engine; every database
    error becomes a :class:`~audit._errors.StoreError` naming ``where``."""

    def __init__(self, engine: sa.Engine, metadata: sa.MetaData, where: str) -> None:
        self._engine = engine
        self._where = where
        try:
            with self._engine.begin() as connection:
                metadata.create_all(connection)
        except SQLAlchemyError as exc:
            raise StoreError(f"{where}: cannot open the database: {exc}") from exc

    def close(self) -> None:
        """Release the database's connections."""
        self._engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        try:
            with self._engine.begin() as connection:
                yield connection
        except SQLAlchemyError as exc:
            raise StoreError(f"{self._where}: the database failed: {exc}") from exc

    def check_and_set(
        self,
        read: Callable[[sa.Connection], State | None],
        unknown: str,
        judge: Callable[[State], Decided],
        keep: Callable[[sa.Connection, State, Decided], None],
        record: Callable[[sa.Connection, State, ForkDetected], None],
    ) -> Decided:
        """In one transaction: ``read`` the state (locking it; None: a
        :class:`~audit._errors.WitnessError` 404 saying ``unknown``), ``judge`` it,
        ``keep`` what was decided. A :class:`~audit._errors.ForkDetected` from ``judge``
        is ``record``-ed and committed before it is raised again; any other error
        changes nothing."""
        fork: ForkDetected | None = None
        with self._transaction() as connection:
            state = read(connection)
            if state is None:
                raise WitnessError(404, unknown)
            try:
                decided = judge(state)
            except ForkDetected as exc:
                fork = exc
                record(connection, state, exc)
            else:
                keep(connection, state, decided)
        if fork is not None:
            raise fork
        return decided


class WitnessStore(TableStore):
    """The witness's state in the SQLite file ``path`` (made, with its tables, when
    missing). Raises :class:`~audit._errors.StoreError` when it cannot be opened."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open the witness database: {exc}") from exc
        url = sa.URL.create("sqlite", database=str(self.path))
        super().__init__(sqlite_engine(url), _META, f"{self.path} (the witness database)")

    def add_log(self, origin: str, keys: Sequence[VerifierKey]) -> LogState:
        """Know the log ``origin`` by ``keys`` (replacing the keys of a known log, keeping
        what was cosigned). Returns its state."""
        if not keys:
            raise KeyFormatError(f"log {origin!r} needs at least one verifier key")
        text = "\n".join(str(key) for key in keys)
        with self._transaction() as connection:
            found = connection.execute(
                sa.select(_LOGS.c.origin).where(_LOGS.c.origin == origin)
            ).first()
            if found is None:
                connection.execute(_LOGS.insert().values(origin=origin, keys=text, size=0))
            else:
                connection.execute(_LOGS.update().where(_LOGS.c.origin == origin).values(keys=text))
            state = self._read(connection, origin)
        assert state is not None
        return state

    def log(self, origin: str) -> LogState | None:
        """The state of ``origin``, or None when the witness does not know it."""
        with self._transaction() as connection:
            return self._read(connection, origin)

    def logs(self) -> list[LogState]:
        """Every known log, by origin."""
        with self._transaction() as connection:
            origins = connection.execute(sa.select(_LOGS.c.origin).order_by(_LOGS.c.origin))
            states = [self._read(connection, origin) for (origin,) in origins.all()]
        return [state for state in states if state is not None]

    @staticmethod
    def _read(connection: sa.Connection, origin: str) -> LogState | None:
        row = connection.execute(sa.select(_LOGS).where(_LOGS.c.origin == origin)).first()
        if row is None:
            return None
        keys = tuple(VerifierKey.parse(line) for line in row.keys.splitlines())
        return LogState(row.origin, keys, row.size, row.root, row.note)

    def advance(self, origin: str, judge: Callable[[LogState], Advance]) -> Advance:
        """Check-and-set, atomically: read ``origin``'s state, let ``judge`` decide the
        new one (or raise), and keep it. A :class:`~audit._errors.ForkDetected` from
        ``judge`` is recorded (committed) before it is raised again; any other error
        changes nothing. Raises :class:`~audit._errors.WitnessError` (404) for an
        unknown origin."""

        def record(connection: sa.Connection, state: LogState, fork: ForkDetected) -> None:
            connection.execute(
                _FORKS.insert().values(
                    origin=origin,
                    size=state.size,
                    held=fork.held,
                    offered=fork.offered,
                    seen=_now(),
                )
            )

        def keep(connection: sa.Connection, state: LogState, decided: Advance) -> None:
            connection.execute(
                _LOGS.update()
                .where(_LOGS.c.origin == origin)
                .values(size=decided.size, root=decided.root, note=decided.note, updated=_now())
            )

        return self.check_and_set(
            lambda connection: self._read(connection, origin),
            f"unknown log origin {origin!r}",
            judge,
            keep,
            record,
        )

    def forks(self, origin: str | None = None) -> list[Fork]:
        """The forks recorded (of ``origin``, or of every log), oldest first."""
        query = sa.select(_FORKS).order_by(_FORKS.c.id)
        if origin is not None:
            query = query.where(_FORKS.c.origin == origin)
        with self._transaction() as connection:
            rows = connection.execute(query).all()
        return [
            Fork(row.origin, row.size, row.held, row.offered, datetime.fromisoformat(row.seen))
            for row in rows
        ]


def _now() -> str:
    return datetime.now(UTC).isoformat()
