"""``docket audit …``: what an auditor runs, with nothing but a database URL or an
export file and the log's verifier key.

Exit codes: 0 success; 1 a check failed (the log, a receipt or a consistency proof
does not verify; ``verify --key`` found no checkpoint signed by that key covering the
log; a ``--since``/``--until`` period holds no entry); 2 usage or input error (a
reversed period too). Errors are one line on stderr. Periods are chosen by the time
inside each entry's hashed payload, never by the unhashed columns.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import getpass
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable

import click

from audit._errors import (
    FormatError,
    KeyFormatError,
    NoteError,
    ProofError,
    StoreError,
    TamperDetected,
)

if TYPE_CHECKING:  # the commands import what they run: `--help` loads none of it
    from audit._auditor import Period, Restore, Verdict, VerifiedReceipt
    from audit._collector_audit import SiteCoverage
    from audit._collector_store import CollectorStore
    from audit._entry import Entry
    from audit._log import AuditLog
    from audit._note import Checkpoint, VerifierKey
    from audit._report import FleetReport, Gap, Report, ReportStatus
    from audit._store import Store


class InputError(click.ClickException):
    """Bad input from the user: one line on stderr, exit code 2."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"docket: {self.format_message()}", err=True)


class CheckFailed(click.ClickException):
    """A check ran and failed: exit code 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"docket: {self.format_message()}", err=True)


def _failure_json(exc: click.ClickException, verdict: str, **fields: Any) -> None:
    """Print the ``--json`` object of a command that failed: ``verdict`` false for a
    failed check (exit 1), null for a usage or input error (exit 2), the exit code,
    the one-line problem, then ``fields``."""
    failed: dict[str, Any] = {
        verdict: False if isinstance(exc, CheckFailed) else None,
        "exit_code": exc.exit_code,
        "problem": exc.format_message(),
        **fields,
    }
    click.echo(json.dumps(failed, indent=2))


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a result object (on failure too)."
)


@runtime_checkable
class CLISettings(Protocol):
    """What the command groups below ``engine`` (``docket audit``, ``docket ca``) read
    of the settings ``docket`` builds once, at its root (defaults, ``docket.toml``,
    ``DOCKET_*``), and passes down on the click context. engine's ``Settings`` is one;
    ``audit`` and ``attestation`` never import engine, so they name here what they read.
    """

    @property
    def data_dir(self) -> Path: ...

    @property
    def database_url(self) -> str: ...

    @property
    def audit_keys_dir(self) -> Path: ...

    @property
    def ca_dir(self) -> Path: ...

    @property
    def trust_domain(self) -> str: ...

    @property
    def retention_days(self) -> int | None: ...

    def with_flags(self, **flags: object) -> CLISettings:
        """The settings with a command's flags on top (``None``: not given)."""
        ...


def configured(**flags: object) -> CLISettings:
    """The settings ``docket`` was started with, the running command's flags on top.
    Raises :class:`InputError` when the group runs outside ``docket``."""
    settings = click.get_current_context().find_root().obj
    if not isinstance(settings, CLISettings):
        raise InputError("the settings are read by `docket`: run this as `docket …`")
    return settings.with_flags(**flags)


def _data_dir(data_dir: Path | None) -> Path:
    return configured(data_dir=data_dir).data_dir


def database_url(db: str | None, data_dir: Path | None) -> str:
    """``--db``, else the configured URL, else SQLite under the data directory."""
    return configured(db_url=db, data_dir=data_dir).database_url


def keys_dir(keys: Path | None, data_dir: Path | None) -> Path:
    """``--keys``, else the configured directory, else ``<data-dir>/audit-keys``."""
    return configured(audit_keys=keys, data_dir=data_dir).audit_keys_dir


db_option = click.option(
    "--db",
    metavar="URL",
    help="Database URL, e.g. postgresql+psycopg://… [env DOCKET_DB_URL, else "
    "sqlite:///<data-dir>/docket.db].",
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Data directory [env DOCKET_DATA_DIR, else ./docket-data].",
)
keys_option = click.option(
    "--keys",
    "keys_path",
    type=click.Path(path_type=Path),
    help="Checkpoint signing-key directory [env DOCKET_AUDIT_KEYS, else <data-dir>/audit-keys].",
)
key_option = click.option(
    "--key",
    "key_texts",
    multiple=True,
    metavar="KEY",
    help="Verifier key NAME+ID+BASE64, or a file holding one per line (repeatable).",
)


