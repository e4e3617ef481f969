"""Anti-rollback (issue 14, finding 8): TUF's rules for bundle revisions, table-driven,
and the state file they keep."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sample_bundle import ACCESS, bundle_files

from engine import BundleError, PolicyBundle
from engine._errors import RollbackError
from engine._service.bundle_revisions import STATE_FILE, RevisionGuard, pin_entry

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def bundle(revision: int | None, *, name: str = "acme", edit: str = "") -> PolicyBundle:
    changes: dict[str, str | bytes | None] = {"10-access.cedar": ACCESS + edit}
    if revision is not None:
        changes["bundle.toml"] = f'[bundle]\nname = "{name}"\nrevision = {revision}\n'
    return PolicyBundle.from_files(bundle_files(changes))


@pytest.mark.parametrize(
    ("accepted", "offered", "signed", "refusal"),
    [
        pytest.param([], bundle(1), True, None, id="first-revision"),
        pytest.param([bundle(1)], bundle(2), True, None, id="higher-revision"),
        pytest.param([bundle(2)], bundle(2), True, None, id="same-revision-same-content"),
        pytest.param(
            [bundle(2)],
            bundle(1),
            True,
            "revision 1 of bundle 'acme' is older than revision 2",
            id="rollback",
        ),
        pytest.param(
            [bundle(2)],
            bundle(2, edit="// other\n"),
            True,
            "revision 2 of bundle 'acme' differs from the accepted revision 2",
            id="same-revision-other-content",
        ),
        pytest.param(
            [bundle(2)],
            bundle(9, name="other"),
            True,
            "bundle 'other' is not 'acme', the bundle in force",
            id="other-name",
        ),
        pytest.param(
            [], bundle(None), True, "a signed bundle must carry them", id="signed-no-revision"
        ),
        pytest.param([], bundle(None), False, None, id="unsigned-no-revision"),
        pytest.param(
            [bundle(3)],
            bundle(None),
            False,
            "but revision 3 of bundle 'acme' was accepted",
            id="unsigned-revision-dropped",
        ),
        pytest.param(
            [bundle(3)], bundle(2), False, "is older than revision 3", id="unsigned-rollback"
        ),
    ],
)
def test_revision_rules(
    tmp_path: Path,
    accepted: list[PolicyBundle],
    offered: PolicyBundle,
    signed: bool,
    refusal: str | None,
) -> None:
    guard = RevisionGuard(tmp_path, signed=signed)
    for earlier in accepted:
        guard.admit(earlier, NOW)
    before = (tmp_path / STATE_FILE).read_bytes() if accepted else None
    if refusal is None:
        assert guard.admit(offered, NOW).pin is None
        return
    with pytest.raises(RollbackError) as refused:
        guard.admit(offered, NOW)
    (problem,) = refused.value.problems
    assert refusal in problem
    # A refusal changes nothing: the highest revision stays the one to beat.
    assert before is None or (tmp_path / STATE_FILE).read_bytes() == before


def test_state_survives_a_restart_and_records_the_highest(tmp_path: Path) -> None:
    RevisionGuard(tmp_path, signed=True).admit(bundle(5), NOW)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["current"] == "acme"
    assert state["bundles"]["acme"]["revision"] == 5
    assert state["bundles"]["acme"]["version"] == bundle(5).version
    with pytest.raises(RollbackError, match="older than revision 5"):
        RevisionGuard(tmp_path, signed=True).check(bundle(4))


def test_a_pin_lets_one_lower_revision_in_once(tmp_path: Path) -> None:
    guard = RevisionGuard(tmp_path, signed=True)
    guard.admit(bundle(2), NOW)
    pin = guard.pin(1, NOW)
    assert (pin.name, pin.revision) == ("acme", 1)
    admission = guard.admit(bundle(1), NOW)
    assert admission.pin == pin
    assert admission.highest == 2
    entry = pin_entry(bundle(1), admission, now=NOW)
    assert (entry.kind, entry.action, entry.decision) == ("bundle", "pin", "allow")
    assert entry.detail["revision"] == 1
    assert entry.detail["highest_revision"] == 2
    # Used up: revision 1 is now the highest, and the pin is gone.
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["pin"] is None
    assert state["bundles"]["acme"]["revision"] == 1


def test_a_pin_is_for_one_revision_and_name(tmp_path: Path) -> None:
    guard = RevisionGuard(tmp_path, signed=True)
    guard.admit(bundle(3), NOW)
    guard.pin(1, NOW)
    with pytest.raises(RollbackError, match="revision 2 of bundle 'acme' is older"):
        guard.admit(bundle(2), NOW)
    guard.pin(4, NOW, name="other")
    assert guard.admit(bundle(4, name="other"), NOW).pin is not None


def test_pin_needs_a_name_when_nothing_was_accepted(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no bundle accepted yet"):
        RevisionGuard(tmp_path, signed=True).pin(1, NOW)


def test_a_damaged_state_file_refuses_rather_than_forgets(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text('{"bundles": "gone"}')
    with pytest.raises(BundleError, match="not a bundle state file"):
        RevisionGuard(tmp_path, signed=True).check(bundle(1))


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        pytest.param('[bundle]\nname = "acme"\n', "[bundle] needs a revision too", id="no-rev"),
        pytest.param("[bundle]\nrevision = 3\n", "[bundle] needs a name too", id="no-name"),
        pytest.param(
            '[bundle]\nname = "acme"\nrevision = 0\n', "bundle.revision: 0 is not", id="zero"
        ),
        pytest.param(
            '[bundle]\nname = "acme"\nrevision = "3"\n', "bundle.revision: '3' is not", id="str"
        ),
        pytest.param(
            '[bundle]\nname = "a b"\nrevision = 3\n', "bundle.name: 'a b' is not a name", id="name"
        ),
        pytest.param(
            '[bundle]\nname = "acme"\nrevision = 3\nrelease = 4\n',
            "unknown key bundle.release",
            id="unknown-key",
        ),
    ],
)
def test_bad_bundle_name_or_revision_is_refused(toml: str, problem: str) -> None:
    with pytest.raises(BundleError) as refused:
        PolicyBundle.from_files(bundle_files({"bundle.toml": toml}))
    assert any(problem in p for p in refused.value.problems), refused.value.problems


def test_name_and_revision_are_covered_by_the_version() -> None:
    assert bundle(1).version != bundle(2).version
    assert (bundle(7).name, bundle(7).revision) == ("acme", 7)
