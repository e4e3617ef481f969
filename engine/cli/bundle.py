"""``docket bundle``: a replica's accepted bundle revisions (anti-rollback)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from audit.cli import InputError
from engine._core.bundle import MAX_REVISION
from engine._errors import BundleError
from engine.cli.common import settings_of


@click.group(name="bundle")
def bundle_cli() -> None:
    """A replica's accepted bundle revisions (anti-rollback)."""


@bundle_cli.command()
@click.argument("revision", type=click.IntRange(1, MAX_REVISION))
@click.option("--name", help="The bundle's [bundle] name [the one in force].")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="State directory [./docket-data]."
)
@click.pass_context
def pin(ctx: click.Context, revision: int, name: str | None, data_dir: Path | None) -> None:
    """Let the next bundle of NAME at exactly REVISION in, once, even if it is lower than
    the highest accepted (a deliberate rollback). The server that accepts it writes the
    pin to the audit log."""
    from engine._service.bundle_revisions import RevisionGuard

    directory = settings_of(ctx).with_flags(data_dir=data_dir).data_dir
    try:
        pinned = RevisionGuard(directory, signed=False).pin(revision, datetime.now(UTC), name=name)
    except BundleError as exc:
        raise InputError(str(exc)) from exc
    click.echo(
        f"pinned {pinned.name} revision {pinned.revision} in {directory}: the next bundle of "
        "that revision is accepted once (a running server sees it at its next poll)"
    )