def _export_and_checkpoint_options(
    verb: str,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``--export`` (``verb`` an export file instead of the database) and ``--checkpoint``."""
    export = click.option(
        "--export",
        type=click.Path(path_type=Path, exists=True, dir_okay=False),
        help=f"{verb} an export file (from `docket audit export`) instead of a database.",
    )
    kept = click.option(
        "--checkpoint",
        "checkpoint_files",
        multiple=True,
        type=click.Path(path_type=Path),
        help="A signed checkpoint you kept; the log must still contain it (repeatable).",
    )
    return lambda command: export(kept(command))


redaction_key_option = click.option(
    "--redaction-key",
    "redaction_texts",
    multiple=True,
    metavar="KEY",
    help="Redaction verifier key (from `docket audit redaction-key`), or a file holding "
    "one per line (repeatable): an erased payload verifies only with an order it signed.",
)


def _verifier_keys(texts: Sequence[str], flag: str = "--key") -> list[VerifierKey]:
    from audit._note import VerifierKey

    keys: list[VerifierKey] = []
    for text in texts:
        path = Path(text)
        lines = [text]
        if "+" not in text or path.is_file():
            try:
                lines = path.read_text().split()
            except OSError as exc:
                raise InputError(f"{flag} {text}: not a key, and cannot read it as a file") from exc
        for line in lines:
            try:
                keys.append(VerifierKey.parse(line.strip()))
            except KeyFormatError as exc:
                raise InputError(f"{flag} {text}: {exc}") from exc
    return keys


def _open_store(db: str | None, data_dir: Path | None) -> Store:
    from audit._store import Store

    try:
        return Store(database_url(db, data_dir), create=False)
    except StoreError as exc:
        raise InputError(str(exc)) from exc


def _read_note(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read checkpoint {path}: {exc}") from exc


def _parse_time(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"{flag} {value!r}: not an ISO 8601 date or time") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_period(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """``--since``/``--until`` as aware datetimes; a reversed or zero-length period is a
    usage error (it could only ever hold nothing, and must not read as all clear)."""
    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    if start is not None and end is not None and start >= end:
        raise InputError(f"--since {since} must be before --until {until} (the end is exclusive)")
    return start, end


def _select_period(
    store: Store, since: datetime | None, until: datetime | None, restore: Restore | None = None
) -> Period:
    """:func:`select_period`, its tampering a failed check (exit 1) naming the entry and
    the column, a database that cannot be read an input error."""
    from audit._auditor import select_period

    try:
        return select_period(store, since, until, restore)
    except TamperDetected as exc:
        raise CheckFailed(f"audit log NOT intact: {exc}") from exc
    except StoreError as exc:
        raise InputError(str(exc)) from exc


def _nothing_in(
    what: str, since: datetime | None, until: datetime | None, size: int
) -> CheckFailed:
    """The failure of a period that holds no entry: said plainly, never a green result."""
    start = since.isoformat() if since else "the start of the log"
    end = until.isoformat() if until else "the end of the log"
    return CheckFailed(
        f"nothing to {what}: no entry in [{start}, {end}) by the entries' hashed times "
        f"(the log holds {size:,} entries); nothing was checked for that period"
    )


@contextmanager
def progress_bar(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long runs (only when stderr is a terminal)."""
    if not sys.stderr.isatty() or (total is not None and total < 50_000):
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


@click.group(name="audit")
def audit() -> None:
    """Verify the audit log, prove entries, export it and report on it."""


# -- verify ---------------------------------------------------------------------------


def _run_verify(
    db: str | None,
    data_dir: Path | None,
    export: Path | None,
    checkpoint_files: Sequence[Path],
    key_texts: Sequence[str],
    redaction_texts: Sequence[str] = (),
    archives: Sequence[str] = (),
    unarchived_ok: bool = False,
) -> Verdict:
    """The verdict of ``docket audit verify``; with ``unarchived_ok``, payloads pruned
    after archival verify without an archive holding them (in ``verdict.log.pruned``:
    the report counts those no archive holds as not covered)."""
    from audit._auditor import verify_export

    extra = [(str(path), _read_note(path)) for path in checkpoint_files]
    keys = _verifier_keys(key_texts)
    redaction_keys = _verifier_keys(redaction_texts, "--redaction-key")
    try:
        if export is not None:
            with progress_bar("verifying", None) as progress:
                # With the auditor's own --key, erasures need their own --redaction-key
                # too: the keys an export names are only the exporter's word.
                named: list[VerifierKey] | None = None if not keys else []
                return _covered(
                    verify_export(
                        export,
                        keys or None,
                        redaction_keys=redaction_keys or named,
                        extra=extra,
                        progress=progress,
                    ),
                    keys,
                )
        store = _open_store(db, data_dir)
        try:
            notes: list[str] = []
            if not redaction_keys and not keys:
                redaction_keys = _verifier_keys((store.meta("redaction_keys") or "").split())
                if redaction_keys:
                    notes.append(
                        "redactions checked against the redaction keys stored in the log; "
                        "pass --redaction-key to use yours"
                    )
            if not keys:
                keys = _verifier_keys((store.meta("verifier_keys") or "").split())
                notes.append("checked against the keys stored in the log; pass --key to use yours")
                if not keys:
                    raise InputError("the log names no verifier key: pass --key")
            with progress_bar("verifying", store.head().size) as progress:
                verdict = _verify_live(
                    store, keys, redaction_keys, extra, progress, archives, unarchived_ok
                )
            if not notes:
                _covered(verdict, keys)
            return dataclasses.replace(verdict, notes=(*verdict.notes, *notes))
        finally:
            store.close()
    except TamperDetected as exc:
        hint = ""
        if exc.kind == "redaction" and not redaction_texts:
            hint = " (pass --redaction-key with the operator's redaction verifier key)"
        raise CheckFailed(f"audit log NOT intact: {exc}{hint}") from exc
    except (FormatError, StoreError) as exc:
        raise InputError(str(exc)) from exc


def _verify_live(
    store: Store,
    keys: Sequence[VerifierKey],
    redaction_keys: Sequence[VerifierKey],
    extra: Sequence[tuple[str, str]],
    progress: Callable[[int], None],
    archives: Sequence[str],
    unarchived_ok: bool = False,
) -> Verdict:
    """The live log, and with ``archives`` the segments archived from it, together."""
    from audit._archive import ANYWHERE, verify_with_archives
    from audit._auditor import verify_store

    if not archives:
        return verify_store(
            store,
            keys,
            redaction_keys=redaction_keys,
            extra=extra,
            progress=progress,
            archived=ANYWHERE * unarchived_ok,
        )
    with _archive_copies(archives) as directories:
        verdict, segments = verify_with_archives(
            store,
            keys,
            directories,
            redaction_keys=redaction_keys,
            extra=extra,
            progress=progress,
            unarchived_ok=unarchived_ok,
        )
    if not segments:
        note = "no archived segment in " + ", ".join(archives)
    else:
        note = (
            f"archived entries 0..{segments[-1].last:,} verified in {len(segments)} "
            f"segment(s) of {', '.join(archives)}; "
            f"{len(verdict.log.pruned):,} payloads pruned from the live log are held there"
        )
    return dataclasses.replace(verdict, notes=(*verdict.notes, note))


def _covered(verdict: Verdict, keys: Sequence[VerifierKey]) -> Verdict:
    """With the auditor's own ``--key``: the verdict, when a checkpoint signed by one
    of those keys covers the log; else a failed check (exit 1). Hashes and a chain
    anyone with write access can recompute; only a signature by a trusted key proves
    the entries are the ones the log published (deleted checkpoints and a rewritten
    history, or a restored older backup with none, read as intact otherwise)."""
    if not keys or verdict.anchor is not None or verdict.log.size == verdict.log.start:
        return verdict
    names = ", ".join(str(key).split("+")[0] for key in keys)
    raise CheckFailed(
        f"audit log NOT proven: no checkpoint signed by {names} covers it (its "
        f"{verdict.log.size - verdict.log.start:,} entries hash and chain correctly, but "
        "nothing you trust signed them: checkpoints deleted and history rewritten, or an "
        "older copy restored?)"
    )


def _signed_by(verdict: Verdict) -> str:
    return ", ".join(key.split("+")[0] for key in verdict.keys)


def _describe(verdict: Verdict) -> list[str]:
    from audit._auditor import root_b64
    from audit._entry import time_text

    log = verdict.log
    span = f"{log.size:,} entries" if log.start == 0 else f"entries {log.start:,}..{log.size - 1:,}"
    lines = [f"audit log intact: {span} of {verdict.origin}"]
    if verdict.anchor is not None:
        lines.append(
            f"intact up to index {verdict.anchor.size - 1:,}, covered by the checkpoint of "
            f"size {verdict.anchor.size:,} signed by {_signed_by(verdict)}"
        )
        lines.append(
            f"checked against the checkpoint of size {verdict.anchor.size:,}, root "
            f"{root_b64(verdict.anchor.root)} ({verdict.anchor_source})"
        )
        if log.size > verdict.anchor.size:
            lines.append(
                f"entries {verdict.anchor.size:,}..{log.size - 1:,} came after it: their "
                "hashes and chain check out, no signature covers them yet"
            )
    else:
        lines.append("no signed checkpoint covers these entries yet: run `docket audit checkpoint`")
    for source, size in verdict.kept:
        lines.append(f"your checkpoint {source} (size {size:,}): the log contains it")
    lines.append("keys: " + ", ".join(verdict.keys))
    if log.redacted:
        lines.append("redacted entries: " + ", ".join(map(str, log.redacted)))
    for index, verified in verdict.redactions:
        order = verified.order
        lines.append(
            f"entry {index} erased on {time_text(order.time)} at the request of "
            f"{order.requested_by} ({order.reason}); order signed by "
            + ", ".join(verified.signed_by)
        )
    lines.extend(f"note: {note}" for note in verdict.notes)
    return lines


_ARCHIVES_HELP = (
    "An archive (from `docket audit archive`) to verify with the live log; "
    "payloads pruned from it verify only against these (repeatable)."
)
archives_option = click.option(
    "--archives",
    "archive_dirs",
    multiple=True,
    metavar="DIR|s3://BUCKET/PREFIX",
    help=_ARCHIVES_HELP,
)


@audit.command()
@db_option
@data_dir_option
@_export_and_checkpoint_options("Verify")
@key_option
@redaction_key_option
@archives_option
@json_option
def verify(
    db: str | None,
    data_dir: Path | None,
    export: Path | None,
    checkpoint_files: tuple[Path, ...],
    key_texts: tuple[str, ...],
    redaction_texts: tuple[str, ...],
    archive_dirs: tuple[str, ...],
    as_json: bool,
) -> None:
    """Recompute every leaf hash, the hash chain and the Merkle root; check every
    checkpoint's signature and root; compare each entry's kind and time columns with
    its hashed payload, and that every erased payload has a redaction order signed by
    a redaction key. Exits 1 naming the first bad entry and what is wrong (modified,
    deleted, inserted, reordered, truncated, checkpoint, redaction), or, with --key,
    when no checkpoint signed by that key covers the log (with --key, erasures are
    checked only against --redaction-key). With --archives, the archived segments
    too: each file against its manifest, its entries against its signed checkpoint,
    each segment chained to the one before by its consistency proof, and a payload
    pruned from the live log only where a segment holds it (else: missing). --json
    prints a result object on success and on failure."""
    try:
        verdict = _run_verify(
            db, data_dir, export, checkpoint_files, key_texts, redaction_texts, archive_dirs
        )
    except click.ClickException as exc:
        if as_json:
            tamper = exc.__cause__
            _failure_json(
                exc,
                "intact",
                index=tamper.index if isinstance(tamper, TamperDetected) else None,
                kind=tamper.kind if isinstance(tamper, TamperDetected) else None,
            )
        raise
    if as_json:
        click.echo(json.dumps(_verdict_json(verdict), indent=2))
        return
    for line in _describe(verdict):
        click.echo(line)


witness_key_option = click.option(
    "--witness-key",
    "witness_texts",
    multiple=True,
    metavar="VKEY",
    help="A witness (the collector's) whose cosignature every checkpoint must carry.",
)


lag_seconds_option = click.option(
    "--lag-seconds",
    type=float,
    default=60.0,
    show_default=True,
    help="With --fleet: a site whose last cosigned checkpoint is older lags.",
)


def fleet_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options of a command over the fleet: --fleet (helped as ``what``),
    --collector-db, --site, --witness-key, --lag-seconds."""
    options = (
        click.option("--fleet", is_flag=True, help=what),
        click.option(
            "--collector-db", metavar="URL", help="The collector's database (with --fleet)."
        ),
        click.option(
            "--site", "sites", multiple=True, help="With --fleet: only this site (repeatable)."
        ),
        witness_key_option,
        lag_seconds_option,
    )

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _fleet_flags(
    fleet: bool,
    collector_db: str | None,
    sites: Sequence[str],
    witness_texts: Sequence[str],
    local: Sequence[tuple[str, object]],
) -> bool:
    """Whether the command runs over the fleet (any fleet flag given); then the
    collector's database is named and none of the ``local`` (flag, value) is given."""
    if not (fleet or collector_db or sites or witness_texts):
        return False
    given = [flag for flag, value in local if value]
    if given:
        raise InputError(f"--fleet reads the collector's database: drop {', '.join(given)}")
    if collector_db is None or not fleet:
        raise InputError("--fleet needs --collector-db URL (and --collector-db needs --fleet)")
    return True


def _fleet_export(
    url: str,
    names: Sequence[str],
    witness_texts: Sequence[str],
    redaction_texts: Sequence[str],
    out: Path,
    since: datetime | None,
    until: datetime | None,
    lag_seconds: float,
) -> None:
    """`export --fleet`: each site exported into ``out`` and the manifest; a line per
    site, and exit 1 naming every site that is not complete."""
    from audit._fleet_export import MANIFEST, export_fleet
    from audit._report.fleet import COMPLETE, NOT_VERIFIED

    store, witnesses = _open_collector(url, witness_texts)
    try:
        done = export_fleet(
            store, _held_sites(store, names), out, witnesses=witnesses,
            redaction_keys=_verifier_keys(redaction_texts, "--redaction-key"),
            since=since, until=until, now=datetime.now(UTC), lag_seconds=lag_seconds,
        )  # fmt: skip
    except StoreError as exc:
        raise InputError(str(exc)) from exc
    except OSError as exc:
        raise InputError(f"cannot write to {out}: {exc.strerror}") from exc
    finally:
        store.close()
    for site in done:
        what = f"entries {site.start}..{(site.end or 0) - 1} ({site.entries:,}) to {site.export}"
        if site.export is None:
            what = "nothing exported"
        state = "" if site.state == COMPLETE else f" ({site.state})"
        click.echo(f"{site.site}: {what}{state}", err=True)
    missing = [
        f"site {site.site} {site.state}"
        + (", not exported" if site.state == NOT_VERIFIED else "")
        + f": {site.problem}"
        for site in done
        if site.state != COMPLETE
    ]
    if missing:
        raise CheckFailed(
            f"fleet export INCOMPLETE: {'; '.join(missing)} (manifest written to {out / MANIFEST})"
        )
    total = sum(site.entries for site in done)
    if total == 0 and (since or until):
        raise _nothing_in("export", since, until, sum(site.held for site in done))
    click.echo(f"fleet: {len(done)} site(s), {total:,} entries exported to {out}", err=True)


@audit.command(name="verify-fleet")
@click.option(
    "--collector-db", "url", required=True, metavar="URL", help="The collector's database."
)
@click.option("--site", "names", multiple=True, help="Only this site (repeatable) [every one].")
@witness_key_option
@json_option
def verify_fleet(
    url: str, names: tuple[str, ...], witness_texts: tuple[str, ...], as_json: bool
) -> None:
    """Verify each site's entries as the collector holds them against the site's
    checkpoints (signed by the keys the collector knows it by; with --witness-key,
    cosigned by that witness): per site and together, with each site's coverage
    (entries, checkpoints, time span). Exits 1 naming the first bad site and entry."""
    store, witnesses = _open_collector(url, witness_texts)
    try:
        coverage = []
        for name in _held_sites(store, names):
            try:
                coverage.append(_verify_held(store, name, witnesses))
            except TamperDetected as exc:
                failure = CheckFailed(f"{exc}")
                if as_json:
                    _failure_json(failure, "intact", site=name, index=exc.index, kind=exc.kind)
                raise failure from exc
    finally:
        store.close()
    total = sum(site.size for site in coverage)
    if as_json:
        sites = [dataclasses.asdict(site) for site in coverage]
        click.echo(json.dumps({"intact": True, "entries": total, "sites": sites}, indent=2))
        return
    for site in coverage:
        span = f"{site.first} .. {site.last}" if site.first else "no dated entry"
        click.echo(
            f"{site.site}: {site.size:,} entries intact, {site.checkpoints} checkpoint(s), "
            f"{span}" + (f", {site.redacted} redacted" if site.redacted else "")
        )
    click.echo(f"fleet: {len(coverage)} site(s), {total:,} entries intact")


def _open_collector(
    url: str, witness_texts: Sequence[str]
) -> tuple[CollectorStore, list[VerifierKey]]:
    """The collector's database at ``url`` and the witnesses (``--witness-key``) whose
    cosignature every checkpoint must carry."""
    from audit._collector_store import CollectorStore
    from audit._note import ALG_COSIGNATURE_V1, VerifierKey

    try:
        witnesses = [VerifierKey.parse(text, ALG_COSIGNATURE_V1) for text in witness_texts]
        return CollectorStore(url), witnesses
    except (KeyFormatError, StoreError) as exc:
        raise InputError(str(exc)) from exc


def _held_sites(store: CollectorStore, names: Sequence[str]) -> list[str]:
    """``names`` (every site the collector knows when empty); an unknown one is an
    input error."""
    known = [status.name for status in store.statuses()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise InputError(f"the collector knows no site {', '.join(unknown)}")
    return list(names or known)


def _verify_held(
    store: CollectorStore, name: str, witnesses: Sequence[VerifierKey]
) -> SiteCoverage:
    """Site ``name``'s entries as the collector holds them, verified against its
    cosigned checkpoints. Raises :class:`TamperDetected` naming the site."""
    from audit._collector_audit import verify_site

    state = store.site(name)
    assert state is not None
    return verify_site(
        name, store.entries(name), store.checkpoints(name), state.log.keys, witnesses
    )


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    from audit._auditor import root_b64
    from audit._entry import time_text

    anchor = verdict.anchor
    return {
        "intact": True,
        "origin": verdict.origin,
        "start": verdict.log.start,
        "size": verdict.log.size,
        "covered_up_to": None if anchor is None else anchor.size - 1,
        "checkpoint": None
        if anchor is None
        else {"size": anchor.size, "root": root_b64(anchor.root), "source": verdict.anchor_source},
        "checkpoints_checked": list(verdict.log.checkpoints),
        "redacted": list(verdict.log.redacted),
        "pruned": len(verdict.log.pruned),
        "redactions": [
            {
                "index": index,
                "time": time_text(verified.order.time),
                "requested_by": verified.order.requested_by,
                "reason": verified.order.reason,
                "signed_by": list(verified.signed_by),
            }
            for index, verified in verdict.redactions
        ],
        "keys": list(verdict.keys),
        "notes": list(verdict.notes),
    }


# -- prove / verify-receipt -----------------------------------------------------------


def _signing_log(db: str | None, data_dir: Path | None, keys_path: Path | None) -> AuditLog:
    """The log with its signing keys when they are here (to sign a checkpoint on
    demand), else read-only."""
    from audit._keys import KeyRing
    from audit._log import AuditLog
    from audit._store import Store

    directory = keys_dir(keys_path, data_dir)
    try:
        store = Store(database_url(db, data_dir), create=False)
        ring = KeyRing(directory)
        return AuditLog(store, ring if ring.exists else None)
    except (StoreError, KeyFormatError) as exc:
        raise InputError(str(exc)) from exc


@audit.command()
@click.argument("index", type=click.IntRange(min=0))
@click.option("--size", type=click.IntRange(min=1), help="Prove in the checkpoint of this size.")
@db_option
@data_dir_option
@keys_option
@click.option("-o", "--output", type=click.File("w"), default="-", help="Write here [stdout].")
def prove(
    index: int,
    size: int | None,
    db: str | None,
    data_dir: Path | None,
    keys_path: Path | None,
    output: IO[str],
) -> None:
    """Print a JSON receipt for entry INDEX: the entry, its leaf hash, its inclusion
    proof and the signed checkpoint it is proven against. `docket audit verify-receipt`
    checks it with nothing but the log's key."""
    from audit._auditor import make_receipt

    log = _signing_log(db, data_dir, keys_path)
    try:
        if size is None:
            # The latest checkpoint: it proves every entry before it and is signed by the
            # keys in use now (an older one may carry only a retired key's signature).
            stored = log.store.latest_checkpoint()
            if stored is None or stored.size <= index:
                if index >= log.store.head().size:
                    raise InputError(f"there is no entry {index}")
                stored = log.checkpoint()
        else:
            stored = log.store.checkpoint_at(size)
            if stored is None:
                raise InputError(f"no checkpoint of size {size} (see `docket audit checkpoint`)")
        if index >= stored.size:
            raise InputError(f"entry {index} is not in the tree of size {stored.size}")
        receipt = make_receipt(log.store, index, stored.size, stored.note)
    except (ProofError, StoreError) as exc:
        raise InputError(str(exc)) from exc
    finally:
        log.store.close()
    output.write(json.dumps(receipt, indent=2, ensure_ascii=False) + "\n")


@audit.command(name="verify-receipt")
@click.argument("receipt_file", type=click.File("r"))
@key_option
@json_option
def verify_receipt_cmd(receipt_file: IO[str], key_texts: tuple[str, ...], as_json: bool) -> None:
    """Check a receipt from `docket audit prove` offline: the checkpoint is signed by
    --key, the entry hashes to the leaf, and the leaf is in the signed tree. Exits 1
    when it does not verify, 2 for a file that is not a receipt. --json prints a
    result object on success and on failure."""
    from audit._auditor import root_b64

    try:
        verified = _run_verify_receipt(receipt_file, key_texts)
    except click.ClickException as exc:
        if as_json:
            _failure_json(exc, "valid")
        raise
    erased = verified.entry is None
    if as_json:
        result = {
            "valid": True,
            "index": verified.index,
            "origin": verified.checkpoint.origin,
            "tree_size": verified.checkpoint.size,
            "root": root_b64(verified.checkpoint.root),
            "key": verified.key,
            "entry_erased": erased,
        }
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(
        f"receipt OK: entry {verified.index} is in {verified.checkpoint.origin} at tree size "
        f"{verified.checkpoint.size:,} (signed by {verified.key})"
        + ("; its payload was erased: only its leaf hash is proven" if erased else "")
    )


def _run_verify_receipt(receipt_file: IO[str], key_texts: Sequence[str]) -> VerifiedReceipt:
    from audit._auditor import verify_receipt

    keys = _verifier_keys(key_texts)
    if not keys:
        raise InputError("--key is required: the log's verifier key (`docket audit key`)")
    try:
        receipt = json.load(receipt_file)
    except ValueError as exc:
        raise InputError(f"{receipt_file.name}: not JSON: {exc}") from exc
    try:
        return verify_receipt(receipt, keys)
    except FormatError as exc:
        raise InputError(f"{receipt_file.name}: {exc}") from exc
    except (NoteError, ProofError) as exc:
        raise CheckFailed(f"receipt does NOT verify: {exc}") from exc


# -- consistency / checkpoint / key ---------------------------------------------------


@audit.command()
@click.argument("old_checkpoint", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("new_checkpoint", required=False, type=click.Path(path_type=Path, dir_okay=False))
@db_option
@data_dir_option
@key_option
@json_option
def consistency(
    old_checkpoint: Path,
    new_checkpoint: Path | None,
    db: str | None,
    data_dir: Path | None,
    key_texts: tuple[str, ...],
    as_json: bool,
) -> None:
    """Prove the log only grew between OLD_CHECKPOINT and NEW_CHECKPOINT (default: the
    log's latest checkpoint): nothing was removed, changed or reordered. Exits 1 when
    the newer tree does not extend the older one or a checkpoint's signature fails, 2
    for unreadable input. --json prints a result object on success and on failure."""
    from audit._auditor import root_b64

    try:
        low, high, proof = _run_consistency(old_checkpoint, new_checkpoint, db, data_dir, key_texts)
    except click.ClickException as exc:
        if as_json:
            _failure_json(exc, "consistent")
        raise
    if as_json:
        result = {
            "consistent": True,
            "origin": high.origin,
            "old": {"size": low.size, "root": root_b64(low.root)},
            "new": {"size": high.size, "root": root_b64(high.root)},
            "proof": [base64.b64encode(node).decode("ascii") for node in proof],
        }
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(
        f"consistent: the tree of size {high.size:,} extends the tree of size {low.size:,} "
        f"({len(proof)} proof hashes)"
    )


def _run_consistency(
    old_checkpoint: Path,
    new_checkpoint: Path | None,
    db: str | None,
    data_dir: Path | None,
    key_texts: Sequence[str],
) -> tuple[Checkpoint, Checkpoint, list[bytes]]:
    from audit._auditor import prove_consistency
    from audit._note import parse_checkpoint_unverified

    store = _open_store(db, data_dir)
    try:
        keys = _verifier_keys(key_texts) or _verifier_keys(
            (store.meta("verifier_keys") or "").split()
        )
        notes = [(str(old_checkpoint), _read_note(old_checkpoint))]
        if new_checkpoint is not None:
            notes.append((str(new_checkpoint), _read_note(new_checkpoint)))
        else:
            latest = store.latest_checkpoint()
            if latest is None:
                raise InputError("the log has no checkpoint yet: run `docket audit checkpoint`")
            notes.append(("the log's latest checkpoint", latest.note))
        for source, note in notes:
            try:
                parse_checkpoint_unverified(note)
            except NoteError as exc:
                raise InputError(f"{source} is not a checkpoint: {exc}") from exc
        old, new = (_open(source, note, keys, store.origin) for source, note in notes)
        proof = prove_consistency(store, old, new)
    except (ProofError, NoteError) as exc:
        raise CheckFailed(f"NOT consistent: {exc}") from exc
    except StoreError as exc:
        raise InputError(str(exc)) from exc
    finally:
        store.close()
    low, high = sorted((old, new), key=lambda c: c.size)
    return low, high, proof


def _open(source: str, note: str, keys: Sequence[VerifierKey], origin: str) -> Checkpoint:
    from audit._note import open_checkpoint

    try:
        checkpoint, _ = open_checkpoint(note, keys, origin=origin)
    except NoteError as exc:
        raise NoteError(f"{source}: {exc}") from exc
    return checkpoint


@audit.command()
@db_option
@data_dir_option
@keys_option
@click.option("--final", is_flag=True, help="The latest checkpoint the site's witnesses cosigned.")
def checkpoint(db: str | None, data_dir: Path | None, keys_path: Path | None, final: bool) -> None:
    """Print the latest signed checkpoint (C2SP signed note). With the signing key at
    hand, one covering every entry is signed first if the log grew. With --final, the
    latest one the site took as final (with its witnesses' cosignatures; exit 1 while
    none is)."""
    log = _signing_log(db, data_dir, keys_path)
    if final:
        from audit._collector_client import final_checkpoint

        note = final_checkpoint(log.store)
        log.store.close()
        if note is None:
            raise CheckFailed("no checkpoint is final yet: no configured witness cosigned one")
        click.echo(note, nl=False)
        return
    try:
        stored = log.checkpoint()
    except (StoreError, KeyFormatError) as exc:
        raise InputError(str(exc)) from exc
    finally:
        log.store.close()
    click.echo(stored.note, nl=False)


@audit.command()
@db_option
@data_dir_option
@keys_option
@click.option("--rotate", is_flag=True, help="Make a new signing key; the old one co-signs.")
@click.option("--retire-previous", is_flag=True, help="Stop co-signing with the old key.")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Print every key: those that sign now, then retired ones (one a line).",
)
def key(
    db: str | None,
    data_dir: Path | None,
    keys_path: Path | None,
    rotate: bool,
    retire_previous: bool,
    show_all: bool,
) -> None:
    """Print the log's verifier key as NAME+ID+BASE64 (give it to auditors). `docket
    serve` makes the signing key with the log, under <data-dir>/audit-keys (mode 0600)."""
    from audit._kept import KEPT_NAME
    from audit._keys import KeyRing
    from audit._log import AuditLog

    if rotate and retire_previous:
        raise InputError("--rotate and --retire-previous are separate steps")
    directory = keys_dir(keys_path, data_dir)
    ring = KeyRing(directory)
    if not ring.exists:
        raise InputError(
            f"no audit signing key in {directory}: `docket serve` makes it with the log "
            "(or pass --data-dir / --keys)"
        )
    store = _open_store(db, data_dir)
    try:
        # The kept checkpoint follows the keys: after a rotation and retirement while
        # the server is stopped it must still verify at the next start.
        log = AuditLog(store, ring, kept=_data_dir(data_dir) / KEPT_NAME)
        who = f"local:{getpass.getuser()}"
        if rotate:
            new = ring.rotate()
            _record_operation(log, "rotate-key", who, {"key": str(new.verifier())})
        elif retire_previous:
            retired = ring.retire()
            if retired is None:
                raise InputError("there is no previous key to retire")
            _record_operation(log, "retire-key", who, {"key": str(retired)})
        shown = [str(key) for key in ring.verifiers()]
        if show_all:
            # Retired keys too: an auditor needs them for the checkpoints they signed.
            shown += [k for k in (store.meta("verifier_keys") or "").split() if k not in shown]
    except FileExistsError as exc:
        raise InputError(str(exc)) from exc
    except (StoreError, KeyFormatError) as exc:
        raise InputError(str(exc)) from exc
    finally:
        store.close()
    for line in shown if show_all else shown[:1]:
        click.echo(line)


def _record_operation(log: AuditLog, action: str, who: str, detail: dict[str, Any]) -> None:
    """Record an audit operation (key rotation, export, redaction) in the log itself."""
    from audit._entry import Entry

    log.publish_verifiers()
    log.start()
    try:
        log.record(
            [
                Entry(
                    kind="audit",
                    time=datetime.now(UTC),
                    caller=who,
                    action=action,
                    resource=f"log:{log.origin}",
                    detail=detail,
                )
            ]
        )
    finally:
        log.close()


# -- redact ---------------------------------------------------------------------------


@audit.command()
@click.argument("index", type=click.IntRange(min=0))
@click.option("--reason", required=True, help="Why, one line (recorded in the log and signed).")
@click.option("--by", "requested_by", help="Who asked, one line [the current user].")
@click.option(
    "--redaction-key",
    "redaction_key",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The redaction key (a PRIVATE+KEY file from `docket audit redaction-key --new`) "
    "that signs the order.",
)
@db_option
@data_dir_option
@keys_option
def redact(
    index: int,
    reason: str,
    requested_by: str | None,
    redaction_key: Path,
    db: str | None,
    data_dir: Path | None,
    keys_path: Path | None,
) -> None:
    """Erase entry INDEX's payload (personal data) for good, on the authority of a
    redaction order signed with --redaction-key. Its leaf hash stays, so the log still
    verifies; a `redaction` entry carries the order (who asked and why), and `verify`
    accepts the erasure only with an order a trusted redaction key signed."""
    from audit._note import read_signer

    try:
        signer = read_signer(redaction_key)
    except KeyFormatError as exc:
        raise InputError(str(exc)) from exc
    log = _signing_log(db, data_dir, keys_path)
    who = requested_by or f"local:{getpass.getuser()}"
    log.start()
    try:
        receipt = log.redact(
            index, reason=reason, requested_by=who, now=datetime.now(UTC), signer=signer
        )
    except (FormatError, StoreError) as exc:
        raise InputError(str(exc)) from exc
    finally:
        log.close()
    click.echo(
        f"entry {index} redacted; recorded as entry {receipt.index}, order signed by {signer.name}"
    )


@audit.command(name="redaction-key")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--new", "make", is_flag=True, help="Make a new key at PATH (it must not exist).")
@click.option(
    "--name",
    default="docket-redaction",
    show_default=True,
    help="The key's name (shown in orders and verdicts).",
)
def redaction_key(path: Path, make: bool, name: str) -> None:
    """Print the verifier key of the redaction key at PATH; with --new, make it first
    (mode 0600). Keep the key apart from the checkpoint keys and the data directory
    (the person who authorizes erasures holds it); give auditors the printed verifier
    key for `verify --redaction-key`."""
    show_key_file(path, name if make else None)


def show_key_file(path: Path, new_name: str | None, alg: int = 0x01) -> None:
    """Print the verifier key of the signer key file ``path`` (of algorithm ``alg``:
    0x01 a note key, 0x04 a cosignature/v1 witness key); with ``new_name``, make the
    key first (mode 0600, never over an existing file). Errors are
    :class:`InputError`."""
    from audit._note import SignerKey, read_signer, write_signer

    try:
        if new_name is not None:
            write_signer(path, SignerKey.generate(new_name, alg))
        click.echo(str(read_signer(path, alg).verifier()))
    except FileExistsError as exc:
        raise InputError(f"{path} exists: not overwriting a key") from exc
    except KeyFormatError as exc:
        raise InputError(str(exc)) from exc
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from exc


# -- export / report ------------------------------------------------------------------


@audit.command()
@click.option("--since", help="First entry time (ISO 8601, UTC if no offset).")
@click.option("--until", help="End time, exclusive (ISO 8601).")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The export file to write (JSON Lines).",
)
@db_option
@data_dir_option
@keys_option
@click.option(
    "--archives",
    "archive_dirs",
    multiple=True,
    metavar="DIR|s3://BUCKET/PREFIX",
    help="An archive (from `docket audit archive`), verified first, whose entries stand in "
    "for the payloads pruned from the log (repeatable).",
)
@fleet_options("Export every site's entries as the collector holds them (--collector-db, --out).")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="With --fleet: the directory for each site's export and the manifest.",
)
@redaction_key_option
def export(
    since: str | None,
    until: str | None,
    output: Path | None,
    db: str | None,
    data_dir: Path | None,
    keys_path: Path | None,
    archive_dirs: tuple[str, ...],
    fleet: bool,
    collector_db: str | None,
    sites: tuple[str, ...],
    out: Path | None,
    witness_texts: tuple[str, ...],
    redaction_texts: tuple[str, ...],
    lag_seconds: float,
) -> None:
    """Write the entries in [--since, --until) as JSON Lines, with the signed
    checkpoints and subtree hashes that let `docket audit verify --export` check them
    offline. The period is mapped to entries by the time inside each hashed entry; a
    stored column that disagrees with it exits 1, a period with no entry exits 1.
    Payloads pruned after archival are read (and dated) from --archives, each segment
    verified first; when the period may include pruned entries no archive given holds,
    nothing is written and it exits 1 naming them. With --fleet, one export per site
    the collector holds (each verified first, and read back against the site's
    cosigned checkpoint written beside it) and a manifest.json with each site's
    coverage and state; a site that does not verify is not exported, and it, or one
    that lags, makes the export INCOMPLETE (exit 1, the rest still written)."""
    from audit._auditor import write_export
    from audit._log import AuditLog
    from audit._store import Store

    start_time, end_time = parse_period(since, until)
    local = (("--db", db), ("--data-dir", data_dir), ("--keys", keys_path), ("-o", output))
    if _fleet_flags(
        fleet, collector_db, sites, witness_texts, (*local, ("--archives", archive_dirs))
    ):
        if out is None:
            raise InputError("--fleet writes one export per site: pass --out DIR")
        assert collector_db is not None
        _fleet_export(
            collector_db, sites, witness_texts, redaction_texts, out, start_time, end_time,
            lag_seconds,
        )  # fmt: skip
        return
    if output is None or out is not None or redaction_texts:
        raise InputError("--output FILE is needed (--out and --redaction-key go with --fleet)")
    log = _signing_log(db, data_dir, keys_path)
    try:
        with _archive_copies(archive_dirs) as directories:
            restore = _restore(log.store, directories)
            period = _select_period(log.store, start_time, end_time, restore)
            if period.unrestored:
                raise _pruned_in(period, bool(start_time or end_time))
            if period.entries == 0 and (start_time or end_time):
                raise _nothing_in("export", start_time, end_time, period.size)
            start, end = period.start, period.end
            anchor = log.store.latest_checkpoint()
            if anchor is None or anchor.size < end:
                anchor = log.checkpoint()
            if anchor.size < end:
                click.echo(
                    f"docket: entries from {anchor.size} on are not checkpointed yet and no "
                    "signing key is here; exporting up to the latest checkpoint",
                    err=True,
                )
                end = max(start, anchor.size)
            keys = (log.store.meta("verifier_keys") or "").split()
            with (
                output.open("w", encoding="utf-8") as handle,
                progress_bar("exporting", end - start) as bar,
            ):
                written = write_export(
                    log.store,
                    handle,
                    start=start,
                    end=end,
                    anchor_note=anchor.note,
                    anchor_size=anchor.size,
                    verifier_keys=keys,
                    redaction_keys=(log.store.meta("redaction_keys") or "").split(),
                    now=datetime.now(UTC),
                    progress=bar,
                    restore=restore,
                )
    except TamperDetected as exc:
        output.unlink(missing_ok=True)
        raise CheckFailed(f"NOT intact, nothing exported: {exc}") from exc
    except (StoreError, ProofError, FormatError) as exc:
        output.unlink(missing_ok=True)
        raise InputError(str(exc)) from exc
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror}") from exc
    finally:
        log.store.close()
    covered = f"; covered by the checkpoint of size {anchor.size:,}"
    if log.keys is not None:
        _record_operation(
            AuditLog(Store(database_url(db, data_dir)), log.keys),
            "export",
            f"local:{getpass.getuser()}",
            {"start": start, "end": end, "file": output.name},
        )
    span = f"entries {start}..{end - 1}" if written else "no entries (none in that period)"
    click.echo(f"exported {span} ({written:,}) to {output}{covered}", err=True)


