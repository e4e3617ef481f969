"""``docket fleet status``: one row per site, as the collector holds it — entries held,
the last cosigned checkpoint (size, age), the backlog the site reported (its log's head
minus what the collector holds), the bundle it runs and when it last pulled one ("—"
when the site does not report it), and the incidents (forks) recorded. A site is
flagged LAGGING when its last cosignature is older than ``--lag-seconds`` or its
backlog is over ``--lag-entries``, FORKED once an incident is recorded, NEVER before its
first push; the command then exits 1.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from audit.cli import CheckFailed, InputError

DASH = "—"


@click.group()
def fleet() -> None:
    """The fleet of edge sites, as the collector sees it."""


def _state(site: dict[str, Any], now: datetime, lag_seconds: float, lag_entries: int) -> str:
    if site["incidents"]:
        return "FORKED"
    if site["cosigned"] is None:
        return "NEVER"
    age = (now - datetime.fromisoformat(site["cosigned"])).total_seconds()
    backlog = site["backlog"] or 0
    return "LAGGING" if age > lag_seconds or backlog > lag_entries else "ok"


def _age(cosigned: str | None, now: datetime) -> str:
    if cosigned is None:
        return DASH
    return f"{(now - datetime.fromisoformat(cosigned)).total_seconds():.0f}s ago"


@fleet.command()
@click.option("--collector", "url", metavar="URL", help="The collector [setting collector_url].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option(
    "--lag-seconds",
    type=float,
    default=60.0,
    show_default=True,
    help="Flag a site whose last cosigned checkpoint is older than this.",
)
@click.option(
    "--lag-entries",
    type=int,
    default=10_000,
    show_default=True,
    help="Flag a site whose reported backlog is larger than this.",
)
@click.pass_obj
def status(obj: Any, url: str | None, as_json: bool, lag_seconds: float, lag_entries: int) -> None:
    """One row per site; exit 1 when a site lags, forked or never pushed."""
    from audit import CollectorClient, KeyFormatError, WitnessError

    url = url or getattr(obj, "collector_url", None)
    if not url:
        raise InputError("no collector: pass --collector URL or set collector_url")
    try:
        sites = CollectorClient(url, timeout=10).statuses()
    except (KeyFormatError, WitnessError) as exc:
        raise InputError(str(exc)) from exc
    now = datetime.now(UTC)
    for site in sites:
        head = site["head"]
        site["backlog"] = None if head is None else max(0, head - site["size"])
        site["state"] = _state(site, now, lag_seconds, lag_entries)
    if as_json:
        click.echo(json.dumps(sites, indent=2))
    else:
        header = ("SITE", "ENTRIES", "COSIGNED", "AGE", "BACKLOG", "BUNDLE", "PULLED", "FORKS")
        rows = [header] + [
            (
                s["site"],
                str(s["size"]),
                str(s["size"]) if s["cosigned"] else DASH,
                _age(s["cosigned"], now),
                DASH if s["backlog"] is None else str(s["backlog"]),
                s["bundle_revision"] or DASH,
                s["bundle_pulled"] or DASH,
                str(s["incidents"]),
            )
            for s in sites
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        flags = ["STATE", *(s["state"] for s in sites)]
        for row, flag in zip(rows, flags, strict=True):
            line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            click.echo(f"{line}  {flag}".rstrip())
        for site in sites:
            if site["last_incident"]:
                click.echo(f"{site['site']}: {site['last_incident']}")
    flagged = [s["site"] for s in sites if s["state"] != "ok"]
    if flagged:
        raise CheckFailed(f"{len(flagged)} site(s) need attention: {', '.join(flagged)}")
