"""``docket collector serve``: the central collector of edge sites' logs. Sites push their
new entries with a signed checkpoint and a consistency proof; the collector recomputes
the tree, stores the entries in PostgreSQL (or SQLite) and cosigns the checkpoint as a
C2SP witness (:mod:`audit._collector`). ``docket fleet status`` reads it;
``docket audit verify-fleet`` verifies what it holds.
"""

from __future__ import annotations

from pathlib import Path

import click

from audit.cli import InputError
from engine.cli.witness import A_FILE


@click.group()
def collector() -> None:
    """The central collector of edge sites' audit logs (a witness that keeps the entries)."""


@collector.command()
@click.option("--listen", default="127.0.0.1:7390", show_default=True, help="HOST:PORT.")
@click.option(
    "--database-url",
    required=True,
    metavar="URL",
    help="Where the collector keeps sites' entries: postgresql://… (or sqlite:///…).",
)
@click.option(
    "--key", "key_path", type=A_FILE, required=True, help="The collector's witness key "
    "(made by docket witness key PATH --new --name N).",
)  # fmt: skip
@click.option(
    "--site",
    "sites",
    multiple=True,
    metavar="NAME=VKEY",
    help="A site and its checkpoint verifier key (repeat for more keys or sites).",
)
def serve(listen: str, database_url: str, key_path: Path, sites: tuple[str, ...]) -> None:
    """Take sites' pushes (POST /push), serve their status (GET /sites) until SIGTERM
    or SIGINT."""
    import structlog

    from audit import (
        ALG_COSIGNATURE_V1,
        AuditError,
        Collector,
        CollectorApp,
        CollectorStore,
        Cosigner,
    )
    from audit.note import read_signer
    from engine.cli.witness import keys_by_name, listen_on, serve_http

    try:
        signer = read_signer(key_path, ALG_COSIGNATURE_V1)
        store = CollectorStore(database_url)
    except AuditError as exc:
        raise InputError(str(exc)) from exc
    try:
        for name, keys in keys_by_name(sites, "--site").items():
            store.add_site(name, keys)
        if not store.statuses():
            raise InputError("the collector knows no site: pass --site NAME=VKEY")
        sock = listen_on(listen)
        host, port = sock.getsockname()[:2]
        names = ", ".join(status.name for status in store.statuses())
        click.echo(
            f"docket: collector listening on http://{host}:{port} (sites: {names})", err=True
        )
        click.echo(f"docket: collector witness key {signer.verifier()}", err=True)
        try:
            serve_http(CollectorApp(Collector(store, Cosigner([signer]))), sock)
        finally:
            sock.close()
    finally:
        store.close()
    structlog.get_logger("docket.collector").info("collector.stopped")