def _restore(store: Store, directories: Sequence[Path]) -> Restore:
    """What stands in for the payloads pruned from ``store``: the segments in
    ``directories``, each verified with the log's keys (none: pruned payloads stay
    missing, and an export that needs them is refused). Raises
    :class:`TamperDetected` when a segment does not verify."""
    from audit._archive import archived_entries, open_archives
    from audit._auditor import Restore, erasures

    marks = erasures(store)
    if not directories:
        return Restore(marks)
    keys = _verifier_keys((store.meta("verifier_keys") or "").split())
    named = _verifier_keys((store.meta("redaction_keys") or "").split(), "--redaction-key")
    segments = open_archives(directories, keys, store.origin, named)
    return Restore(marks, functools.partial(archived_entries, segments))


def _pruned_in(period: Period, chosen: bool) -> CheckFailed:
    """The refusal of an export that would silently leave out pruned entries."""
    runs = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in period.unrestored)
    what = "that period" if chosen else "the log"
    return CheckFailed(
        f"cannot export {what}: entries {runs} were pruned after archival and no archive "
        "given holds them, so their time is unknown and the period may include them; "
        "pass --archives with their archive"
    )


@audit.command()
@click.option("--since", help="Start of the period (ISO 8601, UTC if no offset).")
@click.option("--until", help="End of the period, exclusive (ISO 8601).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "html", "json", "csv"]),
    default="table",
    show_default=True,
    help="table (a terminal), html (one self-contained page), json or csv.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the report here [stdout].",
)
@db_option
@data_dir_option
@_export_and_checkpoint_options("Report on")
@key_option
@redaction_key_option
@click.option(
    "--archives",
    "archive_dirs",
    multiple=True,
    metavar="DIR|s3://BUCKET/PREFIX",
    help="An archive (from `docket audit archive`), verified with the live log, whose "
    "entries stand in for the payloads pruned from it (repeatable).",
)
@fleet_options("Report on every site's entries as the collector holds them (--collector-db).")
def report(
    since: str | None,
    until: str | None,
    fmt: str,
    output: Path | None,
    db: str | None,
    data_dir: Path | None,
    export: Path | None,
    checkpoint_files: tuple[Path, ...],
    key_texts: tuple[str, ...],
    redaction_texts: tuple[str, ...],
    archive_dirs: tuple[str, ...],
    fleet: bool,
    collector_db: str | None,
    sites: tuple[str, ...],
    witness_texts: tuple[str, ...],
    lag_seconds: float,
) -> None:
    """Residency and compliance report for a period: decisions by classification and
    jurisdiction, any access or placement of data outside its declared residency,
    whatever its classification (flagged, one row per decision), denials by policy,
    credentials issued and refused, and whether the log verified (and against which
    checkpoint). The period is mapped to entries by the time inside each hashed
    entry, never the unhashed columns; a column that disagrees with it, or a period
    with no entry, exits 1. Payloads pruned after archival are read from --archives
    (verified first); without them they are reported as not covered, and the report,
    still written, exits 1 as INCOMPLETE. With --fleet, over every site the collector
    holds: each site's entries verified against its cosigned checkpoints first, its
    coverage shown (entries held, checkpoint, last cosigned, how far behind the head
    it reported); a site that does not verify is left out of the totals with its
    reason, and one that lags (or never pushed) makes the report INCOMPLETE."""
    from audit._report import build_report

    start_time, end_time = parse_period(since, until)
    local = ("--db", db), ("--data-dir", data_dir), ("--export", export)
    if _fleet_flags(
        fleet, collector_db, sites, witness_texts, (*local, ("--archives", archive_dirs))
    ):
        assert collector_db is not None
        built_fleet = _fleet_report(
            collector_db, sites, witness_texts, lag_seconds, start_time, end_time
        )
        if (
            built_fleet.status.intact
            and built_fleet.total.entries == 0
            and (start_time or end_time)
        ):
            raise _nothing_in("report", start_time, end_time, built_fleet.status.tree_size)
        _write_report(built_fleet, fmt, output)
        return
    with _archive_copies(archive_dirs) as directories:
        status, gaps, held = _report_status(
            db, data_dir, export, checkpoint_files, key_texts, redaction_texts, directories
        )
        # Verifying the store also compared its kind and time columns with the payloads;
        # build_report selects by each payload's own time.
        entries = _report_entries(
            db, data_dir, export, skip_unreadable=not status.intact, archives=held
        )
        built = build_report(
            entries,
            since=start_time,
            until=end_time,
            status=status,
            generated_at=datetime.now(UTC),
            gaps=gaps,
        )
    if status.intact and built.entries == 0 and (start_time or end_time):
        raise _nothing_in("report", start_time, end_time, status.tree_size)
    _write_report(built, fmt, output)


