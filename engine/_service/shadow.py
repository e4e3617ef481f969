"""Shadow bundles: a candidate bundle evaluated beside the live one, never answering.

With ``shadow_bundle`` set, every decision the live bundle makes is then made again by
the candidate on the same verified request (posture filled, context checked), before
its audit entry is built. The answer is always the live one. The two are compared:

- ``agree``: the same decision, and the candidate erred no more than the live bundle;
- ``flip_allow_to_deny`` / ``flip_deny_to_allow``: the candidate would answer otherwise;
- ``error``: the candidate raised, or a policy of it erred where the live one did not
  (an erroring ``forbid`` denies, so such a flip is reported as the error it is).

Each outcome is counted (``docket_shadow_decisions_total{outcome}``); a disagreement,
and only a disagreement, is annotated on the decision's entry as ``detail.shadow`` (the
candidate's digest and revision, its decision, its determining policies, its errors).
The comparison is of the bundles' policies: it is made before the staleness rules of
``@fresh_policy`` (which apply to whichever bundle is in force).

A candidate is verified as the live bundle is (signature with ``bundle_public_key``,
schema) and its policy tests (``tests/*.yaml``) must pass; it is not held to the live
bundle's anti-rollback revisions (it is not in force). It is watched and reloaded as the
live bundle is: a bad candidate on reload is logged and the last good one stays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog

from audit.note import VerifierKey
from engine._core.bundle import PolicyBundle
from engine._core.evaluate import Engine
from engine._core.models import Decision, Request
from engine._core.policy_tests import load_cases, run_cases
from engine._errors import BundleError
from engine._service.bundle_watch import BundleWatcher, Reload
from engine._service.metrics import Metrics

log = structlog.get_logger("docket.shadow")

Outcome = Literal["agree", "flip_allow_to_deny", "flip_deny_to_allow", "error"]
OUTCOMES: tuple[Outcome, ...] = ("agree", "flip_allow_to_deny", "flip_deny_to_allow", "error")
ANNOTATION = "shadow"
"""The key of ``detail`` a disagreement is annotated under."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def check_tests(bundle: PolicyBundle, *, now: datetime) -> None:
    """Run the bundle's policy tests; raise :class:`~engine.BundleError` naming every
    failing case (``tests/access.yaml:12: policy test NAME fails: …``)."""
    results = run_cases(bundle, load_cases(bundle.files), now=now)
    problems = [
        f"{r.loaded.file}:{r.loaded.line}: policy test {r.loaded.case.name} fails: "
        + "; ".join(r.failures)
        for r in results
        if not r.passed
    ]
    if problems:
        raise BundleError(problems)


def load_candidate(path: Path, *, public_key: VerifierKey | None, now: datetime) -> PolicyBundle:
    """The candidate bundle at ``path``, verified (signature, schema, policy tests).
    Raises :class:`~engine.BundleError`."""
    bundle = PolicyBundle.load(path, public_key=public_key)
    check_tests(bundle, now=now)
    return bundle


def outcome(live: Decision, candidate: Decision | None) -> Outcome:
    """How the candidate's decision (None: it raised) compares with the live one."""
    if candidate is None:
        return "error"
    if candidate.errors:
        erred = {(e.policy, e.message) for e in live.errors}
        if any((e.policy, e.message) not in erred for e in candidate.errors):
            return "error"
    if live.decision == candidate.decision:
        return "agree"
    return "flip_allow_to_deny" if live.decision == "allow" else "flip_deny_to_allow"


class Shadow:
    """A candidate bundle in its own engine (and decision memo), its watcher, and the
    comparison of its decisions with the live ones."""

    def __init__(
        self,
        bundle: PolicyBundle,
        path: Path,
        *,
        metrics: Metrics,
        public_key: VerifierKey | None = None,
        interval: float = 1.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.engine = Engine(bundle)
        self.metrics = metrics
        self.watcher = BundleWatcher(
            self.engine,
            path,
            interval=interval,
            public_key=public_key,
            clock=clock,
            vet=lambda candidate: check_tests(candidate, now=clock()),
        )
        self.watcher.on_swap(self._swapped)
        metrics.shadow_loaded(bundle.version)
        self.path = path

    @property
    def bundle(self) -> PolicyBundle:
        """The candidate in use (the last good one)."""
        bundle = self.engine.bundle
        assert bundle is not None
        return bundle

    def _swapped(self, bundle: PolicyBundle) -> None:
        self.metrics.shadow_loaded(bundle.version)
        log.info("shadow.loaded", version=bundle.version, revision=bundle.revision)

    def reload(self) -> Reload:
        """Load the candidate again now (SIGHUP). Raises :class:`~engine.BundleError`
        (logged) when it does not verify; the last good candidate stays."""
        return self.watcher.reload()

    def annotate(
        self,
        requests: Sequence[Request],
        live: Sequence[Decision],
        details: Sequence[Mapping[str, Any] | None],
        now: datetime,
    ) -> list[Mapping[str, Any] | None]:
        """``details`` with each disagreement's annotation added, every outcome counted.
        Never raises: whatever the candidate does, the live decisions stand."""
        notes = self.compare(requests, live, now)
        return [
            detail if note is None else {**(detail or {}), ANNOTATION: note}
            for detail, note in zip(details, notes, strict=True)
        ]

    def compare(
        self, requests: Sequence[Request], live: Sequence[Decision], now: datetime
    ) -> list[dict[str, Any] | None]:
        """The annotation of each request (None where the candidate agrees), counted."""
        bundle = self.engine.bundle
        decided, failures = self._decide(requests, now)
        notes: list[dict[str, Any] | None] = []
        for live_decision, candidate, failure in zip(live, decided, failures, strict=True):
            kind = outcome(live_decision, candidate)
            self.metrics.shadow_compared(kind)
            if kind == "agree":
                notes.append(None)
                continue
            note: dict[str, Any] = {
                "bundle": bundle.version if bundle is not None else None,
                "revision": bundle.revision if bundle is not None else None,
                "outcome": kind,
                "decision": candidate.decision if candidate is not None else None,
                "policies": list(candidate.reasons) if candidate is not None else [],
            }
            errors = (
                [{"policy": e.policy, "message": e.message} for e in candidate.errors]
                if candidate is not None
                else [{"policy": None, "message": failure}]
            )
            if errors:
                note["errors"] = errors
            notes.append(note)
        return notes

    def _decide(
        self, requests: Sequence[Request], now: datetime
    ) -> tuple[list[Decision | None], list[str]]:
        """The candidate's decisions (None where it raised) and why each raised. A batch
        that raises is decided again one request at a time, to find which one did."""
        with contextlib.suppress(Exception):  # then find which request raised
            return list(self.engine.decide_batch(requests, now=now)), [""] * len(requests)
        decided: list[Decision | None] = []
        failures: list[str] = []
        for request in requests:
            try:
                decided.append(self.engine.decide_batch((request,), now=now)[0])
                failures.append("")
            except Exception as exc:  # the candidate's failure is data, never the call's
                decided.append(None)
                failures.append(f"{type(exc).__name__}: {exc}")
        return decided, failures
