"""The credential files (sdk/agent/_credentials.py): the output directory, the files'
modes, atomic replacement on renewal, a failed write that leaves the old set."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from agent_responses import attest_response
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sdk import ConfigurationError
from sdk.agent._credentials import credential_files, prepare_out, write_atomically


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_output_directory_is_created_0700(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # the mode must not depend on the caller's umask
    try:
        out = prepare_out(tmp_path / "a" / "creds")
    finally:
        os.umask(old_umask)
    assert out.is_dir()
    assert _mode(out) == 0o700


def test_existing_output_directory_is_left_as_it_is(tmp_path: Path) -> None:
    tmp_path.chmod(0o750)
    prepare_out(tmp_path)
    assert _mode(tmp_path) == 0o750


def test_credential_files_are_written_with_their_modes(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    response = attest_response(key)
    write_atomically(tmp_path, credential_files(response, key))

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bundle.pem",
        "jwt",
        "svid.key",
        "svid.pem",
    ]
    assert {p.name: _mode(p) for p in tmp_path.iterdir()} == {
        "svid.pem": 0o644,
        "svid.key": 0o600,
        "bundle.pem": 0o644,
        "jwt": 0o600,
    }
    assert (tmp_path / "svid.pem").read_text() == response.svid_pem
    assert (tmp_path / "jwt").read_text() == "eyJ.eyJ.sig"
    pem = (tmp_path / "svid.key").read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    loaded = serialization.load_pem_private_key(pem, password=None)
    assert loaded.public_key() == key.public_key()


def test_renewal_replaces_every_file(tmp_path: Path) -> None:
    first = ec.generate_private_key(ec.SECP256R1())
    write_atomically(tmp_path, credential_files(attest_response(first), first))
    old_inode = (tmp_path / "svid.key").stat().st_ino
    second = ec.generate_private_key(ec.SECP256R1())
    write_atomically(tmp_path, credential_files(attest_response(second), second))

    key = serialization.load_pem_private_key((tmp_path / "svid.key").read_bytes(), None)
    assert key.public_key() == second.public_key()
    assert (tmp_path / "svid.key").stat().st_ino != old_inode  # renamed over, not rewritten
    assert _mode(tmp_path / "svid.key") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bundle.pem",
        "jwt",
        "svid.key",
        "svid.pem",
    ]


def test_a_failed_write_leaves_the_old_set_and_no_temporary_files(tmp_path: Path) -> None:
    (tmp_path / "svid.pem").write_bytes(b"old")
    files = {"svid.pem": (b"new", 0o644), "missing-dir/jwt": (b"token", 0o600)}
    with pytest.raises(ConfigurationError, match="cannot write the credentials"):
        write_atomically(tmp_path, files)
    assert (tmp_path / "svid.pem").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["svid.pem"]