def _fleet_report(
    url: str,
    names: Sequence[str],
    witness_texts: Sequence[str],
    lag_seconds: float,
    since: datetime | None,
    until: datetime | None,
) -> FleetReport:
    """Each site's entries as the collector holds them, verified (as `verify-fleet`
    does) and then counted, with its coverage; the verified sites together."""
    from audit._entry import Entry
    from audit._report import ReportStatus, SiteSection, build_report, fleet_report

    store, witnesses = _open_collector(url, witness_texts)
    now = datetime.now(UTC)
    sections = []
    try:
        held = {status.name: status for status in store.statuses()}
        for name in _held_sites(store, names):
            status = held[name]
            judge = functools.partial(
                SiteSection.judge,
                cosigned=status.cosigned,
                head=status.head,
                now=now,
                fork=status.last_incident,
            )
            try:
                coverage = _verify_held(store, name, witnesses)
            except TamperDetected as exc:
                sections.append(
                    judge(name, None, entries=status.size, checkpoint=status.size, problem=str(exc))
                )
                continue
            entries = (
                item
                for index, payload, _ in store.entries(name)
                if index < coverage.size
                for item in (
                    [(index, None)]
                    if payload is None
                    else _parsed(index, Entry.from_canonical, payload, skip_unreadable=False)
                )
            )
            by = "cosigned by --witness-key" if witnesses else "witness cosignatures not checked"
            signed = f"{coverage.origin} size {coverage.size}, {by}" if coverage.size else None
            verified = ReportStatus(True, coverage.size, signed, None, ())
            counted = build_report(
                entries, since=since, until=until, status=verified, generated_at=now
            )
            sections.append(
                judge(
                    name, counted, entries=coverage.size,
                    checkpoint=coverage.size if coverage.checkpoints else None,
                    lag_seconds=lag_seconds,
                )
            )  # fmt: skip
    except StoreError as exc:
        raise InputError(str(exc)) from exc
    finally:
        store.close()
    return fleet_report(sections, since=since, until=until, generated_at=now)


