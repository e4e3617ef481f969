"""Anti-rollback: the highest bundle revision a replica accepted, and operators' pins.

A bundle names itself and its revision in ``bundle.toml`` (``[bundle] name``,
``revision``); both are inside its version hash, so a signature covers them. A replica
keeps, in ``<data_dir>/bundle-state.json`` (written atomically: a temporary file
renamed over it, under an exclusive lock shared by the server's worker processes),
the highest revision it accepted per bundle name with that revision's version, and the
name of the bundle in force. It refuses, at start and on every reload (TUF's rules):

- a revision lower than the highest accepted of that name (a rollback);
- the accepted revision with other content (same version number, another hash);
- a bundle of another name than the one in force;
- a bundle without a revision once one with a revision was accepted, or at all when a
  bundle public key is configured (an older signed bundle from before revisions).

Only an explicit operator act lets such a bundle in: ``docket bundle pin REVISION``
records a pin in the same file; the next bundle of that name and exactly that revision
is accepted once, and its acceptance is written to the audit log.

Without a bundle public key nothing proves who wrote a bundle, so the revision only
stops a mistaken or stale copy, not someone who can write the bundle directory (they can
write a higher revision too).

:class:`RollbackError` (a :class:`~engine.BundleError`) is what every refusal raises.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from audit import Entry
from engine._core.bundle import MAX_REVISION, PolicyBundle
from engine._errors import BundleError, RollbackError

STATE_FILE = "bundle-state.json"
MAX_AUDITED_PROBLEMS = 20
MAX_PROBLEM_CHARS = 500


class Accepted(BaseModel):
    """The highest revision accepted of one bundle name, and its version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    revision: StrictInt = Field(ge=1, le=MAX_REVISION)
    version: StrictStr
    accepted_at: datetime


class Pin(BaseModel):
    """An operator's permission to accept one revision of one bundle, once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr
    revision: StrictInt = Field(ge=1, le=MAX_REVISION)
    pinned_at: datetime


class BundleState(BaseModel):
    """What ``bundle-state.json`` holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: StrictInt = 1
    current: StrictStr | None = None
    bundles: dict[StrictStr, Accepted] = {}
    pin: Pin | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """Why a bundle was accepted: ``pin`` is the operator's pin it used (else None);
    ``highest`` the highest revision accepted of its name before it (None if none)."""

    pin: Pin | None
    highest: int | None


