"""The report as one self-contained HTML page."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from report_samples import INTACT, XSS, at, build, credential, decision, placement

from audit._entry import Entry
from audit._report import Report, ReportStatus, render


def html_of(report: Report) -> str:
    return render(report, "html")


def test_html_is_self_contained() -> None:
    text = html_of(build())
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>" in text
    assert "http://" not in text
    assert "https://" not in text
    assert not re.search(r"\b(src|href)\s*=", text)
    assert "<script" not in text
    assert "<link" not in text
    assert "@import" not in text
    assert "url(" not in text


def test_html_has_charts_tables_and_the_verification_status() -> None:
    text = html_of(build())
    assert text.count("<svg") == 3
    assert "<title>restricted / us: 1 allow</title>" in text
    assert '<th scope="col">' in text
    assert "status ok" in text
    assert "docket/3f2a size 42 root AAAA" in text
    assert "3 RESIDENCY VIOLATIONS" in text
    assert 'table class="findings"' in text


def test_html_says_no_violations_in_green_when_compliant() -> None:
    text = html_of(build([(0, decision(0))]))
    assert "No residency violations" in text
    assert 'class="findings"' not in text
    assert "VIOLATION" not in text


def test_html_shows_a_log_that_did_not_verify_in_red() -> None:
    broken = ReportStatus(
        intact=False,
        tree_size=0,
        checkpoint=None,
        problem="entry 3: hash chain broken",
        redacted=(),
    )
    text = html_of(build(status=broken))
    assert "status bad" in text
    assert "entry 3: hash chain broken" in text


def test_html_escapes_entry_text() -> None:
    entries: list[tuple[int, Entry | None]] = [
        (0, decision(0, jurisdiction=XSS, subject=XSS, policies=(XSS,))),
        (1, decision(1, decision="deny", policies=(XSS,))),
        (2, credential(2, "certificate", "deny", reason=XSS)),
        (3, decision(3, subject='"><img src=x onerror=alert(1)> https://evil.example/')),
    ]
    text = html_of(build(entries))
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<img" not in text
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?[a-z]*:?//", text)


# -- reading the page back ---------------------------------------------------------------


@dataclass
class Page:
    """What a reader sees on the page: the summary cards, every table's header and rows
    (cell text, ``<wbr>`` dropped), the findings rows' classes, the style sheet and
    whether each table sits directly in a ``.scroll`` container."""

    cards: dict[str, str] = field(default_factory=dict)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    finding_classes: list[str] = field(default_factory=list)
    tables_in_scroll: list[bool] = field(default_factory=list)
    css: str = ""
    top: str = ""  # the text of <header>

    def table(self, *headers: str) -> list[list[str]]:
        (rows,) = [rows for head, rows in self.tables if tuple(head) == headers]
        return rows

    def rows_by_label(self, *headers: str) -> dict[str, list[str]]:
        return {row[0]: row[1:] for row in self.table(*headers)}


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._stack: list[tuple[str, dict[str, str]]] = []
        self._text: list[str] | None = None
        self._card: dict[str, str] = {}
        self._head: list[str] = []
        self._rows: list[list[str]] = []
        self._row: list[str] | None = None
        self._findings = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        css = values.get("class", "").split()
        if tag == "br" and self._text is not None:
            self._text.append(" ")
        if tag in ("wbr", "br", "meta", "rect"):
            return
        if tag == "table":
            parent = self._stack[-1] if self._stack else ("", {})
            self.page.tables_in_scroll.append(
                parent[0] == "div" and parent[1].get("class") == "scroll"
            )
            self._head, self._rows = [], []
            self._findings = "findings" in css
        elif tag == "tr" and self._stack and self._stack[-1][0] == "tbody":
            self._row = []
            if self._findings:
                self.page.finding_classes.append(values.get("class", ""))
        elif tag in ("td", "th") or (tag == "span" and {"n", "l"} & set(css)):
            self._text = []
        self._stack.append((tag, values))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            opened, values = self._stack.pop()
            if opened == tag:
                break
        text = " ".join("".join(self._text or []).split())
        if tag == "span" and values.get("class") in ("n", "l"):
            self._card[values["class"]] = text
            if len(self._card) == 2:
                self.page.cards[self._card["l"]] = self._card["n"]
                self._card = {}
            self._text = None
        elif tag == "th" and self._row is None:
            self._head.append(text)
            self._text = None
        elif tag == "td" and self._row is not None:
            self._row.append(text)
            self._text = None
        elif tag == "tr" and self._row is not None:
            self._rows.append(self._row)
            self._row = None
        elif tag == "table":
            self.page.tables.append((self._head, self._rows))

    def handle_data(self, data: str) -> None:
        if self._stack and self._stack[-1][0] == "style":
            self.page.css += data
        if any(tag == "header" for tag, _ in self._stack):
            self.page.top += data
        if self._text is not None and not (self._stack and self._stack[-1][0] == "title"):
            self._text.append(data)


def read(report: Report) -> Page:
    reader = _Reader()
    reader.feed(html_of(report))
    reader.close()
    return reader.page


def number(text: str) -> int:
    return int(text.replace(",", ""))


def css_rules(css: str) -> dict[str, str]:
    """Selector -> declarations of the rules outside ``@media`` blocks."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    css = re.sub(r"@media[^{]*\{(?:[^{}]*\{[^}]*\})*\s*\}", "", css)
    return {
        " ".join(selector.split()): body
        for selector, body in re.findall(r"([^{}]+)\{([^}]*)\}", css)
    }