def _write_report(built: Report | FleetReport, fmt: str, output: Path | None) -> None:
    """Print or write the rendered report (one log's or the fleet's), then fail when it
    is not intact or not complete: the report is written either way, and says why."""
    from audit._report import FleetReport, render
    from audit._report.wording import gap_text

    failure = None
    summary = built.total if isinstance(built, FleetReport) else built
    if not built.status.intact:
        failure = built.status.problem or "the log does not verify"
    elif not built.complete:
        unread = f"{summary.not_covered:,} entries of this period could not be read; "
        more = len(built.gaps) - 1
        failure = (
            f"report INCOMPLETE: {unread * bool(summary.not_covered)}{gap_text(built.gaps[0])}"
            + f" (and {more} more gap(s), listed in the report)" * bool(more)
        )
    text = render(built, fmt)  # type: ignore[arg-type]
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write {output}: {exc.strerror}") from exc
        if failure is None:
            click.echo(f"report written to {output}", err=True)
    if failure is not None:
        raise CheckFailed(failure + ("" if output is None else f" (report written to {output})"))


def _report_status(
    db: str | None,
    data_dir: Path | None,
    export: Path | None,
    checkpoint_files: Sequence[Path],
    key_texts: Sequence[str],
    redaction_texts: Sequence[str],
    archives: Sequence[Path],
) -> tuple[ReportStatus, list[Gap], list[Path]]:
    """Verify the log (with its ``archives``) as `verify` does, pruned payloads no
    archive holds accepted: the report's status, the gaps those leave, and the archives
    whose entries may be read (none when the log or an archive does not verify)."""
    from audit._archive import segment_dirs
    from audit._auditor import root_b64
    from audit._report import Gap, ReportStatus

    locations = [str(directory) for directory in archives]
    try:
        verdict = _run_verify(
            db, data_dir, export, checkpoint_files, key_texts, redaction_texts, locations, True
        )
    except CheckFailed as exc:
        tamper = exc.__cause__
        failed = ReportStatus(
            intact=False,
            tree_size=_head_size(db, data_dir) if export is None else 0,
            checkpoint=None,
            problem=str(tamper) if isinstance(tamper, TamperDetected) else exc.format_message(),
            redacted=(),
        )
        return failed, [], []
    anchor = verdict.anchor
    status = ReportStatus(
        intact=True,
        tree_size=verdict.log.size,
        checkpoint=None
        if anchor is None
        else f"{verdict.origin} size {anchor.size} root {root_b64(anchor.root)}"
        + "".join(f" ({note})" for note in verdict.notes),
        problem=None,
        redacted=verdict.log.redacted,
        keys=verdict.keys,
    )
    held = [
        tuple(int(n) for n in path.name.split("-")[1:])
        for directory in archives
        for path in segment_dirs(directory)
    ]
    gaps: list[Gap] = []
    for index in verdict.log.pruned:
        if any(first <= index <= last for first, last in held):
            continue
        if gaps and gaps[-1].last == index - 1:
            gaps[-1] = dataclasses.replace(gaps[-1], last=index)
        else:
            reason = "payloads pruned after archival; no archive given holds them (pass --archives)"
            gaps.append(Gap(index, index, reason))
    return status, gaps, list(archives)


