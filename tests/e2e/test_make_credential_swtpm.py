"""Credentials made by ``attestation._credential`` are activated by a real TPM (swtpm).

tpm2-tools creates an EK (RSA 2048 or ECC P-256, default templates) and an ECC AK under it;
Python wraps a secret for them; ``tpm2_activatecredential`` must give it back, and must refuse
a credential made for another AK name (TPM_RC_INTEGRITY).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from swtpm import TOOLS, SoftwareTpm

from attestation._credential import make_credential, to_tpm2_tools_file

pytestmark = pytest.mark.e2e

SECRET = bytes(range(32))


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def _require_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        return
    message = f"missing {', '.join(missing)}: apt-get install swtpm swtpm-tools tpm2-tools"
    if _in_ci():
        pytest.fail(f"{message}; CI must not skip")
    pytest.skip(message)


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftwareTpm]:
    """A swtpm for this module, started fresh and stopped by its PID at the end."""
    _require_tools()
    tpm = SoftwareTpm.start(tmp_path_factory.mktemp("swtpm"))
    try:
        yield tpm
    finally:
        tpm.stop()


@dataclass(frozen=True)
class Keys:
    directory: Path
    ek_public: bytes
    ak_name: bytes


@pytest.fixture(scope="module", params=["rsa", "ecc"])
def keys(
    tpm: SoftwareTpm, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Keys:
    """An EK of the parameter's type and an ECC P-256 AK under it, as saved contexts."""
    directory = tmp_path_factory.mktemp(f"keys-{request.param}")
    tpm.run("tpm2_createek", "-c", "ek.ctx", "-G", request.param, "-u", "ek.pub", cwd=directory)
    tpm.run(
        "tpm2_createak",
        *("-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa"),
        *("-u", "ak.pub", "-n", "ak.name"),
        cwd=directory,
    )
    return Keys(
        directory, (directory / "ek.pub").read_bytes(), (directory / "ak.name").read_bytes()
    )


def activate(
    tpm: SoftwareTpm, keys: Keys, credential_file: bytes
) -> subprocess.CompletedProcess[str]:
    """tpm2_activatecredential with the EK's policy (PolicySecret of the endorsement hierarchy)."""
    cwd = keys.directory
    (cwd / "cred.bin").write_bytes(credential_file)
    (cwd / "out.secret").unlink(missing_ok=True)
    tpm.run("tpm2_startauthsession", "--policy-session", "-S", "session.ctx", cwd=cwd)
    try:
        tpm.run("tpm2_policysecret", "-S", "session.ctx", "-c", "e", cwd=cwd)
        return tpm.run(
            "tpm2_activatecredential",
            *("-c", "ak.ctx", "-C", "ek.ctx", "-i", "cred.bin", "-o", "out.secret"),
            *("-P", "session:session.ctx"),
            cwd=cwd,
            check=False,
        )
    finally:
        tpm.run("tpm2_flushcontext", "session.ctx", cwd=cwd)


def test_swtpm_activates_python_credential(tpm: SoftwareTpm, keys: Keys) -> None:
    credential = make_credential(keys.ek_public, keys.ak_name, SECRET)
    result = activate(tpm, keys, to_tpm2_tools_file(credential))
    assert result.returncode == 0, result.stderr
    assert (keys.directory / "out.secret").read_bytes() == SECRET


def test_swtpm_refuses_credential_for_another_ak(tpm: SoftwareTpm, keys: Keys) -> None:
    other_name = keys.ak_name[:2] + bytes(len(keys.ak_name) - 2)
    credential = make_credential(keys.ek_public, other_name, SECRET)
    result = activate(tpm, keys, to_tpm2_tools_file(credential))
    assert result.returncode != 0
    assert "integrity check failed" in result.stderr
    assert not (keys.directory / "out.secret").exists()
