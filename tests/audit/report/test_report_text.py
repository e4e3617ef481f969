"""The report as a terminal table."""

from __future__ import annotations

from report_samples import build, decision

from audit._report import render


def test_table_has_every_heading_and_flags_violations_loudly() -> None:
    text = render(build(), "table")
    for heading in (
        "Docket residency and compliance report",
        "Verification",
        "Totals",
        "Decisions by classification and jurisdiction",
        "Residency findings",
        "Denials by policy",
        "Attestations and certificates",
    ):
        assert heading in text
    assert "VIOLATIONS: 3" in text
    assert "us-east-1-cloud" in text
    assert "\x1b" not in text  # no colour unless asked for


def test_table_says_none_when_compliant() -> None:
    text = render(build([(0, decision(0))]), "table")
    assert "NONE" in text
    assert "VIOLATIONS" not in text


def test_table_escapes_terminal_control_sequences_and_markup() -> None:
    entry = decision(0, jurisdiction="us", subject="\x1b[2J[bold]evil[/bold]\u202e")
    text = render(build([(0, entry)]), "table")
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert "[bold]evil" in text


def test_table_in_colour_for_a_terminal() -> None:
    assert "\x1b[" in render(build(), "table", color=True)
