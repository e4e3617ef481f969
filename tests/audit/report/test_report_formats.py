"""What every format of the report shares: the same findings, and only known formats."""

from __future__ import annotations

import json

import pytest
from report_samples import build, csv_rows, placement

from audit._report import render


def test_every_format_names_a_placements_sites_outside_in_one_row() -> None:
    entry = placement(
        0,
        [
            {"site": "eu-west-1-cloud", "jurisdiction": "eu"},
            {"site": "uk-south-1-edge-lon", "jurisdiction": "uk"},
            {"site": "us-east-1-edge-nyc", "jurisdiction": "us"},
        ],
    )
    report = build([(0, entry)])
    table = " ".join(render(report, "table").split())  # the terminal width wraps lines
    assert "at site uk-south-1-edge-lon (uk) and 1 more outside" in table
    assert "sites outside uk-south-1-edge-lon us-east-1-edge-nyc" in table
    assert "site uk-south-1-edge-lon (uk) and 1 more outside" in render(report, "html")
    (finding,) = json.loads(render(report, "json"))["residency"]["findings"]
    assert (finding["site"], finding["sites"]) == (
        "uk-south-1-edge-lon",
        ["uk-south-1-edge-lon", "us-east-1-edge-nyc"],
    )
    rows = csv_rows(report)
    assert [r["site"] for r in rows if r["metric"] == "violation"] == ["uk-south-1-edge-lon"]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        render(build(), "pdf")  # type: ignore[arg-type]
