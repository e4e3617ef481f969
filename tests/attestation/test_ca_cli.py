"""``docket ca …`` through click's runner, under ``docket`` (which reads the settings):
files, output formats, exit codes, one-line errors."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import DNSName
from cryptography.x509.verification import PolicyBuilder, Store

from engine.cli import main as docket


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, runner: CliRunner) -> Path:
    result = runner.invoke(docket, ["ca", "init", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    return tmp_path / "data"


def test_init_creates_files(data_dir: Path) -> None:
    directory = data_dir / "ca"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("root.pem", "issuing.pem", "ca.json"):
        assert (directory / name).is_file()
    for name in ("root.key", "issuing.key"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    assert json.loads((directory / "ca.json").read_text())["trust_domain"] == "docket.local"


def test_init_twice_is_a_one_line_usage_error(data_dir: Path, runner: CliRunner) -> None:
    result = runner.invoke(docket, ["ca", "init", "--data-dir", str(data_dir)])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("docket: a CA already exists")


def test_init_rejects_bad_trust_domain(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(
        docket, ["ca", "init", "--data-dir", str(tmp_path), "--trust-domain", "Bad TD"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("docket: trust domain")
    assert not (tmp_path / "ca").exists()


def test_bundle_prints_pem(data_dir: Path, runner: CliRunner) -> None:
    result = runner.invoke(docket, ["ca", "bundle", "--data-dir", str(data_dir)])
    assert result.exit_code == 0
    certs = x509.load_pem_x509_certificates(result.stdout.encode())
    assert certs[0] == x509.load_pem_x509_certificate((data_dir / "ca" / "root.pem").read_bytes())
    assert len(certs) == 2


def test_jwks_prints_one_key(data_dir: Path, runner: CliRunner) -> None:
    result = runner.invoke(docket, ["ca", "jwks", "--data-dir", str(data_dir)])
    assert result.exit_code == 0
    (key,) = json.loads(result.stdout)["keys"]
    assert key["kty"] == "EC"
    assert key["crv"] == "P-256"
    assert key["alg"] == "ES256"


@pytest.mark.parametrize("command", ["bundle", "jwks"])
def test_missing_ca_is_a_one_line_usage_error(
    tmp_path: Path, runner: CliRunner, command: str
) -> None:
    result = runner.invoke(docket, ["ca", command, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "docket ca init" in result.stderr


def test_issue_server_chains_to_bundle(data_dir: Path, tmp_path: Path, runner: CliRunner) -> None:
    out = tmp_path / "tls"
    args = ["issue-server", "--data-dir", str(data_dir), "--dns", "webhook.docket.svc"]
    result = runner.invoke(
        docket, ["ca", *args, "--ip", "127.0.0.1", "--out", str(out), "--ttl", "48"]
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((out / "server.key").stat().st_mode) == 0o600
    leaf, *chain = x509.load_pem_x509_certificates((out / "server.pem").read_bytes())
    key = serialization.load_pem_private_key((out / "server.key").read_bytes(), None)
    assert key.public_key() == leaf.public_key()

    bundle = runner.invoke(docket, ["ca", "bundle", "--data-dir", str(data_dir)]).stdout.encode()
    root, *intermediates = x509.load_pem_x509_certificates(bundle)
    verifier = (
        PolicyBuilder()
        .store(Store([root]))
        .time(datetime.now(UTC))
        .build_server_verifier(DNSName("webhook.docket.svc"))
    )
    verifier.verify(leaf, chain)
    assert chain == intermediates
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["webhook.docket.svc"]
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime.total_seconds() == 48 * 3600 + 60


@pytest.mark.parametrize(
    "args",
    [[], ["--dns", "bad name"], ["--ip", "not-an-ip"], ["--dns", "a.example", "--ttl", "0"]],
    ids=["no-names", "bad-dns", "bad-ip", "zero-ttl"],
)
def test_issue_server_refused(data_dir: Path, runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(docket, ["ca", "issue-server", "--data-dir", str(data_dir), *args])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1


def test_rotate_keeps_the_old_key_in_the_bundle_and_jwks(data_dir: Path, runner: CliRunner) -> None:
    before = json.loads(runner.invoke(docket, ["ca", "jwks", "--data-dir", str(data_dir)]).stdout)
    (old_key,) = before["keys"]
    result = runner.invoke(docket, ["ca", "rotate", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("new issuing key ")
    assert "1 retired key(s)" in result.stdout
    after = json.loads(runner.invoke(docket, ["ca", "jwks", "--data-dir", str(data_dir)]).stdout)
    kids = [key["kid"] for key in after["keys"]]
    assert len(kids) == 2
    assert kids[1] == old_key["kid"]  # the new key first, the old one still trusted
    assert kids[0] in result.stdout
    bundle = runner.invoke(docket, ["ca", "bundle", "--data-dir", str(data_dir)]).stdout
    assert len(x509.load_pem_x509_certificates(bundle.encode())) == 3
    # Retired: its certificate stays for verification, its private key is gone.
    assert len(list((data_dir / "ca").glob("retired-*.pem"))) == 1
    assert not list((data_dir / "ca").glob("retired-*.key"))
    assert "credentials it signs from now on are refused" in result.stdout


def test_rotate_without_a_ca_is_a_one_line_usage_error(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(docket, ["ca", "rotate", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "docket ca init" in result.stderr


# --- revoke and revocations ----------------------------------------------------------------

EK = "cd" * 32


def test_revoke_and_list(data_dir: Path, runner: CliRunner) -> None:
    args = ["--data-dir", str(data_dir)]
    result = runner.invoke(docket, ["ca", "revoke", *args, "--device", EK, "--reason", "stolen"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"revoked device {EK} revoked at ")
    assert "version 1" in result.stdout
    result = runner.invoke(docket, ["ca", "revoke", *args, "--serial", "ABC", "--reason", "leak"])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(docket, ["ca", "revocations", *args])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0] == "revocation list version 2, 2 revoked"
    assert lines[1].startswith(f"device {EK} revoked at ")
    assert lines[2].endswith(": leak")
    as_json = json.loads(runner.invoke(docket, ["ca", "revocations", *args, "--json"]).stdout)
    assert [r["kind"] for r in as_json["revoked"]] == ["device", "serial"]


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ([], "exactly one of"),
        (["--device", EK, "--serial", "ab"], "exactly one of"),
        (["--device", "12"], "64 hex digits"),
        (["--spiffe-id", "spiffe://elsewhere/x"], "trust domain"),
    ],
)
def test_revoke_usage_errors_are_one_line(
    data_dir: Path, runner: CliRunner, flags: list[str], words: str
) -> None:
    result = runner.invoke(
        docket, ["ca", "revoke", "--data-dir", str(data_dir), *flags, "--reason", "r"]
    )
    assert result.exit_code == 2, result.output
    assert words in result.stderr
    assert result.stderr.count("\n") == 1


def test_revocations_that_do_not_verify_are_an_error(data_dir: Path, runner: CliRunner) -> None:
    (data_dir / "ca" / "revocations.json").write_text(
        '{"protected":"e30","payload":"e30","signature":"AA"}'
    )
    result = runner.invoke(docket, ["ca", "revocations", "--data-dir", str(data_dir)])
    assert result.exit_code == 2
    assert "does not verify" in result.stderr
    result = runner.invoke(
        docket, ["ca", "revoke", "--data-dir", str(data_dir), "--device", EK, "--reason", "r"]
    )
    assert result.exit_code == 2  # never re-signed over a list that was tampered with


@pytest.mark.parametrize(
    ("command", "stem"),
    [
        (["issue-server", "--dns", "localhost"], "server"),
        (["issue-client", "--spiffe-id", "spiffe://docket.local/ns/edge/sa/envoy"], "client"),
    ],
)
def test_issued_keys_default_into_the_data_directory(
    data_dir: Path,
    runner: CliRunner,
    command: list[str],
    stem: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --out the key is written under <data-dir>/issued, never the working
    directory, where `git add .` would take it."""
    monkeypatch.chdir(data_dir.parent)
    result = runner.invoke(docket, ["ca", *command, "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert (data_dir / "issued" / f"{stem}.key").is_file()
    assert not list(data_dir.parent.glob("*.key"))
