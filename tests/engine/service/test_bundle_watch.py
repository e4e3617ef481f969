"""Hot reload: BundleWatcher.check() swaps in good versions and keeps the last good one."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sample_bundle import ACCESS, bundle_files, write_bundle

from audit.note import SignerKey
from engine import BundleWatcher, Engine, PolicyBundle, Request
from engine._core.signing import sign_bundle
from engine._service.bundle_revisions import RevisionGuard

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LOCKDOWN = '@id("lockdown")\nforbid (principal, action, resource);\n'
ALICE_READS = Request.model_validate(
    {
        "principal": {"type": "User", "id": "alice"},
        "action": {"type": "Action", "id": "read"},
        "resource": {"type": "Data", "id": "ledger"},
    }
)


def write(path: Path, text: str) -> None:
    """Write and move mtime forward, so that a coarse filesystem clock still shows a change."""
    previous = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    stamp = max(previous + 1_000_000_000, path.stat().st_mtime_ns)
    os.utime(path, ns=(stamp, stamp))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "bundle", bundle_files())


@pytest.fixture
def engine(root: Path) -> Engine:
    return Engine(PolicyBundle.load(root))


def version(engine: Engine) -> str:
    assert engine.bundle is not None
    return engine.bundle.version


def test_unchanged_bundle_is_not_reloaded(root: Path, engine: Engine) -> None:
    watcher = BundleWatcher(engine, root)
    before = engine.bundle
    assert watcher.check() is False
    assert engine.bundle is before


def test_valid_change_is_swapped_in(root: Path, engine: Engine) -> None:
    watcher = BundleWatcher(engine, root)
    before = version(engine)
    write(root / "30-lockdown.cedar", LOCKDOWN)
    assert watcher.check() is True
    assert version(engine) != before
    decision = engine.decide(ALICE_READS, now=NOW)
    assert (decision.decision, decision.reasons) == ("deny", ("lockdown",))
    assert watcher.check() is False


def test_broken_change_keeps_the_previous_version(root: Path, engine: Engine) -> None:
    watcher = BundleWatcher(engine, root)
    before = version(engine)
    write(root / "10-access.cedar", ACCESS.replace("permit (", "permit ((", 1))
    assert watcher.check() is False
    assert version(engine) == before
    assert engine.decide(ALICE_READS, now=NOW).allowed


def test_fixing_a_broken_change_is_swapped_in(root: Path, engine: Engine) -> None:
    watcher = BundleWatcher(engine, root)
    before = version(engine)
    write(root / "10-access.cedar", ACCESS.replace("permit (", "permit ((", 1))
    assert watcher.check() is False
    write(root / "10-access.cedar", ACCESS + LOCKDOWN)
    assert watcher.check() is True
    assert version(engine) != before


def test_touch_without_content_change_keeps_the_bundle(root: Path, engine: Engine) -> None:
    watcher = BundleWatcher(engine, root)
    before = engine.bundle
    write(root / "10-access.cedar", ACCESS)
    assert watcher.check() is False
    assert engine.bundle is before


def test_watcher_loads_a_first_bundle_into_an_empty_engine(tmp_path: Path) -> None:
    engine = Engine()
    watcher = BundleWatcher(engine, tmp_path / "bundle")
    write_bundle(tmp_path / "bundle", bundle_files())
    assert watcher.check() is True
    assert engine.decide(ALICE_READS, now=NOW).allowed


def test_unsigned_change_is_refused_when_a_key_is_configured(root: Path) -> None:
    key = SignerKey.generate("docket-bundle")
    (root / "bundle.sig").write_text(sign_bundle(PolicyBundle.load(root).version, key))
    engine = Engine(PolicyBundle.load(root, public_key=key.verifier()))
    watcher = BundleWatcher(engine, root, public_key=key.verifier())
    before = version(engine)
    write(root / "30-lockdown.cedar", LOCKDOWN)
    assert watcher.check() is False
    assert version(engine) == before
    new_version = PolicyBundle.load(root).version
    write(root / "bundle.sig", sign_bundle(new_version, key))
    assert watcher.check() is True
    assert version(engine) == new_version


def test_removed_bundle_keeps_the_previous_version(root: Path, engine: Engine) -> None:
    watcher = BundleWatcher(engine, root)
    before = engine.bundle
    shutil.rmtree(root)
    assert watcher.check() is False
    assert engine.bundle is before
    assert engine.decide(ALICE_READS, now=NOW).allowed


# --- anti-rollback (issue 14, finding 8) ---------------------------------------------------


def revision(root: Path, number: int, policy: str = "") -> None:
    write(root / "bundle.toml", f'[bundle]\nname = "acme"\nrevision = {number}\n')
    write(root / "30-extra.cedar", policy)


def test_older_revision_is_refused_and_reported(root: Path, tmp_path: Path) -> None:
    revision(root, 2, LOCKDOWN)
    guard = RevisionGuard(tmp_path / "data", signed=False)
    engine = Engine(PolicyBundle.load(root))
    assert engine.bundle is not None
    guard.admit(engine.bundle, NOW)
    watcher = BundleWatcher(engine, root, guard=guard, clock=lambda: NOW)
    refused: list[list[str]] = []
    watcher.on_refuse(lambda _path, problems: refused.append(problems))
    before = version(engine)
    revision(root, 1)  # the old release, without the lockdown
    assert watcher.check() is False
    assert version(engine) == before
    assert not engine.decide(ALICE_READS, now=NOW).allowed
    (problems,) = refused
    assert "revision 1 of bundle 'acme' is older than revision 2" in problems[0]


def test_a_pin_written_while_watching_lets_the_older_revision_in(
    root: Path, tmp_path: Path
) -> None:
    revision(root, 2, LOCKDOWN)
    guard = RevisionGuard(tmp_path / "data", signed=False)
    engine = Engine(PolicyBundle.load(root))
    assert engine.bundle is not None
    guard.admit(engine.bundle, NOW)
    watcher = BundleWatcher(engine, root, guard=guard, clock=lambda: NOW)
    pinned: list[int | None] = []
    watcher.on_pin(lambda bundle, _admission: pinned.append(bundle.revision))
    revision(root, 1)
    assert watcher.check() is False
    guard.pin(1, NOW)  # another process (docket bundle pin) in real life
    assert watcher.check() is True
    assert pinned == [1]
    assert engine.decide(ALICE_READS, now=NOW).allowed


# -- pulled from a source (issue 16) ----------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def _pulling(tmp_path: Path, url: str, clock: _Clock) -> tuple[BundleWatcher, Engine]:
    from bundle_servers import SIGNER

    from engine._service.bundle_source import Limits, Puller, open_source

    guard = RevisionGuard(tmp_path, signed=True)
    puller = Puller(
        source=open_source(url),
        directory=tmp_path / "pulled",
        public_key=SIGNER.verifier(),
        guard=guard,
        limits=Limits(max_bytes=1024 * 1024, timeout=5),
        interval=30,
        clock=clock,
    )
    assert puller.pull().outcome == "new"
    engine = Engine(PolicyBundle.load(puller.archive))
    guard.admit(engine.bundle, NOW)  # type: ignore[arg-type]
    watcher = BundleWatcher(
        engine,
        puller.archive,
        public_key=SIGNER.verifier(),
        guard=guard,
        clock=clock,
        puller=puller,
        max_staleness=60,
    )
    return watcher, engine


def test_a_pulled_bundle_is_swapped_in_and_refusals_reported_once(tmp_path: Path) -> None:
    from bundle_servers import StaticServer, signed_archive

    server = StaticServer({"/b.tar.gz": signed_archive(1)})
    clock = _Clock()
    try:
        watcher, engine = _pulling(tmp_path, server.url("/b.tar.gz"), clock)
        refused: list[tuple[str, list[str]]] = []
        watcher.on_refuse(lambda source, problems: refused.append((source, problems)))
        server.files["/b.tar.gz"] = signed_archive(2, extra=LOCKDOWN)
        clock.now += timedelta(seconds=30)
        assert watcher.pull().outcome == "new"  # type: ignore[union-attr]
        assert engine.bundle is not None
        assert engine.bundle.revision == 2
        assert not engine.decide(ALICE_READS, now=NOW).allowed
        server.files["/b.tar.gz"] = signed_archive(1)
        for _ in range(2):
            clock.now += timedelta(seconds=30)
            assert watcher.pull().outcome == "refused"  # type: ignore[union-attr]
        assert len(refused) == 1
        source, problems = refused[0]
        assert source == server.url("/b.tar.gz")
        assert problems[0] == "refused (RollbackError)"
        assert "older than revision 2" in problems[1]
        assert engine.bundle.revision == 2
    finally:
        server.stop()


def test_staleness_is_observed_from_what_pulls_record(tmp_path: Path) -> None:
    from bundle_servers import StaticServer, signed_archive

    server = StaticServer({"/b.tar.gz": signed_archive(1)})
    clock = _Clock()
    try:
        watcher, _ = _pulling(tmp_path, server.url("/b.tar.gz"), clock)
        seen: list[tuple[float | None, bool]] = []
        watcher.on_freshness(lambda age, stale: seen.append((age, stale)))
        server.stop()  # the source goes away: pulls fail, the bundle ages
        clock.now += timedelta(seconds=61)
        assert watcher.pull().outcome == "unreachable"  # type: ignore[union-attr]
        assert seen[-1] == (61.0, True)
        assert watcher.stale
        assert watcher.freshness is not None
        assert watcher.freshness.stale(clock.now)
    finally:
        server.stop()


def test_a_pulled_bundle_is_read_and_verified_once_by_the_worker_that_pulled_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The puller verifies the bundle before installing it; the worker that pulled swaps
    # in that verified bundle instead of parsing the installed file again (the parse is
    # most of an activation's CPU, bench_fleet's propagation).
    from bundle_servers import StaticServer, signed_archive

    server = StaticServer({"/b.tar.gz": signed_archive(1)})
    clock = _Clock()
    try:
        watcher, engine = _pulling(tmp_path, server.url("/b.tar.gz"), clock)
        loads: list[Path] = []
        real_load = PolicyBundle.load

        def counted(path: Path, **kwargs: object) -> PolicyBundle:
            loads.append(Path(path))
            return real_load(path, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(PolicyBundle, "load", staticmethod(counted))
        server.files["/b.tar.gz"] = signed_archive(2, extra=LOCKDOWN)
        clock.now += timedelta(seconds=30)
        assert watcher.pull().outcome == "new"  # type: ignore[union-attr]
        assert engine.bundle is not None
        assert engine.bundle.revision == 2
        assert engine.bundle.source == str(tmp_path / "pulled" / "bundle.tar.gz")  # installed there
        assert loads == []  # verified once, by the pull, from the bytes it installed
        assert not watcher.check()  # the installed file is the bundle in force: no reload
        assert loads == []
    finally:
        server.stop()