def _head_size(db: str | None, data_dir: Path | None) -> int:
    store = _open_store(db, data_dir)
    try:
        return store.head().size
    except StoreError:
        return 0
    finally:
        store.close()


def _parsed(
    index: int, parse: Callable[[Any], Entry], data: Any, *, skip_unreadable: bool
) -> Iterator[tuple[int, Entry]]:
    """Entry ``index`` parsed from ``data``. One that is no longer an entry (tampered
    with) is left out with ``skip_unreadable`` (the log is reported as not intact
    already), else it is an input error."""
    from pydantic import ValidationError

    try:
        entry = parse(data)
    except ValueError as exc:  # not JSON, or JSON that is not an entry
        if skip_unreadable:
            return
        problem = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise InputError(f"entry {index} is not a Docket audit entry: {problem}") from exc
    yield index, entry


def _report_entries(
    db: str | None,
    data_dir: Path | None,
    export: Path | None,
    *,
    skip_unreadable: bool,
    archives: Sequence[Path] = (),
) -> Iterator[tuple[int, Entry | None]]:
    """The entries to count; a payload pruned from the live log is read from the
    ``archives`` (verified with it) when one holds it. A payload that is no longer an
    entry (tampered with) is left out when the log is already reported as not intact,
    else it is an input error."""
    from audit._archive import ENTRIES, segment_dirs
    from audit._entry import Entry

    def parsed(index: int, parse: Callable[[Any], Entry], data: Any) -> Iterator[tuple[int, Entry]]:
        return _parsed(index, parse, data, skip_unreadable=skip_unreadable)

    def exported(path: Path) -> Iterator[tuple[int, Entry | None]]:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                value = json.loads(line)
                if value.get("type") == "entry":
                    index, document = int(value["index"]), value.get("entry")
                    if document is None:
                        yield index, None
                    else:
                        yield from parsed(index, Entry.model_validate, document)

    if export is not None:
        yield from exported(export)
        return
    archived = (
        item
        for directory in archives
        for path in segment_dirs(directory)
        for item in exported(path / ENTRIES)
    )
    waiting = next(archived, None)
    store = _open_store(db, data_dir)
    try:
        # Every entry is read: the time column is not hashed, so it cannot choose
        # them; build_report selects by each entry's own (hashed) time.
        for row in store.entries(0, None):
            payload = row.payload
            if payload is not None:
                yield from parsed(row.idx, Entry.from_canonical, payload)
                continue
            while waiting is not None and waiting[0] < row.idx:
                waiting = next(archived, None)
            yield waiting if waiting is not None and waiting[0] == row.idx else (row.idx, None)
    finally:
        store.close()


