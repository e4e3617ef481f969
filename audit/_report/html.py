"""The report as one self-contained HTML page with inline SVG charts."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from audit._report.model import Report, ReportStatus
from audit._report.wording import (
    SHOWN_FINDINGS,
    clean,
    credential_label,
    period_text,
    place_of,
    utc_time,
)

_ALLOW = "#2e7d32"
_DENY = "#c62828"
_CHART_ROWS = 30

_CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa;
  --ok: #1a7f37; --ok-bg: #dafbe1; --bad: #cf222e; --bad-bg: #ffebe9;
  --warn: #9a6700; --warn-bg: #fff8c5; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 24px; color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
.meta { color: var(--muted); margin: 0 0 12px; }
.status { border-left: 6px solid; border-radius: 6px; padding: 10px 14px; margin: 12px 0; }
.status.ok { border-color: var(--ok); background: var(--ok-bg); }
.status.warn { border-color: var(--warn); background: var(--warn-bg); }
.status.bad { border-color: var(--bad); background: var(--bad-bg); }
.status strong { font-size: 15px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(130px, 1fr));
  gap: 10px; margin: 16px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card .n { display: block; font-size: 24px; font-weight: 600;
  font-variant-numeric: tabular-nums; }
.card .l { color: var(--muted); font-size: 12px; }
.card.bad { border-color: var(--bad); background: var(--bad-bg); color: var(--bad); }
.card.ok { border-color: var(--ok); }
table { border-collapse: collapse; width: 100%; margin: 8px 0; }
th, td { text-align: left; vertical-align: top; padding: 4px 8px;
  border-bottom: 1px solid var(--line); }
thead th { background: var(--soft); font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.t, code { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  overflow-wrap: anywhere; }
tr.total td { font-weight: 600; }
.banner { border-radius: 6px; padding: 10px 14px; font-weight: 600; margin: 8px 0; }
.banner.bad { background: var(--bad); color: #fff; font-size: 16px; }
.banner.ok { background: var(--ok-bg); color: var(--ok); border: 1px solid var(--ok); }
table.findings td { background: var(--bad-bg); }
table.findings td.where { color: var(--bad); font-weight: 600; }
.muted { color: var(--muted); }
strong.bad { color: var(--bad); }
svg.chart { display: block; width: 100%; max-width: 820px; height: auto; margin: 8px 0; }
svg.chart text { font-size: 12px; fill: var(--ink); }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  section, .cards, svg.chart, tr { break-inside: avoid; }
  h2 { break-after: avoid; }
  thead { display: table-header-group; }
}
"""


def _h(value: str | int | None) -> str:
    """Any value as HTML text: controls escaped, markup characters escaped."""
    if value is None:
        return '<span class="muted">-</span>'
    text = value if isinstance(value, str) else f"{value:,}"
    return html.escape(clean(text), quote=True)


def _short(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _svg_bars(
    chart_id: str,
    title: str,
    series: Sequence[tuple[str, str]],
    rows: Sequence[tuple[str, Sequence[int]]],
) -> str:
    """A horizontal (stacked, when there are several ``series``) bar chart as inline SVG.

    ``series`` are (name, colour); each row is (label, one value per series). Every bar
    has an SVG ``<title>`` naming its group, series and value.
    """
    label_w, bars_w, row_h, bar_h, top = 250, 460, 22, 14, 26
    width = label_w + bars_w + 130  # room for the figures after the longest bar
    height = top + row_h * len(rows) + 4
    scale = max((sum(values) for _, values in rows), default=0) or 1
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" font-size="12" '
        f'aria-labelledby="{chart_id}-title">',
        f'<title id="{chart_id}-title">{_h(title)}</title>',
    ]
    x = label_w
    for name, colour in series:
        parts.append(
            f'<rect x="{x}" y="6" width="12" height="12" fill="{colour}"/>'
            f'<text x="{x + 16}" y="16">{_h(name)}</text>'
        )
        x += 24 + 8 * len(name)
    for number, (label, values) in enumerate(rows):
        y = top + number * row_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + bar_h - 2}" text-anchor="end">'
            f"<title>{_h(label)}</title>{_h(_short(label))}</text>"
        )
        x_pos = float(label_w)
        for (name, colour), value in zip(series, values, strict=True):
            if value:
                bar = bars_w * value / scale
                parts.append(
                    f'<rect x="{x_pos:.1f}" y="{y}" width="{max(bar, 1.0):.1f}" '
                    f'height="{bar_h}" fill="{colour}">'
                    f"<title>{_h(label)}: {value:,} {_h(name)}</title></rect>"
                )
                x_pos += bar
        figures = " / ".join(f"{value:,}" for value in values)
        parts.append(f'<text x="{x_pos + 6:.1f}" y="{y + bar_h - 2}">{figures}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _html_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Sequence[int] = (),
    css: str = "",
    total: Sequence[str] | None = None,
) -> str:
    """A table of already-escaped cells; ``numeric`` column positions align right."""

    def cells(row: Sequence[str], tag: str) -> str:
        return "".join(
            f'<{tag} class="num">{c}</{tag}>' if i in numeric else f"<{tag}>{c}</{tag}>"
            for i, c in enumerate(row)
        )

    head = "".join(
        f'<th scope="col" class="num">{_h(h)}</th>'
        if i in numeric
        else f'<th scope="col">{_h(h)}</th>'
        for i, h in enumerate(headers)
    )
    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    if total is not None:
        body += f'<tr class="total">{cells(total, "td")}</tr>'
    klass = f' class="{css}"' if css else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_status(status: ReportStatus) -> str:
    if not status.intact:
        return (
            '<div class="status bad" role="alert"><strong>Log NOT intact.</strong> '
            f"{_h(status.problem or 'the log does not verify')}<br>"
            "The counts below come from entries that did not verify.</div>"
        )
    if status.checkpoint is None:
        return (
            '<div class="status warn"><strong>Log intact</strong> '
            f"({_h(status.tree_size)} entries), but not checked against a signed "
            "checkpoint.</div>"
        )
    return (
        f'<div class="status ok"><strong>Log intact</strong> ({_h(status.tree_size)} '
        f"entries), verified against checkpoint <code>{_h(status.checkpoint)}</code>.</div>"
    )


