"""The report as one self-contained HTML page: ``templates/report.html.j2`` with
``templates/report.css`` inlined, and inline SVG bar charts.

Escaping: the Jinja2 environment autoescapes, and its ``finalize`` first passes every
printed string through :func:`~audit._report.wording.clean`, so a caller-supplied string
can neither inject markup nor carry control or bidi-override characters; only the
:class:`~markupsafe.Markup` the ``breakable`` filter builds (from escaped text) is
printed as is. ``StrictUndefined``: a misspelt name fails the render instead of
printing nothing.

Long tokens (entity uids, SPIFFE IDs, checkpoints, keys) never wrap mid-token: the
``breakable`` filter puts ``<wbr>`` after each run of ``/``, ``:`` and ``.``, the CSS
keeps the rest of a token whole (``word-break: keep-all``, ``overflow-wrap: normal``),
and every table sits in a ``.scroll`` container that scrolls sideways on its own, so at
800 px the page itself never does.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from markupsafe import Markup, escape

from audit._report.fleet import COMPLETE, FleetReport
from audit._report.model import Report
from audit._report.wording import (
    SHOWN_FINDINGS,
    SITE_COLUMNS,
    clean,
    coverage_line,
    credential_label,
    gap_text,
    no_decisions,
    period_text,
    place_of,
    site_row,
    utc_time,
)

if TYPE_CHECKING:
    import jinja2

_ALLOW = "#2e7d32"
_DENY = "#c62828"
_CHART_ROWS = 30
_SHOWN_REDACTED = 50
_BREAK_AFTER = re.compile(r"([/:.]+)")
_DASH = Markup('<span class="muted">-</span>')


def _finalize(value: Any) -> Any:
    """What ``{{ value }}`` prints: Markup as is, ``None`` as a muted dash, any other
    string with its control and bidi-override characters escaped (autoescape then
    escapes its markup characters)."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return _DASH
    if isinstance(value, bool):
        raise TypeError("the HTML report prints a boolean: say what it means instead")
    return clean(value) if isinstance(value, str) else value


def _breakable(value: str | None) -> Markup:
    """``value`` escaped, with a line-break opportunity (``<wbr>``) after each run of
    ``/``, ``:`` and ``.``: the only places a long token may wrap."""
    if value is None:
        return _DASH
    return Markup(_BREAK_AFTER.sub(r"\1<wbr>", str(escape(clean(value)))))  # noqa: S704


def _num(value: int) -> str:
    return f"{value:,}"


@functools.cache
def _environment() -> jinja2.Environment:
    # Imported here: `docket audit` commands that print no HTML do not pay for Jinja2.
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("audit._report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        breakable=_breakable,
        num=_num,
        utc=utc_time,
        place=place_of,
        credential=credential_label,
        gap=gap_text,
    )
    return env


# -- charts ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Bar:
    x: str
    width: str
    colour: str
    name: str
    value: int


@dataclass(frozen=True, slots=True)
class _Row:
    y: int
    text_y: int
    label: str
    short: str
    bars: tuple[_Bar, ...]
    figures_x: str
    figures: str


@dataclass(frozen=True, slots=True)
class _Legend:
    x: int
    name: str
    colour: str


@dataclass(frozen=True, slots=True)
class _Chart:
    """A horizontal bar chart's geometry; the template draws it as inline SVG.

    ``cut`` says that rows beyond :data:`_CHART_ROWS` were left out.
    """

    id: str
    title: str
    width: int
    height: int
    label_x: int
    bar_h: int
    legend: tuple[_Legend, ...]
    rows: tuple[_Row, ...]
    cut: bool