BIG = ReportStatus(
    intact=True,
    tree_size=1_234_567,
    checkpoint="docket/3f2a size 1234567 root AAAA",
    problem=None,
    redacted=(7, 8),
)


@pytest.mark.parametrize(
    "report",
    [
        pytest.param(build(), id="sample"),
        pytest.param(build(since=at(1), until=at(9)), id="a-period"),
        pytest.param(build(status=BIG), id="thousands"),
        pytest.param(build([]), id="empty"),
    ],
)
def test_html_counts_match_their_labels(report: Report) -> None:
    page = read(report)
    assert {label: number(n) for label, n in page.cards.items()} == {
        "entries in period": report.entries,
        "allowed (decisions, placements, admissions)": report.allowed,
        "denied (decisions, placements, admissions)": report.denied,
        "residency violations": report.violations,
        "credentials issued": sum(c.issued for c in report.credentials),
        "credentials refused": sum(c.refused for c in report.credentials),
        "redacted entries in period": report.redacted,
    }
    totals = {kind: number(n) for kind, (n,) in page.rows_by_label("Kind", "Entries").items()}
    assert totals.pop("All") == report.entries
    assert totals.pop("redacted (payload erased, unclassifiable)") == report.redacted
    assert totals == dict(report.totals)
    assert sum(totals.values()) + report.redacted == report.entries

    if report.decisions:
        *groups, total = page.table("Classification", "Jurisdiction", "Allow", "Deny")
        assert [(c, j, number(a), number(d)) for c, j, a, d in groups] == [
            (c.classification, c.jurisdiction, c.allow, c.deny) for c in report.decisions
        ]
        assert (number(total[2]), number(total[3])) == (report.allowed, report.denied)
        assert sum(number(row[2]) for row in groups) == report.allowed
        assert sum(number(row[3]) for row in groups) == report.denied
    if report.denials:
        denials = page.table("Policy", "Denials")
        assert [(p, number(n)) for p, n in denials] == list(report.denials)
    credentials = page.rows_by_label("Kind", "Issued", "Refused")
    assert {k: (number(i), number(r)) for k, (i, r) in credentials.items()} == {
        "Attestations": (report.credentials[0].issued, report.credentials[0].refused),
        "Certificates": (report.credentials[1].issued, report.credentials[1].refused),
    }
    if report.findings:
        rows = page.table(*FINDING_HEADERS)
        assert [number(row[0]) for row in rows] == [f.index for f in report.findings]
        assert f"{report.violations:,} RESIDENCY VIOLATION" in html_of(report)
    verification = page.rows_by_label("Check", "Result")
    assert number(verification["Entries in the log (tree size)"][0]) == report.status.tree_size
    listed = verification["Redacted entries in the log"][0]
    assert listed == (", ".join(map(str, report.status.redacted)) or "none")


FINDING_HEADERS = (
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
)

SPIFFE = "spiffe://prod.example.org/ns/payments/sa/payments-api-7f9c2d"
HASH = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def test_html_breaks_long_tokens_only_at_separators() -> None:
    entry = decision(0, jurisdiction="us", subject=SPIFFE, detail={"decision_id": HASH})
    text = html_of(build([(0, entry)]))
    (subject,) = re.findall(r"<code>(spiffe[^<]*(?:<wbr>[^<]*)*)</code>", text)
    assert subject.replace("<wbr>", "") == SPIFFE
    pieces = subject.split("<wbr>")
    assert len(pieces) > 5
    assert all(piece[-1] in "/:." for piece in pieces[:-1])  # a break only after a separator
    assert f"<code>{HASH}</code>" in text  # no separator: never broken, it scrolls instead
    rules = css_rules(read(build([(0, entry)])).css)
    declarations = " ".join(rules.values())
    for mid_token in ("anywhere", "break-all", "break-word"):
        assert mid_token not in declarations
    assert "word-break: keep-all" in rules["code"]
    assert "overflow-wrap: normal" in rules["code"]


