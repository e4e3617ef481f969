"""``docket bundle``: a replica's accepted bundle revisions (anti-rollback), and
publishing a signed bundle to a source (``push``) or reading one back (``pull``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from audit.cli import InputError
from engine._core.bundle import MAX_REVISION
from engine._errors import BundleError
from engine.cli.common import key_option, load_bundle, public_key, settings_of


@click.group(name="bundle")
def bundle_cli() -> None:
    """A replica's accepted bundle revisions (anti-rollback); publishing bundles."""


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


@bundle_cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--to", "url", required=True, metavar="URL", help="https://…, http://… or oci://host/repo:tag."
)
@key_option
@click.pass_context
def push(ctx: click.Context, bundle: Path, url: str, bundle_key: Path | None) -> None:
    """Publish the signed BUNDLE (a directory or .tar.gz) at URL: an HTTP PUT of its
    .tar.gz (a static server or object store), or an OCI artifact (media type
    application/vnd.docket.bundle.v1) pushed to a registry. The bundle must carry a
    name, a revision and a signature (``docket policy sign``); with --bundle-key the
    signature is checked first."""
    from engine._core.signing import SIGNATURE_FILE
    from engine._service.bundle_source import publish

    settings = settings_of(ctx).with_flags(bundle_public_key=bundle_key)
    loaded = load_bundle(bundle, settings.bundle_public_key)
    if SIGNATURE_FILE not in loaded.files or loaded.revision is None:
        raise InputError(
            f"bundle {bundle} is not signed with a name and revision: run "
            "docket policy sign first (replicas refuse unsigned bundles)"
        )
    try:
        where = publish(loaded, url, timeout=settings.bundle_pull_timeout_seconds)
    except BundleError as exc:
        raise InputError(f"cannot push to {url}: {exc}") from exc
    click.echo(
        f"pushed {loaded.name} revision {loaded.revision} ({loaded.version[:19]}) to {where}"
    )


@bundle_cli.command()
@click.option(
    "--from",
    "url",
    required=True,
    metavar="URL",
    help="https://…, http://… or oci://host/repo:tag.",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Also write the .tar.gz here."
)
@key_option
@click.pass_context
def pull(ctx: click.Context, url: str, output: Path | None, bundle_key: Path | None) -> None:
    """Fetch the bundle at URL as a replica would (size bound, timeout, completeness,
    signature with --bundle-key) and say what it is: for testing a source. Exits 1 when
    the source cannot be read or the bundle is refused."""
    import tempfile

    from engine._core.bundle import PolicyBundle
    from engine._service.bundle_source import Fetched, Limits, open_source
    from engine._service.bundle_source.transfer import check_complete

    settings = settings_of(ctx).with_flags(bundle_public_key=bundle_key)
    key = public_key(settings.bundle_public_key)
    limits = Limits(settings.bundle_max_bytes, settings.bundle_pull_timeout_seconds)
    with tempfile.TemporaryDirectory(prefix="docket-pull-") as directory:
        into = Path(directory) / "bundle.tar.gz"
        try:
            fetched = open_source(url).fetch(into, tag=None, limits=limits)
            assert isinstance(fetched, Fetched)  # no tag asked: never Unchanged
            check_complete(into, url)
            loaded = PolicyBundle.load(into, public_key=key)
        except BundleError as exc:
            click.echo(f"docket bundle pull: {url}: {exc}", err=True)
            ctx.exit(1)
        if output is not None:
            output.write_bytes(into.read_bytes())
    signed = f", signed by {loaded.signed_by}" if loaded.signed_by else " (signature not checked)"
    click.echo(
        f"{url}: bundle {loaded.name} revision {loaded.revision} {loaded.version[:19]}"
        f" ({len(loaded.policies)} policies{signed}); served as {fetched.tag or fetched.digest}"
    )