def _short(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _chart(
    chart_id: str,
    title: str,
    series: Sequence[tuple[str, str]],
    rows: Sequence[tuple[str, Sequence[int]]],
) -> _Chart:
    """A horizontal (stacked, when there are several ``series``) bar chart of the first
    :data:`_CHART_ROWS` ``rows``.

    ``series`` are (name, colour); each row is (label, one value per series). Every bar
    has an SVG ``<title>`` naming its group, series and value.
    """
    label_w, bars_w, row_h, bar_h, top = 250, 460, 22, 14, 26
    shown = rows[:_CHART_ROWS]
    scale = max((sum(values) for _, values in shown), default=0) or 1
    legend: list[_Legend] = []
    x = label_w
    for name, colour in series:
        legend.append(_Legend(x=x, name=name, colour=colour))
        x += 24 + 8 * len(name)
    drawn: list[_Row] = []
    for number, (label, values) in enumerate(shown):
        y = top + number * row_h
        x_pos = float(label_w)
        bars: list[_Bar] = []
        for (name, colour), value in zip(series, values, strict=True):
            if value:
                bar = bars_w * value / scale
                bars.append(_Bar(f"{x_pos:.1f}", f"{max(bar, 1.0):.1f}", colour, name, value))
                x_pos += bar
        drawn.append(
            _Row(
                y=y,
                text_y=y + bar_h - 2,
                label=label,
                short=_short(label),
                bars=tuple(bars),
                figures_x=f"{x_pos + 6:.1f}",
                figures=" / ".join(_num(value) for value in values),
            )
        )
    return _Chart(
        id=chart_id,
        title=title,
        width=label_w + bars_w + 130,  # room for the figures after the longest bar
        height=top + row_h * len(shown) + 4,
        label_x=label_w - 8,
        bar_h=bar_h,
        legend=tuple(legend),
        rows=tuple(drawn),
        cut=len(rows) > len(shown),
    )


# -- the page --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Card:
    value: int
    label: str
    css: str = ""


def _cards(report: Report) -> tuple[_Card, ...]:
    """The summary figures at the top, each labelled with exactly what it counts."""
    return (
        _Card(report.entries, "entries in period"),
        _Card(report.allowed, "allowed (decisions, placements, admissions)"),
        _Card(report.denied, "denied (decisions, placements, admissions)"),
        _Card(report.violations, "residency violations", "bad" if report.violations else "ok"),
        _Card(sum(c.issued for c in report.credentials), "credentials issued"),
        _Card(sum(c.refused for c in report.credentials), "credentials refused"),
        _Card(report.redacted, "redacted entries in period"),
    )


def render_html(report: Report | FleetReport) -> str:
    """``report`` as one self-contained HTML page (nothing is loaded from elsewhere);
    a fleet's report has its sites' coverage first, then the verified sites together."""
    sites = None
    if isinstance(report, FleetReport):
        sites = [(site_row(s), s.state != COMPLETE, s.problem) for s in report.sites]
        report = report.total
    status = report.status
    credentials = [(credential_label(c.kind), (c.issued, c.refused)) for c in report.credentials]
    redacted = ", ".join(str(index) for index in status.redacted[:_SHOWN_REDACTED])
    if len(status.redacted) > _SHOWN_REDACTED:
        redacted += f", \u2026 ({len(status.redacted):,} in all)"
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            report=report,
            status=status,
            sites=sites,
            site_columns=SITE_COLUMNS,
            period=period_text(report),
            generated=utc_time(report.generated_at),
            first_entry=None if report.first_time is None else utc_time(report.first_time),
            last_entry=None if report.last_time is None else utc_time(report.last_time),
            cards=_cards(report),
            coverage=coverage_line(report),
            no_decisions=no_decisions(report),
            findings=report.findings[:SHOWN_FINDINGS],
            hidden_findings=max(report.violations - SHOWN_FINDINGS, 0),
            decisions_chart=_chart(
                "chart-decisions",
                "Allowed and denied decisions by classification and jurisdiction",
                (("allow", _ALLOW), ("deny", _DENY)),
                [
                    (f"{c.classification} / {c.jurisdiction}", (c.allow, c.deny))
                    for c in report.decisions
                ],
            ),
            denials_chart=_chart(
                "chart-denials",
                "Denials by policy",
                (("denials", _DENY),),
                [(policy, (count,)) for policy, count in report.denials],
            ),
            credentials_chart=_chart(
                "chart-credentials",
                "Attestations and certificates issued and refused",
                (("issued", _ALLOW), ("refused", _DENY)),
                credentials,
            )
            if any(sum(values) for _, values in credentials)
            else None,
            refusals=[(c.kind, reason, n) for c in report.credentials for reason, n in c.refusals],
            redacted_in_log=redacted,
        )
    )
