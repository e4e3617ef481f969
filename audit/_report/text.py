"""The report as a terminal table (rich), colour optional."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from audit._report.fleet import COMPLETE, FleetReport
from audit._report.model import Report
from audit._report.wording import (
    SHOWN_FINDINGS,
    SITE_COLUMNS,
    clean,
    coverage_line,
    credential_label,
    entry_label,
    gap_text,
    no_decisions,
    period_text,
    place_of,
    site_row,
    status_line,
    utc_time,
)


def _t(value: str | int | None, style: str = "") -> Text:
    """Entry-derived text as a rich ``Text``: never read as markup, controls escaped."""
    text = "-" if value is None else value if isinstance(value, str) else f"{value:,}"
    return Text(clean(text), style=style)


def _table(*columns: str, numeric: Sequence[str] = ()) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    for column in columns:
        if column in numeric:
            table.add_column(column, justify="right", no_wrap=True)
        else:
            table.add_column(column, overflow="fold")
    return table


def render_table(report: Report | FleetReport, *, color: bool) -> str:
    fleet = report if isinstance(report, FleetReport) else None
    report = report.total if isinstance(report, FleetReport) else report
    out = io.StringIO()
    console = Console(
        file=out,
        width=100,
        color_system="standard" if color else None,
        force_terminal=color,
        no_color=not color,
        markup=False,
        highlight=False,
        emoji=False,
        legacy_windows=False,
    )

    def heading(title: str) -> None:
        console.print()
        console.print(Text(title, style="bold"))
        console.print(Text("=" * len(title)))

    title = "Docket fleet residency and compliance report" if fleet else "Docket residency"
    console.print(Text(title + (" and compliance report" * (fleet is None)), style="bold"))
    console.print(_t(f"Period:    {period_text(report)}"))
    console.print(_t(f"Generated: {utc_time(report.generated_at)}"))
    status = report.status
    console.print(
        _t(f"Log:       {status_line(status)}", "bold green" if status.intact else "bold red")
    )
    console.print(
        _t(f"Coverage:  {coverage_line(report)}", "bold green" if report.complete else "bold red")
    )
    if not report.complete:
        heading("Coverage")
        for gap in report.gaps:
            console.print(_t(gap_text(gap), "red"))
    if fleet is not None:
        heading("Sites (the totals below add up the verified ones)")
        table = _table(*SITE_COLUMNS[:-2], numeric=SITE_COLUMNS[2:-2])
        for site in fleet.sites:
            row = site_row(site)
            style = "" if site.state == COMPLETE else "bold red"
            table.add_row(_t(row[0]), _t(row[1], style), *(_t(cell) for cell in row[2:-2]))
        console.print(table)
        for site in fleet.sites:
            row = site_row(site)
            said = f"{site.site}: entries {row[-2]} .. {row[-1]}"
            console.print(_t(said + ("" if site.problem is None else f"; {site.problem}")))

    heading("Verification")
    table = _table("check", "result")
    table.add_row("intact", _t("yes" if status.intact else "NO", "" if status.intact else "red"))
    table.add_row("tree size", _t(status.tree_size))
    table.add_row("checkpoint", _t(status.checkpoint or "none (not checked against a signature)"))
    table.add_row("problem", _t(status.problem))
    table.add_row("redacted in log", _t(len(status.redacted)))
    console.print(table)

    heading("Totals")
    table = _table("kind", "entries", numeric=("entries",))
    for kind, count in report.totals:
        table.add_row(kind, _t(count))
    table.add_row(_t("redacted (unclassifiable)"), _t(report.redacted))
    table.add_row(_t("all", "bold"), _t(report.entries, "bold"))
    console.print(table)

    heading("Decisions by classification and jurisdiction")
    if report.decisions:
        table = _table("classification", "jurisdiction", "allow", "deny", numeric=("allow", "deny"))
        for cell in report.decisions:
            table.add_row(
                _t(cell.classification), _t(cell.jurisdiction), _t(cell.allow), _t(cell.deny)
            )
        table.add_row(_t("all", "bold"), _t(""), _t(report.allowed), _t(report.denied))
        console.print(table)
    else:
        console.print(_t(no_decisions(report)))

    heading("Residency findings")
    if not report.findings:
        console.print(_t("NONE: no data was accessed or placed outside its declared residency."))
    else:
        console.print(
            _t(
                f"VIOLATIONS: {report.violations}: data was allowed outside its declared residency",
                "bold red",
            )
        )
        # One block per finding: entry uids are long and would not fit as columns.
        for f in report.findings[:SHOWN_FINDINGS]:
            console.print()
            console.print(
                Text.assemble(
                    (entry_label(f), "bold"),
                    f"  {utc_time(f.time)}  {f.kind}  ",
                    _t(f.classification),
                    "  residency ",
                    _t(" ".join(f.residency)),
                    "  at ",
                    _t(place_of(f), "bold red"),
                )
            )
            grid = Table.grid(padding=(0, 2))
            grid.add_column(no_wrap=True)
            grid.add_column(overflow="fold")
            grid.add_row("    subject", _t(f.subject))
            grid.add_row("    action", _t(f.action))
            grid.add_row("    resource", _t(f.resource))
            if f.sites:
                grid.add_row("    sites outside", _t(" ".join(f.sites)))
            grid.add_row("    decision id", _t(f.decision_id))
            console.print(grid)
        if report.violations > SHOWN_FINDINGS:
            hidden = report.violations - SHOWN_FINDINGS
            console.print(_t(f"... and {hidden:,} more: use --format json or csv for all."))

    heading("Denials by policy")
    if report.denials:
        table = _table("policy", "denials", numeric=("denials",))
        for policy, count in report.denials:
            table.add_row(_t(policy), _t(count))
        console.print(table)
    else:
        console.print("No denials in this period.")

    heading("Attestations and certificates")
    table = _table("kind", "issued", "refused", numeric=("issued", "refused"))
    for c in report.credentials:
        table.add_row(credential_label(c.kind), _t(c.issued), _t(c.refused))
    console.print(table)
    refusals = [(c.kind, reason, n) for c in report.credentials for reason, n in c.refusals]
    if refusals:
        table = _table("refused", "reason", "count", numeric=("count",))
        for kind, reason, count in refusals:
            table.add_row(kind, _t(reason), _t(count))
        console.print(table)
    # rich pads every cell to its column's width.
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())
