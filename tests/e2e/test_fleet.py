"""A fleet on loopback, every part a real process: a collector (``docket collector
serve``) on PostgreSQL and three edge sites (``docket serve``, one of them with two
worker processes) pushing their logs to it, and pulling their signed bundle from one
static HTTP server (in the test, ETags; every half second).

One story, in order (each step builds on the state the last left): every site's
decisions reach the collector with proofs and are cosigned (the site keeps the
checkpoint as final); ``docket bundle push`` of a new signed revision reaches every
site (its decisions change, and ``docket fleet status`` shows the revision for each),
then an older signed revision pushed to the source is refused by every site (logged and
audited with its reason; the newer one stays in force and in the status); one site is
cut off (the collector is stopped), keeps deciding and logging, and its backlog is
reconciled when the collector is back; a killed site restarts, with the bundle source
gone, on its last good bundle, and resumes from where the collector holds it; a forged
fork (the site's own key signing a second checkpoint of a size the collector holds) is
refused and shown by ``docket fleet status``; ``docket audit verify-fleet`` verifies
what the collector holds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from bundle_servers import SIGNER, StaticServer, signed_archive, signed_files
from e2e.docket_process import (
    DOCKET,
    Docket,
    authorize,
    die_with_parent,
    start_docket,
    stop,
    wait_for,
)
from sample_bundle import write_bundle

from audit import AuditLog, Checkpoint, CollectorStore, Push, SignerKey, Store, next_push
from audit._collector import encode_push
from audit.merkle import leaf_hash
from audit.note import read_signer, sign_checkpoint
from sdk.v1 import decisions_pb2 as pb
from tests.audit.conftest import QUIET, sample_entry

pytestmark = pytest.mark.e2e

SITES = ("eu-1", "eu-2", "us-1")
WAIT = 60.0
LOCKDOWN = '@id("lockdown")\nforbid (principal, action, resource);\n'
"""Added by revision 2: every decision a deny (under revision 1 alice reads her ledger)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _docket(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKET, *args], capture_output=True, text=True, timeout=60)