# -- accept ---------------------------------------------------------------------------


@audit.command()
@click.option("--reason", required=True, help="Why this log is accepted (recorded in it).")
@click.option("--by", "accepted_by", help="Who accepts it [the current user].")
@db_option
@data_dir_option
@keys_option
def accept(
    reason: str,
    accepted_by: str | None,
    db: str | None,
    data_dir: Path | None,
    keys_path: Path | None,
) -> None:
    """Accept a log that `docket serve` refuses because it does not contain the
    checkpoint kept in <data-dir>/audit-checkpoint (an older copy restored, another
    database). Records an `accept-log` entry (both sizes and roots, the reason, who) in
    the log, moves the kept file aside (audit-checkpoint.rejected-<time>) and keeps a
    fresh checkpoint. Exit 2 when there is nothing to accept."""
    from audit._kept import KEPT_NAME, accept_log
    from audit._keys import KeyRing
    from audit._log import AuditLog
    from audit._store import Store

    directory = keys_dir(keys_path, data_dir)
    ring = KeyRing(directory)
    if not ring.exists:
        raise InputError(f"no audit signing key in {directory} (pass --data-dir / --keys)")
    kept = _data_dir(data_dir) / KEPT_NAME
    try:
        store = Store(database_url(db, data_dir), create=False)
    except StoreError as exc:
        raise InputError(str(exc)) from exc
    try:
        log = AuditLog(store, ring, kept=kept)
        detail = accept_log(
            log,
            reason=reason,
            by=accepted_by or f"local:{getpass.getuser()}",
            now=datetime.now(UTC),
        )
    except (StoreError, KeyFormatError) as exc:
        store.close()
        raise InputError(str(exc)) from exc
    was = "an unreadable file" if detail["kept"] is None else f"size {detail['kept']['size']}"
    click.echo(
        f"accepted the log of {detail['log']['size']} entries (the kept checkpoint was "
        f"{was}); recorded, and a new checkpoint is kept in {kept}"
    )


