"""The fleet's report (``docket audit report --fleet``): each site's report, counted
from the entries the collector holds once they verified against the site's cosigned
checkpoints, its coverage beside it, and the sites added together. Pure: the caller
verifies and counts each site (:func:`~audit._report.model.build_report`) and passes
``now``.

A site is **complete** when the collector holds every entry the site last reported and
its last cosignature is recent (``lag_seconds``); **LAGGING** when the site reported
more entries than the collector holds (a partition, a backlog) or its last cosignature
is older (it may have entries it could not push); **NEVER PUSHED** before its first
cosigned checkpoint; **FORKED** once the collector recorded it signing two trees (what
is held verified and counts, but the site's record is in doubt); **NOT VERIFIED** when
its entries do not verify: it is then left out of the totals, and the totals' status
says why. Every state but complete is a gap
of the total (:attr:`FleetReport.complete` is false): a lagging fleet is never shown
as a complete record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from audit._report.model import Gap, Report, ReportStatus, merge_reports

LAG_SECONDS = 60.0
"""A site whose last cosignature is older than this lags (``docket fleet status``'s default)."""


class Seen(NamedTuple):
    """What the collector saw of a site: its last cosignature's time, the head it last
    reported, the last fork recorded of it, and why its entries did not verify."""

    cosigned: datetime | None
    head: int | None
    fork: str | None = None
    problem: str | None = None


COMPLETE, LAGGING, NEVER, NOT_VERIFIED = "complete", "LAGGING", "NEVER PUSHED", "NOT VERIFIED"
FORKED = "FORKED"


def site_state(
    verified: bool, entries: int, seen: Seen, now: datetime, lag_seconds: float = LAG_SECONDS
) -> tuple[str, str | None]:
    """A site's state at ``now`` and why (None when complete), as the module docstring
    says: ``verified`` is false when its ``entries`` did not verify (``seen.problem``
    says why)."""
    cosigned, head, fork, problem = seen
    if not verified:
        return NOT_VERIFIED, problem
    if fork is not None:
        return FORKED, fork
    if cosigned is None:
        return NEVER, "no checkpoint of it was cosigned yet"
    behind = max((head or 0) - entries, 0)
    if behind:
        return LAGGING, f"the site reported {head:,} entries, the collector holds {entries:,}"
    age = (now - cosigned).total_seconds()
    if age > lag_seconds:
        return LAGGING, f"last cosigned {age:,.0f} s ago: it may have entries the collector lacks"
    return COMPLETE, None


@dataclass(frozen=True, slots=True)
class SiteSection:
    """One site: its state (and why, unless complete), the entries the collector holds
    (verified: ``0 … entries - 1``), the size and time of its last cosigned checkpoint,
    the head it last reported, the time span of its entries, and its report (``None``
    when its entries did not verify)."""

    site: str
    state: str
    problem: str | None
    entries: int
    checkpoint: int | None
    cosigned: datetime | None
    head: int | None
    report: Report | None

    @property
    def behind(self) -> int:
        """Entries the site reported that the collector does not hold."""
        return max((self.head or 0) - self.entries, 0)

    @classmethod
    def judge(
        cls,
        site: str,
        report: Report | None,
        *,
        entries: int,
        checkpoint: int | None,
        cosigned: datetime | None,
        head: int | None,
        now: datetime,
        problem: str | None = None,
        lag_seconds: float = LAG_SECONDS,
        fork: str | None = None,
    ) -> SiteSection:
        """The section of ``site``, its state judged at ``now``: ``report`` is ``None``
        when its entries did not verify (``problem`` says why); ``fork`` is the last
        fork the collector recorded of it (its entries count, the record is in doubt)."""
        seen = Seen(cosigned, head, fork, problem)
        state, why = site_state(report is not None, entries, seen, now, lag_seconds)
        return cls(site, state, why, entries, checkpoint, cosigned, head, report)

    @property
    def gap(self) -> Gap | None:
        """What this site leaves out of the fleet's record (``None`` when complete)."""
        if self.state == COMPLETE:
            return None
        if self.state == NOT_VERIFIED:
            why = f"NOT VERIFIED, excluded from the totals: {self.problem}"
            return Gap(0, max(self.entries - 1, 0), why, log=self.site)
        last = max(self.entries + self.behind - 1, self.entries)
        return Gap(self.entries, last, f"{self.state}: {self.problem}", log=self.site)


@dataclass(frozen=True, slots=True)
class FleetReport:
    """Each site's section, and ``total``: the verified sites' reports added together,
    with every incomplete site among its gaps."""

    sites: tuple[SiteSection, ...]
    total: Report

    @property
    def status(self) -> ReportStatus:
        return self.total.status

    @property
    def complete(self) -> bool:
        return self.total.complete

    @property
    def gaps(self) -> tuple[Gap, ...]:
        return self.total.gaps


def fleet_report(
    sites: Sequence[SiteSection],
    *,
    since: datetime | None,
    until: datetime | None,
    generated_at: datetime,
) -> FleetReport:
    """The fleet's report from each site's section (see the module docstring)."""
    counted = [(s.site, s.report) for s in sites if s.report is not None]
    excluded = [s for s in sites if s.report is None]
    status = ReportStatus(
        intact=not excluded,
        tree_size=sum(s.entries for s in sites if s.report is not None),
        checkpoint=f"each site's own cosigned checkpoints ({len(counted)} site(s))",
        problem="; ".join(
            f"site {s.site} NOT VERIFIED, excluded from the totals: {s.problem}" for s in excluded
        )
        or None,
        redacted=(),
    )
    total = merge_reports(
        counted, status=status, generated_at=generated_at, since=since, until=until
    )
    gaps = [s.gap for s in sites if s.gap is not None]
    return FleetReport(tuple(sites), dataclasses.replace(total, gaps=(*total.gaps, *gaps)))