class RevisionGuard:
    """Reads and updates one replica's ``bundle-state.json``.

    ``signed`` says a bundle public key is configured: then every bundle must carry a
    name and revision. Every method reads the file afresh, so a pin written by
    ``docket bundle pin`` (another process) is seen at the next load.
    """

    def __init__(self, data_dir: Path, *, signed: bool) -> None:
        self.path = data_dir / STATE_FILE
        self.signed = signed

    def read(self) -> BundleState:
        """The stored state (empty when there is no file). Raises :class:`BundleError`."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return BundleState()
        except OSError as exc:
            raise BundleError([f"{self.path}: cannot read: {exc.strerror}"]) from exc
        try:
            return BundleState.model_validate_json(text)
        except ValidationError as exc:
            # A damaged state must not reopen the door to rollbacks: refuse, say where.
            raise BundleError(
                [f"{self.path}: not a bundle state file ({exc.error_count()} problems)"]
            ) from exc

    def stamp(self) -> tuple[int, int] | None:
        """(size, mtime) of the state file, so that a watcher notices a new pin."""
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_size, stat.st_mtime_ns

    def check(self, bundle: PolicyBundle) -> Admission:
        """Whether ``bundle`` may come into force, without recording anything.
        Raises :class:`RollbackError` saying why not."""
        return _judge(self.read(), bundle, signed=self.signed)

    def admit(self, bundle: PolicyBundle, now: datetime) -> Admission:
        """Check ``bundle`` and record it as accepted (using up a pin it matched).
        Raises :class:`RollbackError`, or :class:`BundleError` when the state cannot be
        written (the bundle is then not accepted: a revision that could not be recorded
        could be rolled back past)."""
        with self._locked():
            state = self.read()
            admission = _judge(state, bundle, signed=self.signed)
            if bundle.name is None or bundle.revision is None:
                return admission
            accepted = state.bundles.get(bundle.name)
            if accepted is None or accepted.revision != bundle.revision or admission.pin:
                bundles = dict(state.bundles)
                bundles[bundle.name] = Accepted(
                    revision=bundle.revision, version=bundle.version, accepted_at=now
                )
                pin = None if admission.pin is not None else state.pin
                self._write(BundleState(current=bundle.name, bundles=bundles, pin=pin))
            elif state.current != bundle.name:
                self._write(state.model_copy(update={"current": bundle.name}))
            return admission

    def pin(self, revision: int, now: datetime, *, name: str | None = None) -> Pin:
        """Let the next bundle of ``name`` (default: the one in force) at exactly
        ``revision`` in, once. Raises :class:`BundleError` (no bundle to name)."""
        with self._locked():
            state = self.read()
            name = name or state.current
            if name is None:
                raise BundleError(
                    [f"{self.path}: no bundle accepted yet; name the bundle to pin (--name)"]
                )
            pin = Pin(name=name, revision=revision, pinned_at=now)
            self._write(state.model_copy(update={"pin": pin}))
            return pin

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = (self.path.parent / (STATE_FILE + ".lock")).open("a")
        except OSError as exc:
            raise BundleError([f"{self.path}: cannot lock: {exc.strerror}"]) from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _write(self, state: BundleState) -> None:
        try:
            fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".bundle-state.")
            with os.fdopen(fd, "w") as out:
                out.write(state.model_dump_json(indent=2) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(temporary)
            raise BundleError(
                [f"{self.path}: cannot record the accepted revision: {exc.strerror}"]
            ) from exc


def _judge(state: BundleState, bundle: PolicyBundle, *, signed: bool) -> Admission:
    """TUF's rules (see the module docstring) for ``bundle`` against ``state``."""
    name, revision = bundle.name, bundle.revision
    if name is None or revision is None:
        if signed:
            raise RollbackError(
                [
                    "bundle.toml: no [bundle] name and revision; a signed bundle must carry "
                    "them (older signed bundles are refused: anti-rollback)"
                ]
            )
        if state.current is not None:
            current = state.bundles.get(state.current)
            raise RollbackError(
                [
                    "bundle.toml: no [bundle] name and revision, but revision "
                    f"{current.revision if current else '?'} of bundle {state.current!r} "
                    "was accepted (anti-rollback)"
                ]
            )
        return Admission(pin=None, highest=None)
    accepted = state.bundles.get(name)
    highest = accepted.revision if accepted is not None else None
    pin = state.pin
    if pin is not None and pin.name == name and pin.revision == revision:
        return Admission(pin=pin, highest=highest)
    hint = f"; an operator may let it in with: docket bundle pin {revision} --name {name}"
    if state.current is not None and state.current != name:
        raise RollbackError(
            [f"bundle {name!r} is not {state.current!r}, the bundle in force{hint}"]
        )
    if accepted is not None:
        if revision < accepted.revision:
            raise RollbackError(
                [
                    f"revision {revision} of bundle {name!r} is older than revision "
                    f"{accepted.revision} already accepted (rollback refused){hint}"
                ]
            )
        if revision == accepted.revision and bundle.version != accepted.version:
            raise RollbackError(
                [
                    f"revision {revision} of bundle {name!r} differs from the accepted "
                    f"revision {revision} ({bundle.version[:19]} is not "
                    f"{accepted.version[:19]}); a new release needs a higher revision"
                ]
            )
    return Admission(pin=None, highest=highest)


def _capped(problems: list[str]) -> list[str]:
    # Problems quote the refused files, which whoever wrote the bundle chose.
    kept = [p[:MAX_PROBLEM_CHARS] for p in problems[:MAX_AUDITED_PROBLEMS]]
    if len(problems) > MAX_AUDITED_PROBLEMS:
        kept.append(f"… and {len(problems) - MAX_AUDITED_PROBLEMS} more")
    return kept


def refusal_entry(
    source: str, problems: list[str], *, active_version: str | None, now: datetime
) -> Entry:
    """The audit entry of a bundle refused on reload (the one in force stays)."""
    detail: dict[str, Any] = {"problems": _capped(problems)}
    return Entry(
        kind="bundle",
        time=now,
        action="refuse",
        resource=source,
        decision="deny",
        bundle_version=active_version,
        detail=detail,
    )


def pin_entry(bundle: PolicyBundle, admission: Admission, *, now: datetime) -> Entry:
    """The audit entry of a bundle let in by an operator's pin."""
    assert admission.pin is not None
    return Entry(
        kind="bundle",
        time=now,
        action="pin",
        resource=bundle.source,
        decision="allow",
        bundle_version=bundle.version,
        detail={
            "name": admission.pin.name,
            "revision": admission.pin.revision,
            "highest_revision": admission.highest,
            "pinned_at": admission.pin.pinned_at.isoformat(),
        },
    )