def test_html_is_usable_at_800_px() -> None:
    report = build()
    text = html_of(report)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    page = read(report)
    assert len(page.tables_in_scroll) >= 6
    assert all(page.tables_in_scroll)  # a wide table scrolls in its own box, not the page
    rules = css_rules(page.css)
    assert "overflow-x: auto" in rules[".scroll"]
    assert "max-width: 100%" in rules[".scroll"]
    assert "width: 100%" in rules["svg.chart"]  # the charts shrink to the window
    widths = re.findall(r"(?<![\w-])(?:min-)?width:\s*(\d+)px", page.css)
    assert all(int(width) <= 800 for width in widths)
    assert "style=" not in text.split("</style>", 1)[1]  # no inline width slips past the CSS


TAMPERED = ReportStatus(
    intact=False,
    tree_size=16,
    checkpoint=None,
    problem="entry 7: modified: its payload does not match its leaf hash",
    redacted=(),
)


def test_html_marks_a_tampered_entry_at_the_top_and_in_the_findings() -> None:
    report = build(status=TAMPERED)
    page = read(report)
    top = " ".join(page.top.split())
    assert "NOT INTACT" in top
    assert "Found at entry 7." in top
    assert "entry 7: modified: its payload does not match its leaf hash" in top
    text = html_of(report)
    assert text.index("NOT INTACT") < text.index("<main>")
    # Finding 7 is the entry the problem names; the others are not marked.
    assert page.finding_classes == ["", "tampered", ""]
    (row,) = [r for r in page.table(*FINDING_HEADERS) if r[0].startswith("7")]
    assert row[0] == "7 TAMPERED"
    verification = page.rows_by_label("Check", "Result")
    assert verification["Intact"] == ["NO"]
    assert verification["Entry the problem names"] == ["7"]


@pytest.mark.parametrize(
    ("status", "banner", "marked"),
    [
        pytest.param(INTACT, False, "-", id="intact"),
        pytest.param(
            ReportStatus(False, 0, None, "cannot read docket.db: not a database", ()),
            True,
            "-",
            id="no-entry-named",
        ),
        pytest.param(
            ReportStatus(False, 16, None, "entry 16: truncated: the log ends early", ()),
            True,
            "16",
            id="entry-outside-the-findings",
        ),
    ],
)
def test_html_marks_only_the_entry_a_problem_names(
    status: ReportStatus, banner: bool, marked: str
) -> None:
    page = read(build(status=status))
    assert ("NOT INTACT" in page.top) is banner
    assert "tampered" not in page.finding_classes
    assert page.rows_by_label("Check", "Result")["Entry the problem names"] == [marked]


@pytest.mark.parametrize(
    ("keys", "shown"),
    [
        pytest.param((), "not given", id="none"),
        pytest.param(("docket+3f2a0b1c+AXyzA",), "docket+3f2a0b1c+AXyzA", id="one"),
        pytest.param(
            ("docket+3f2a0b1c+AXyzA", "backup+99aa00ff+AQrs"),
            "docket+3f2a0b1c+AXyzA backup+99aa00ff+AQrs",
            id="two",
        ),
    ],
)
def test_html_names_the_verifying_keys(keys: tuple[str, ...], shown: str) -> None:
    status = ReportStatus(True, 42, "docket/3f2a size 42 root AAAA", None, (), keys=keys)
    verification = read(build(status=status)).rows_by_label("Check", "Result")
    assert verification["Verifying keys"] == [shown]
    assert verification["Checkpoint"] == ["docket/3f2a size 42 root AAAA"]


HOSTILE = "\x1b[2J\u202eevil\u2066\x00<b>"


def test_html_escapes_controls_and_bidi_overrides_in_every_caller_string() -> None:
    entries: list[tuple[int, Entry | None]] = [
        (0, decision(0, jurisdiction=HOSTILE, subject=HOSTILE, detail={"decision_id": HOSTILE})),
        (1, decision(1, decision="deny", policies=(HOSTILE,))),
        (2, credential(2, "certificate", "deny", reason=HOSTILE)),
        (3, placement(3, [{"site": HOSTILE, "jurisdiction": "us"}])),
    ]
    status = ReportStatus(False, 4, HOSTILE, f"entry 0: modified: {HOSTILE}", (), keys=(HOSTILE,))
    text = html_of(build(entries, status=status))
    for raw in ("\x1b", "\u202e", "\u2066", "\x00", "<b>"):
        assert raw not in text
    assert text.count("\\x1b[2J\\u202eevil\\u2066\\x00&lt;b&gt;") >= 8
