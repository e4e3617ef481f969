"""Attacks on policy bundles, each against a real ``docket serve`` (issue 14, findings 8-9).

- an older, validly signed bundle dropped into the watched directory put its (since
  fixed) policies back in force, and a restart on it did too;
- a small ``.tar.gz`` with a GNU long-name member took a gigabyte of memory, and one with
  a million empty members minutes of CPU, all before the signature was checked.

Each server runs on free loopback ports and is stopped by PID by the test that started it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from archive_bombs import long_name_bomb, many_members_bomb
from e2e.docket_process import DOCKET, Docket, start_docket, stop
from e2e.docket_process import authorize as docket_authorize

from sdk.v1 import decisions_pb2 as pb

pytestmark = pytest.mark.e2e

REFUSAL_BOUND = 5.0
"""Seconds within which a refusal must show in the log (generous: it takes milliseconds;
the attacks this guards against took 101 s of CPU and 1.1 GiB of memory)."""

SCHEMA = """\
namespace Docket {
  entity User;
  entity Data;
  action read appliesTo { principal: User, resource: Data };
}
"""
# Revision 1 let anyone read; revision 2 fixed that.
OLD_POLICY = (
    '@id("anyone-reads")\npermit (principal, action == Docket::Action::"read", resource);\n'
)
FIXED_POLICY = '@id("nobody-reads")\nforbid (principal, action, resource);\n'


def docket(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKET, *args], capture_output=True, text=True, timeout=timeout)


def signed_bundle(path: Path, policy: str, revision: int, key: Path) -> Path:
    path.mkdir(parents=True)
    (path / "schema.cedarschema").write_text(SCHEMA)
    (path / "policies.cedar").write_text(policy)
    (path / "bundle.toml").write_text(f'[bundle]\nname = "acme"\nrevision = {revision}\n')
    signed = docket("policy", "sign", str(path), "--key", str(key))
    assert signed.returncode == 0, signed.stderr
    assert f"acme revision {revision}" in signed.stdout
    return path


def authorize(server: Docket) -> pb.AuthorizeResponse:
    return docket_authorize(server, "mallory")


def wait_for_log(server: Docket, needle: str, *, after: int = 0) -> float:
    """Seconds until ``needle`` appears in the server's log past offset ``after``."""
    start = time.monotonic()
    while needle not in server.log.read_text()[after:]:
        assert time.monotonic() - start < REFUSAL_BOUND, server.log.read_text()[after:]
        time.sleep(0.02)
    return time.monotonic() - start


def replace_tree(target: Path, source: Path) -> None:
    """Put ``source``'s files in place of ``target``'s, as an attacker with write access
    to the bundle directory would (file by file)."""
    for item in target.iterdir():
        item.unlink()
    for item in source.iterdir():
        shutil.copy2(item, target / item.name)
        os.utime(target / item.name)


# --- finding 8: an older signed bundle is put back in force ----------------------------


def test_older_signed_bundle_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    assert docket("policy", "keygen", "--out", str(keys / "k")).returncode == 0
    old = signed_bundle(tmp_path / "old", OLD_POLICY, 1, keys / "k.key")
    fixed = signed_bundle(tmp_path / "fixed", FIXED_POLICY, 2, keys / "k.key")
    root = tmp_path / "serve"
    flags = ("--bundle-key", str(keys / "k.pub"), "--admission", "off")

    server = start_docket(root, *flags, bundle=fixed)
    try:
        first = authorize(server)
        assert first.decision == pb.DECISION_DENY, first
        mark = len(server.log.read_text())
        replace_tree(root / "policies", old)
        wait_for_log(server, "revision 1 of bundle 'acme' is older than revision 2", after=mark)
        after = authorize(server)
    finally:
        assert server.stop() == 0
    # The fixed policy stays in force: the same version answers, and it denies.
    assert after.decision == pb.DECISION_DENY, after
    assert after.bundle_version == first.bundle_version
    refusals = [e for e in server.audit_entries("bundle") if e["action"] == "refuse"]
    assert refusals, server.log.read_text()
    assert refusals[-1]["decision"] == "deny"
    assert refusals[-1]["bundle_version"] == first.bundle_version
    assert any("older than revision 2" in p for p in refusals[-1]["detail"]["problems"])

    # A restart on the older bundle is refused too, with one line, before anything listens.
    restart = docket(
        "serve",
        "--bundle",
        str(root / "policies"),
        "--data-dir",
        str(root / "data"),
        "--grpc",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        *flags,
    )
    assert restart.returncode == 2, restart.stdout + restart.stderr
    assert "revision 1 of bundle 'acme' is older than revision 2" in restart.stderr
    assert "Traceback" not in restart.stderr

    # An operator's explicit pin lets it back in, and the pin is in the audit log.
    pinned = docket("bundle", "pin", "1", "--data-dir", str(root / "data"))
    assert pinned.returncode == 0, pinned.stderr
    shutil.rmtree(root / "policies")
    server = start_docket(root, *flags, bundle=old)
    try:
        answer = authorize(server)
    finally:
        assert server.stop() == 0
    assert answer.decision == pb.DECISION_ALLOW, answer
    (pin,) = [e for e in server.audit_entries("bundle") if e["action"] == "pin"]
    assert pin["bundle_version"] == answer.bundle_version
    assert pin["detail"]["revision"] == 1
    assert pin["detail"]["highest_revision"] == 2