# -- archive / prune ------------------------------------------------------------------


@contextmanager
def _archive_copies(locations: Sequence[str]) -> Iterator[list[Path]]:
    """Each archive as a local directory: a directory as it is, an ``s3://`` archive
    downloaded into a temporary one (removed after)."""
    import tempfile

    from audit._archive import S3Archive

    with tempfile.TemporaryDirectory(prefix="docket-archive-") as scratch:
        directories = []
        for number, location in enumerate(locations):
            if not location.startswith("s3://"):
                directories.append(Path(location))
                continue
            try:
                directories.append(S3Archive.parse(location).download(Path(scratch) / str(number)))
            except FormatError as exc:
                raise InputError(str(exc)) from exc
        yield directories


def _archive_end(
    log: AuditLog, before: str | None, up_to: int | None, retention: bool, now: datetime
) -> int:
    """The first entry NOT to archive, from exactly one of the selection flags."""
    from datetime import timedelta

    if sum((before is not None, up_to is not None, retention)) != 1:
        raise InputError("give exactly one of --before DATE, --up-to INDEX, --retention")
    if up_to is not None:
        return up_to + 1
    if retention:
        days = configured().retention_days
        if days is None:
            raise InputError("retention_days is not set (docket.toml or DOCKET_RETENTION_DAYS)")
        cutoff: datetime | None = now - timedelta(days=days)
    else:
        cutoff = _parse_time(before, "--before")
    period = _select_period(log.store, None, cutoff)
    return period.end


@audit.command(name="archive")
@click.option("--to", "destination", required=True, metavar="DIR", help="The archive directory.")
@click.option("--before", help="Archive the entries dated before this time (ISO 8601).")
@click.option("--up-to", type=click.IntRange(min=0), help="Archive up to this index.")
@click.option(
    "--retention",
    is_flag=True,
    help="Archive the entries older than the retention_days setting.",
)
@db_option
@data_dir_option
@keys_option
def archive_cmd(
    destination: str,
    before: str | None,
    up_to: int | None,
    retention: bool,
    db: str | None,
    data_dir: Path | None,
    keys_path: Path | None,
) -> None:
    """Seal the entries from the end of the last segment in --to up to the selection
    (--before, --up-to or --retention), cut back to the last signed checkpoint within
    it, as a self-verifying segment (entries, checkpoint, consistency proof to the
    previous segment, manifest), then read it back and verify it. Nothing is removed
    from the log: `docket audit prune` does that."""
    from contextlib import closing

    from audit._log import AuditLog
    from audit._store import Store

    now = datetime.now(UTC)
    log = _signing_log(db, data_dir, keys_path)
    with closing(log.store):
        try:
            end = _archive_end(log, before, up_to, retention, now)
            segment, size = _write_archive(log.store, destination, end, now)
        except TamperDetected as exc:
            raise CheckFailed(f"the archive written does NOT verify: {exc}") from exc
        except OSError as exc:
            raise InputError(f"cannot write to {destination}: {exc.strerror}") from exc
        except (StoreError, FormatError, ProofError) as exc:
            raise InputError(str(exc)) from exc
    where = f"{destination.rstrip('/')}/{segment.path.name}"
    if log.keys is not None:
        detail = {"first": segment.first, "last": segment.last, "archive": where}
        who = f"local:{getpass.getuser()}"
        _record_operation(
            AuditLog(Store(database_url(db, data_dir)), log.keys), "archive", who, detail
        )
    click.echo(
        f"archived entries {segment.first}..{segment.last} to {where} "
        f"({size / 1e6:.1f} MB), verified against the checkpoint of size "
        f"{segment.checkpoint.size:,}"
    )


def _write_archive(store: Store, destination: str, end: int, now: datetime) -> tuple[Any, int]:
    """Write the next segment, up to the last checkpoint at or before ``end``, to a
    directory or an ``s3://`` archive; the segment (read back and verified) and its bytes."""
    import tempfile

    from audit._archive import S3Archive, next_index, write_segment, write_segment_s3

    remote = S3Archive.parse(destination) if destination.startswith("s3://") else None
    first = remote.next_index() if remote is not None else next_index(Path(destination))
    within = [c for c in store.checkpoints() if first < c.size <= end]
    if not within:
        raise InputError(
            f"nothing to archive: no signed checkpoint between entry {first} and entry {end} "
            f"(the selection ends at {end}; checkpoints are signed as the log grows)"
        )
    with tempfile.TemporaryDirectory(prefix="docket-archive-") as staging:
        if remote is None:
            segment = write_segment(store, Path(destination), checkpoint=within[-1], now=now)
        else:
            segment = write_segment_s3(store, remote, Path(staging), checkpoint=within[-1], now=now)
        return segment, sum(path.stat().st_size for path in segment.path.iterdir())


@audit.command()
@click.option(
    "--archived-in",
    "archived_in",
    required=True,
    metavar="DIR|s3://BUCKET/PREFIX",
    help="The archive whose segments are pruned from the log.",
)
@click.option("--by", "pruned_by", help="Who prunes [the current user].")
@db_option
@data_dir_option
@keys_option
@key_option
@redaction_key_option
def prune(
    archived_in: str,
    pruned_by: str | None,
    db: str | None,
    data_dir: Path | None,
    keys_path: Path | None,
    key_texts: tuple[str, ...],
    redaction_texts: tuple[str, ...],
) -> None:
    """Erase the payloads of the entries archived in --archived-in from the live log
    (leaf hashes, chain and tree stay), after verifying the archive and the log
    together. Each segment is pruned in one transaction with an `audit` entry (action
    `prune`) naming the range and the archive. Exits 2 when there is no archive, 1
    when it does not verify: nothing is pruned then."""
    from audit._archive import prune_archived, verify_with_archives

    log = _signing_log(db, data_dir, keys_path)
    store = log.store
    try:
        keys = _verifier_keys(key_texts) or _verifier_keys(
            (store.meta("verifier_keys") or "").split()
        )
        redaction_keys = _verifier_keys(redaction_texts, "--redaction-key") or _verifier_keys(
            (store.meta("redaction_keys") or "").split()
        )
        with _archive_copies([archived_in]) as directories:
            _, segments = verify_with_archives(
                store, keys, directories, redaction_keys=redaction_keys
            )
        if not segments:
            raise InputError(
                f"no archived segment in {archived_in}: nothing is pruned without a verified "
                "archive (run `docket audit archive --to DIR` first)"
            )
        log.start()
        try:
            done = prune_archived(
                log,
                segments,
                location=archived_in,
                by=pruned_by or f"local:{getpass.getuser()}",
                now=datetime.now(UTC),
            )
        finally:
            log.close()
    except TamperDetected as exc:
        raise CheckFailed(f"archive or log NOT intact, nothing pruned: {exc}") from exc
    except (StoreError, FormatError) as exc:
        raise InputError(str(exc)) from exc
    finally:
        store.close()  # again after log.close(): closing twice is harmless
    if not done:
        click.echo(f"nothing to prune: every entry archived in {archived_in} is pruned already")
    for segment, count in done:
        click.echo(
            f"pruned {count:,} payloads of entries {segment.first}..{segment.last} "
            f"(archived in {archived_in.rstrip('/')}/{segment.path.name})"
        )