@dataclass
class Fleet:
    root: Path
    database: str
    port: int
    vkey: str
    sites: dict[str, Docket]
    lab: AuditLog
    """A site log the test writes itself, to push by hand."""
    source: StaticServer
    """The one bundle source every site pulls."""
    collector: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_collector(self) -> None:
        log = self.root / "collector.log"
        args = [f"--site={name}={self.site_key(name)}" for name in self.sites]
        args += [f"--site=lab-1={key}" for key in self.lab.verifiers()]
        with log.open("ab") as out:
            self.collector = subprocess.Popen(
                die_with_parent(
                    [
                        DOCKET,
                        "collector",
                        "serve",
                        "--listen",
                        f"127.0.0.1:{self.port}",
                        "--database-url",
                        self.database,
                        "--key",
                        str(self.root / "collector.key"),
                        *args,
                    ]
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        wait_for(
            "docket collector",
            self.collector,
            log,
            lambda: log.read_text().count("collector listening") >= self.starts,
        )

    def stop_collector(self) -> None:
        assert self.collector is not None
        assert stop(self.collector, "docket collector") == 0

    def site_key(self, name: str) -> str:
        answer = _docket("audit", "key", "--data-dir", str(self.sites[name].data_dir))
        assert answer.returncode == 0, answer.stderr
        return answer.stdout.strip()

    def start_site(self, name: str) -> Docket:
        env = {
            "DOCKET_SITE_NAME": name,
            "DOCKET_COLLECTOR_URL": self.url,
            "DOCKET_WITNESSES": json.dumps([f"{self.url}={self.vkey}"]),
            "DOCKET_SITE_PUSH_SECONDS": "0.2",
            "DOCKET_AUDIT_CHECKPOINT_SECONDS": "0.2",
            "DOCKET_BUNDLE_PULL_SECONDS": "0.5",
        }
        shutil.rmtree(self.root / name / "policies", ignore_errors=True)  # a restart's copy
        # eu-2 runs two workers: its log's one writer, and so its pusher, is the supervisor's.
        workers = ("--workers", "2") if name == "eu-2" else ()
        pulling = ("--bundle-url", self.source.url(), "--bundle-key", str(self.bundle_key))
        self.sites[name] = start_docket(self.root / name, *workers, *pulling, env=env)
        return self.sites[name]

    @property
    def bundle_key(self) -> Path:
        key = self.root / "bundle.pub"
        if not key.exists():
            key.write_text(f"{SIGNER.verifier()}\n")
        return key

    def push_bundle(self, revision: int, extra: str = "") -> None:
        """``docket bundle push`` of the sample bundle as ``acme`` revision ``revision``."""
        directory = write_bundle(
            self.root / f"bundle-{time.monotonic_ns()}", signed_files(revision, extra=extra)
        )
        pushed = _docket("bundle", "push", str(directory), "--to", self.source.url())
        assert pushed.returncode == 0, pushed.stderr

    def revisions(self) -> dict[str, str | None]:
        """The bundle each running site runs, as ``docket fleet status --json`` shows it."""
        status = _docket("fleet", "status", "--collector", self.url, "--json")
        assert status.stdout, status.stderr
        listed = json.loads(status.stdout)
        return {site["site"]: site["bundle_revision"] for site in listed if site["site"] in SITES}

    def held(self) -> dict[str, dict[str, Any]]:
        answer = httpx.get(f"{self.url}/sites", timeout=10).json()
        return {site["site"]: site for site in answer}

    def head(self, name: str) -> int:
        store = Store(f"sqlite:///{self.sites[name].data_dir / 'docket.db'}", create=False)
        try:
            return store.head().size
        finally:
            store.close()

    def final(self, name: str) -> str | None:
        store = Store(f"sqlite:///{self.sites[name].data_dir / 'docket.db'}", create=False)
        try:
            return store.meta("final_checkpoint")
        finally:
            store.close()

    def collected_refusals(self, name: str) -> list[dict[str, Any]]:
        """The bundle refusals in site ``name``'s log, as the collector holds it."""
        store = CollectorStore(self.database)
        try:
            entries = [json.loads(payload) for _, payload, _ in store.entries(name) if payload]
        finally:
            store.close()
        return [e for e in entries if e["kind"] == "bundle" and e["action"] == "refuse"]

    def caught_up(self, *names: str) -> None:
        """Wait until the collector holds every entry of each site (its whole log)."""
        until(
            lambda: all(self.held()[n]["size"] == self.head(n) > 0 for n in names),
            f"the collector to catch up with {names}",
        )


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT} s for {what}")
        time.sleep(0.2)


def decide(site: Docket, count: int, who: str) -> None:
    for n in range(count):
        authorize(site, f"{who}-{n}")


def alice_reads(site: Docket) -> set[int]:
    """The decisions alice gets on her ledger over several connections (spread across a
    site's workers by SO_REUSEPORT)."""
    return {authorize(site, "alice").decision for _ in range(6)}


@pytest.fixture
def fleet(tmp_path: Path, postgres_db: str) -> Iterator[Fleet]:
    made = _docket(
        "witness", "key", str(tmp_path / "collector.key"), "--new", "--name", "collector.test/c1"
    )
    assert made.returncode == 0, made.stderr
    lab = AuditLog.open(f"sqlite:///{tmp_path / 'lab.db'}", keys=tmp_path / "lab-keys", **QUIET)
    source = StaticServer()
    source.put("/bundle.tar.gz", signed_archive(1))
    fleet = Fleet(tmp_path, postgres_db, _free_port(), made.stdout.strip(), {}, lab.start(), source)
    try:
        for name in SITES:
            fleet.start_site(name)
        fleet.start_collector()
        yield fleet
    finally:
        for site in fleet.sites.values():
            site.stop()
        if fleet.collector is not None:
            stop(fleet.collector, "docket collector")
        lab.close()
        source.stop()


def test_a_fleet_gathers_reconciles_and_catches_a_fork(fleet: Fleet) -> None:
    # Every site's decisions reach the collector, cosigned; the site keeps it as final.
    for name, site in fleet.sites.items():
        decide(site, 5, name)
    fleet.caught_up(*SITES)
    for name in SITES:
        until(lambda n=name: fleet.final(n) is not None, f"{name}'s final checkpoint")
        final = fleet.final(name)
        assert final is not None
        assert "collector.test/c1" in final

    # A new signed revision pushed to the source: in force at every site, and reported.
    assert fleet.revisions() == dict.fromkeys(SITES, "acme r1")
    for site in fleet.sites.values():
        assert alice_reads(site) == {pb.DECISION_ALLOW}
    fleet.push_bundle(2, LOCKDOWN)
    for name, site in fleet.sites.items():
        until(lambda s=site: alice_reads(s) == {pb.DECISION_DENY}, f"revision 2 in force at {name}")
    until(lambda: fleet.revisions() == dict.fromkeys(SITES, "acme r2"), "revision 2 everywhere")

    # An older, validly signed revision pushed to the source: refused by every site, with
    # its reason, in its log and its audit log; revision 2 stays in force and reported.
    fleet.push_bundle(1)
    for name, site in fleet.sites.items():
        until(lambda s=site: "bundle.pull_refused" in s.log.read_text(), f"{name}'s refusal")
        # Its audit log, as the collector holds it (the push that brought the refusal
        # reported the bundle then in force).
        until(lambda n=name: bool(fleet.collected_refusals(n)), f"{name}'s refusal collected")
        (refusal,) = fleet.collected_refusals(name)
        assert refusal["resource"] == fleet.source.url()
        problems = refusal["detail"]["problems"]
        assert problems[0] == "refused (RollbackError)", (name, problems)
        assert "revision 1 of bundle 'acme' is older than revision 2" in problems[1], name
        assert alice_reads(site) == {pb.DECISION_DENY}, name
    assert fleet.revisions() == dict.fromkeys(SITES, "acme r2")

    # Cut off: the collector is down; the sites keep deciding and logging.
    fleet.stop_collector()
    cut = fleet.sites["eu-2"]
    decide(cut, 20, "partitioned")
    assert fleet.head("eu-2") >= 25
    fleet.start_collector()
    fleet.caught_up(*SITES)

    # A killed site restarts, with its bundle source gone, on its last good bundle (revision
    # 2), and resumes pushing from where the collector holds it.
    killed = fleet.sites["us-1"]
    os.kill(killed.process.pid, signal.SIGKILL)
    killed.process.wait()
    fleet.source.go_away()
    held_before = fleet.held()["us-1"]["size"]
    restarted = fleet.start_site("us-1")
    log = restarted.log.read_text()
    assert "bundle.pull_unreachable" in log
    assert re.search(r"bundle\.last_good .*revision=2", log), log
    assert alice_reads(restarted) == {pb.DECISION_DENY}
    decide(restarted, 5, "after-restart")
    fleet.caught_up("us-1")
    assert fleet.held()["us-1"]["size"] > held_before

    # An erasure at a site, of an entry the collector already holds (`docket audit redact`
    # beside the running site): the collector's copy of the payload goes with the next
    # push, in PostgreSQL too; the leaf stays, and the entry is counted as redacted.
    key_file = fleet.root / "redaction.key"
    assert _docket("audit", "redaction-key", str(key_file), "--new").returncode == 0
    erased = _docket(
        "audit", "redact", "2", "--reason", "erasure request", "--by", "dpo",
        "--redaction-key", str(key_file), "--data-dir", str(restarted.data_dir),
    )  # fmt: skip
    assert erased.returncode == 0, erased.stdout + erased.stderr
    decide(restarted, 1, "after-erasure")
    fleet.caught_up("us-1")
    store = CollectorStore(fleet.database)
    try:
        held_payloads = {index: payload for index, payload, _ in store.entries("us-1")}
    finally:
        store.close()
    assert held_payloads[2] is None
    assert all(payload is not None for index, payload in held_payloads.items() if index != 2)

    # A forged fork: eu-1's own key signs another root for the size the collector holds.
    held = fleet.held()["eu-1"]
    key = read_signer(fleet.sites["eu-1"].data_dir / "audit-keys" / "signing.key")
    forged = sign_checkpoint(Checkpoint(held["origin"], held["size"], leaf_hash(b"forged")), [key])
    body = {
        "site": "eu-1",
        "old_size": held["size"],
        "proof": [],
        "checkpoint": forged,
        "entries": [],
    }
    answer = httpx.post(f"{fleet.url}/push", json=body, timeout=10)
    assert answer.status_code == 422, answer.text
    assert answer.json()["fork"] is True
    status = _docket("fleet", "status", "--collector", fleet.url)
    assert status.returncode == 1, status.stdout + status.stderr
    row = next(line for line in status.stdout.splitlines() if line.startswith("eu-1"))
    assert row.endswith("FORKED"), status.stdout
    assert "two roots" in status.stdout
    for other in ("eu-2", "us-1"):
        line = next(line for line in status.stdout.splitlines() if line.startswith(other))
        assert line.endswith("ok"), status.stdout

    # The auditor verifies every site's entries against its cosigned checkpoints.
    verified = _docket(
        "audit",
        "verify-fleet",
        "--collector-db",
        fleet.database,
        "--witness-key",
        fleet.vkey,
        "--json",
        *(f"--site={name}" for name in SITES),
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = {site["site"]: site for site in json.loads(verified.stdout)["sites"]}
    assert set(report) == set(SITES)
    assert report["eu-2"]["size"] >= 25
    assert report["eu-2"]["checkpoints"] >= 2
    assert report["eu-2"]["first"] <= report["eu-2"]["last"]
    assert (report["us-1"]["redacted"], report["eu-2"]["redacted"]) == (1, 0)

    # The report over the fleet: each site per its coverage, all of them together.
    shown = _docket(
        "audit", "report", "--fleet", "--collector-db", fleet.database,
        "--witness-key", fleet.vkey, "--format", "json", "--lag-seconds", "3600",
    )  # fmt: skip
    assert shown.returncode == 1, shown.stdout + shown.stderr  # eu-1 forked: in doubt
    document = json.loads(shown.stdout)
    sites = {site["site"]: site for site in document["sites"]}
    assert sites["eu-1"]["coverage"]["state"] == "FORKED"
    for name in ("eu-2", "us-1"):
        assert sites[name]["coverage"]["state"] == "complete", sites[name]["coverage"]
    # The sites are live: the collector may hold more by now than verify-fleet saw.
    held = {name: site["coverage"]["entries"] for name, site in sites.items()}
    for name in SITES:
        assert sites[name]["report"]["entries"] == held[name] >= report[name]["size"]
    assert document["entries"] == sum(held.values())
    assert "report INCOMPLETE" in shown.stderr

    # An entry changed in the collector's database: the auditor names the site and entry.
    conninfo = sa.make_url(fleet.database).set(drivername="postgresql")
    with psycopg.connect(conninfo.render_as_string(hide_password=False)) as connection:
        connection.execute(
            "UPDATE collector_entry SET payload = %s WHERE site = 'eu-2' AND idx = 7",
            (b'{"kind":"decision","decision":"allow"}',),
        )
    tampered = _docket("audit", "verify-fleet", "--collector-db", fleet.database)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert "entry 7: modified: site eu-2" in tampered.stderr
    excluded = _docket(
        "audit", "report", "--fleet", "--collector-db", fleet.database, "--format", "json"
    )  # fmt: skip
    assert excluded.returncode == 1, excluded.stdout + excluded.stderr
    document = json.loads(excluded.stdout)
    sites = {site["site"]: site for site in document["sites"]}
    assert sites["eu-2"]["coverage"]["state"] == "NOT VERIFIED"
    assert sites["eu-2"]["report"] is None
    counted = [site["report"]["entries"] for site in sites.values() if site["report"]]
    assert document["entries"] == sum(counted)
    assert [name for name, site in sites.items() if site["report"] is None] == ["eu-2"]
    assert "site eu-2 NOT VERIFIED, excluded from the totals: entry 7" in excluded.stderr


def test_bad_pushes_are_refused_with_their_reason_and_change_nothing(fleet: Fleet) -> None:
    """A site log the test writes itself (``lab-1``), pushed over HTTP: each bad push
    is refused with its status and reason, and the collector keeps its last good state
    (the good push still fits after them all)."""
    lab = fleet.lab
    grow(lab, 3)
    assert post(fleet, next_push(lab.store, "lab-1", 0)).status_code == 200
    grow(lab, 3)
    good = next_push(lab.store, "lab-1", 3)
    assert good is not None
    payload, leaf = good.entries[0]
    assert payload is not None
    stranger = SignerKey.generate(lab.origin)
    cases: dict[str, tuple[bytes, int, str]] = {
        "a truncated body": (encode_push(good)[:200], 400, "not JSON"),
        "a bad signature": (
            encode_push(replace(good, note=sign_checkpoint(good.checkpoint, [stranger]))),
            403,
            "signature",
        ),
        "an entry that does not hash to its leaf": (
            encode_push(replace(good, entries=((payload + b" ", leaf), *good.entries[1:]))),
            422,
            "does not hash to its leaf",
        ),
        "entries that do not reach the signed root": (
            encode_push(replace(good, entries=good.entries[::-1])),
            422,
            "do not extend",
        ),
    }
    for what, (body, code, reason) in cases.items():
        answer = httpx.post(f"{fleet.url}/push", content=body, timeout=10)
        assert answer.status_code == code, (what, answer.text)
        assert reason in answer.json()["error"], (what, answer.text)
        assert fleet.held()["lab-1"]["size"] == 3, what
    too_big = httpx.post(f"{fleet.url}/push", content=b"x" * (64 * 1024 * 1024 + 1), timeout=30)
    assert too_big.status_code == 413
    assert post(fleet, good).status_code == 200
    assert fleet.held()["lab-1"]["size"] == 6
    assert fleet.held()["lab-1"]["incidents"] == 1  # the entries that do not reach the root
    assert re.search(r"collector\.refused", (fleet.root / "collector.log").read_text())


def grow(log: AuditLog, count: int) -> None:
    log.record([sample_entry(n) for n in range(count)])
    log.checkpoint()


def post(fleet: Fleet, push: Push | None) -> httpx.Response:
    assert push is not None
    return httpx.post(f"{fleet.url}/push", content=encode_push(push), timeout=10)
