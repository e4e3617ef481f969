"""The report as one self-contained HTML page."""

from __future__ import annotations

import re

from report_samples import XSS, build, credential, decision

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