def test_same_revision_with_other_content_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    assert docket("policy", "keygen", "--out", str(keys / "k")).returncode == 0
    fixed = signed_bundle(tmp_path / "fixed", FIXED_POLICY, 2, keys / "k.key")
    # Another bundle signed with the same revision: TUF calls this an attack.
    other = signed_bundle(tmp_path / "other", OLD_POLICY, 2, keys / "k.key")
    root = tmp_path / "serve"
    server = start_docket(
        root, "--bundle-key", str(keys / "k.pub"), "--admission", "off", bundle=fixed
    )
    try:
        first = authorize(server)
        mark = len(server.log.read_text())
        replace_tree(root / "policies", other)
        wait_for_log(server, "revision 2 of bundle 'acme' differs from the accepted", after=mark)
        after = authorize(server)
    finally:
        assert server.stop() == 0
    assert after.decision == pb.DECISION_DENY
    assert after.bundle_version == first.bundle_version


# --- finding 9: archives read before they are bounded --------------------------------------


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize(
    ("bomb", "needle"),
    [
        pytest.param(
            lambda p: long_name_bomb(p, 256 << 20), "long name of", id="gnu-long-name-256MiB"
        ),
        pytest.param(
            lambda p: many_members_bomb(p, 1_000_000), "more than", id="million-empty-members"
        ),
    ],
)
def test_archive_bomb_is_refused(tmp_path: Path, bomb: object, needle: str) -> None:
    good = tmp_path / "good.tar.gz"
    subprocess.run(
        ["tar", "-czf", str(good), "-C", str(Path(__file__).parents[2] / "policies"), "."],
        check=True,
    )
    watched = tmp_path / "bundle.tar.gz"
    shutil.copy(good, watched)
    made = bomb(tmp_path / "bomb.tar.gz")  # type: ignore[operator]
    assert made.stat().st_size < 16 << 20

    # At start: refused with one line, quickly.
    started = time.monotonic()
    refused = docket(
        "serve",
        "--bundle",
        str(made),
        "--data-dir",
        str(tmp_path / "data0"),
        "--grpc",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--admission",
        "off",
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert needle in refused.stderr
    assert time.monotonic() - started < 30  # a process start; the attack took 101 s

    # On reload: the bomb replaces the served archive; it is refused, the old one stays.
    server = start_docket(tmp_path / "serve", "--bundle", str(watched), "--admission", "off")
    try:
        before = authorize(server).bundle_version
        rss_before = peak_rss_kib(server.process.pid)
        mark = len(server.log.read_text())
        os.replace(made, watched)
        took = wait_for_log(server, needle, after=mark)
        assert took < REFUSAL_BOUND
        assert authorize(server).bundle_version == before
        # Bounded memory: the long name alone was 256 MiB.
        assert peak_rss_kib(server.process.pid) - rss_before < 64 << 10
    finally:
        assert stop(server.process, "docket serve") == 0