def _card(value: int, label: str, css: str = "") -> str:
    klass = f"card {css}".strip()
    return (
        f'<div class="{klass}"><span class="n">{_h(value)}</span>'
        f'<span class="l">{label}</span></div>'
    )


def render_html(report: Report) -> str:
    status = report.status
    issued = sum(c.issued for c in report.credentials)
    refused = sum(c.refused for c in report.credentials)
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Defence in depth: even a string that escaped escaping could not load or run anything.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Docket residency and compliance report: {_h(period_text(report))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<header><h1>Docket residency and compliance report</h1>",
        f'<p class="meta">Period: {_h(period_text(report))}<br>'
        f"Generated: {_h(utc_time(report.generated_at))}",
    ]
    if report.first_time is not None and report.last_time is not None:
        first, last = utc_time(report.first_time), utc_time(report.last_time)
        out.append(f"<br>Entries from {_h(first)} to {_h(last)}")
    out += ["</p>", _html_status(status), "</header>", "<main>"]

    violation_css = "bad" if report.violations else "ok"
    out += [
        '<section aria-label="Summary"><div class="cards">',
        _card(report.entries, "entries in period"),
        _card(report.allowed, "allowed decisions"),
        _card(report.denied, "denied decisions"),
        _card(report.violations, "residency violations", violation_css),
        _card(issued, "credentials issued"),
        _card(refused, "credentials refused"),
        _card(report.redacted, "redacted entries"),
        "</div></section>",
    ]

    out.append('<section><h2 id="findings">Residency findings</h2>')
    if not report.findings:
        out.append(
            '<div class="banner ok">No residency violations: no data was accessed or placed '
            "outside its declared residency.</div>"
        )
    else:
        out.append(
            f'<div class="banner bad" role="alert">{report.violations:,} RESIDENCY '
            f"VIOLATION{'S' if report.violations != 1 else ''}: data was allowed outside "
            "its declared residency.</div>"
        )
        out.append(
            _html_table(
                (
                    "Entry",
                    "Time",
                    "Kind",
                    "Subject",
                    "Action",
                    "Resource",
                    "Classification",
                    "Residency",
                    "Where",
                    "Decision id",
                ),
                (
                    (
                        _h(str(f.index)),
                        _h(utc_time(f.time)),
                        _h(f.kind),
                        f"<code>{_h(f.subject)}</code>",
                        f"<code>{_h(f.action)}</code>",
                        f"<code>{_h(f.resource)}</code>",
                        _h(f.classification),
                        _h(", ".join(f.residency)),
                        _h(place_of(f)),
                        f"<code>{_h(f.decision_id)}</code>",
                    )
                    for f in report.findings[:SHOWN_FINDINGS]
                ),
                css="findings",
            )
        )
        if report.violations > SHOWN_FINDINGS:
            hidden = report.violations - SHOWN_FINDINGS
            out.append(
                f'<p class="banner bad">... and {hidden:,} more findings: use '
                "<code>--format json</code> or <code>csv</code> for all of them.</p>"
            )
    out.append("</section>")

    out.append('<section><h2 id="decisions">Decisions by classification and jurisdiction</h2>')
    if report.decisions:
        out.append(
            '<p class="muted">Access decisions, placements and admissions; jurisdiction is '
            "where the request came from, or the chosen site's for a placement.</p>"
        )
        rows = [
            (f"{cell.classification} / {cell.jurisdiction}", (cell.allow, cell.deny))
            for cell in report.decisions
        ]
        out.append(
            _svg_bars(
                "chart-decisions",
                "Allowed and denied decisions by classification and jurisdiction",
                (("allow", _ALLOW), ("deny", _DENY)),
                rows[:_CHART_ROWS],
            )
        )
        if len(rows) > _CHART_ROWS:
            out.append(f'<p class="muted">Chart shows the first {_CHART_ROWS} groups.</p>')
        out.append(
            _html_table(
                ("Classification", "Jurisdiction", "Allow", "Deny"),
                (
                    (_h(c.classification), _h(c.jurisdiction), _h(c.allow), _h(c.deny))
                    for c in report.decisions
                ),
                numeric=(2, 3),
                total=("All", "", _h(report.allowed), _h(report.denied)),
            )
        )
    else:
        out.append('<p class="muted">No decisions, placements or admissions in this period.</p>')
    out.append("</section>")

    out.append('<section><h2 id="denials">Denials by policy</h2>')
    if report.denials:
        out.append(
            '<p class="muted">Each denial counts once for every policy that determined it.</p>'
        )
        out.append(
            _svg_bars(
                "chart-denials",
                "Denials by policy",
                (("denials", _DENY),),
                [(policy, (count,)) for policy, count in report.denials[:_CHART_ROWS]],
            )
        )
        if len(report.denials) > _CHART_ROWS:
            out.append(f'<p class="muted">Chart shows the top {_CHART_ROWS} policies.</p>')
        out.append(
            _html_table(
                ("Policy", "Denials"),
                ((f"<code>{_h(p)}</code>", _h(n)) for p, n in report.denials),
                numeric=(1,),
            )
        )
    else:
        out.append('<p class="muted">No denials in this period.</p>')
    out.append("</section>")

    out.append('<section><h2 id="credentials">Attestations and certificates</h2>')
    if issued or refused:
        out.append(
            _svg_bars(
                "chart-credentials",
                "Attestations and certificates issued and refused",
                (("issued", _ALLOW), ("refused", _DENY)),
                [(credential_label(c.kind), (c.issued, c.refused)) for c in report.credentials],
            )
        )
    else:
        out.append('<p class="muted">No attestations or certificates in this period.</p>')
    out.append(
        _html_table(
            ("Kind", "Issued", "Refused"),
            ((credential_label(c.kind), _h(c.issued), _h(c.refused)) for c in report.credentials),
            numeric=(1, 2),
        )
    )
    refusals = [(c.kind, reason, n) for c in report.credentials for reason, n in c.refusals]
    if refusals:
        out.append(
            _html_table(
                ("Refused", "Reason", "Count"),
                ((_h(kind), _h(reason), _h(n)) for kind, reason, n in refusals),
                numeric=(2,),
            )
        )
    out.append("</section>")

    out.append('<section><h2 id="totals">Entries by kind</h2>')
    out.append(
        _html_table(
            ("Kind", "Entries"),
            [(_h(kind), _h(count)) for kind, count in report.totals]
            + [("redacted (payload erased, unclassifiable)", _h(report.redacted))],
            numeric=(1,),
            total=("All", _h(report.entries)),
        )
    )
    out.append("</section>")

    redacted = ", ".join(str(index) for index in status.redacted[:50])
    if len(status.redacted) > 50:
        redacted += f", \u2026 ({len(status.redacted):,} in all)"
    out.append('<section><h2 id="verification">Verification</h2>')
    out.append(
        _html_table(
            ("Check", "Result"),
            (
                ("Intact", "yes" if status.intact else '<strong class="bad">NO</strong>'),
                ("Tree size", _h(status.tree_size)),
                ("Checkpoint", f"<code>{_h(status.checkpoint or 'none')}</code>"),
                ("Problem", _h(status.problem)),
                ("Redacted entries in the log", _h(redacted or "none")),
            ),
        )
    )
    out.append("</section></main>")
    out.append(
        "<footer>Produced by <code>docket audit report</code> from the tamper-evident audit "
        "log. Residency findings list every allowed access to, or placement of, data "
        "outside its declared residency, whatever its classification, one per decision; "
        "the expected number is zero.</footer>"
    )
    out.append("</body></html>\n")
    return "\n".join(out)
