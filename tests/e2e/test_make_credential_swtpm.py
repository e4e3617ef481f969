"""Credentials made by ``attestation._credential`` are activated by a real TPM (swtpm).

tpm2-tools creates an EK (RSA 2048 or ECC P-256, default templates) and an ECC AK under it;
Python wraps a secret for them; ``tpm2_activatecredential`` must give it back, and must refuse
a credential made for another AK name (TPM_RC_INTEGRITY).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from attestation._credential import make_credential, to_tpm2_tools_file

pytestmark = pytest.mark.e2e

SECRET = bytes(range(32))
TOOLS = ("swtpm", "tpm2_createek", "tpm2_createak", "tpm2_activatecredential")


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


def _free_port_pair() -> int:
    """A port P with P and P+1 free on 127.0.0.1 (swtpm's server and control ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


@dataclass(frozen=True)
class Tpm:
    env: dict[str, str]

    def run(self, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a tpm2-tools command, then flush its transient objects (swtpm has 3 slots)."""
        try:
            return subprocess.run(
                args, cwd=cwd, env=self.env, capture_output=True, text=True, check=check
            )
        finally:
            subprocess.run(
                ["tpm2_flushcontext", "-t"], cwd=cwd, env=self.env, capture_output=True, check=True
            )


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tpm]:
    """A swtpm for this module, started fresh and stopped by its PID at the end."""
    _require_tools()
    state = tmp_path_factory.mktemp("swtpm")
    port = _free_port_pair()
    process = subprocess.Popen(
        [
            "swtpm",
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={state}",
            "--server",
            f"type=tcp,port={port},bindaddr=127.0.0.1",
            "--ctrl",
            f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
            "--flags",
            "not-need-init,startup-clear",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                stderr = process.stderr.read() if process.stderr else b""
                pytest.fail(f"swtpm exited with {process.returncode}: {stderr!r}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("swtpm did not listen within 10 s")
                time.sleep(0.05)
        env = dict(os.environ, TPM2TOOLS_TCTI=f"swtpm:host=127.0.0.1,port={port}")
        yield Tpm(env)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


@dataclass(frozen=True)
class Keys:
    directory: Path
    ek_public: bytes
    ak_name: bytes


@pytest.fixture(scope="module", params=["rsa", "ecc"])
def keys(
    tpm: Tpm, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
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


def activate(tpm: Tpm, keys: Keys, credential_file: bytes) -> subprocess.CompletedProcess[str]:
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


def test_swtpm_activates_python_credential(tpm: Tpm, keys: Keys) -> None:
    credential = make_credential(keys.ek_public, keys.ak_name, SECRET)
    result = activate(tpm, keys, to_tpm2_tools_file(credential))
    assert result.returncode == 0, result.stderr
    assert (keys.directory / "out.secret").read_bytes() == SECRET


def test_swtpm_refuses_credential_for_another_ak(tpm: Tpm, keys: Keys) -> None:
    other_name = keys.ak_name[:2] + bytes(len(keys.ak_name) - 2)
    credential = make_credential(keys.ek_public, other_name, SECRET)
    result = activate(tpm, keys, to_tpm2_tools_file(credential))
    assert result.returncode != 0
    assert "integrity check failed" in result.stderr
    assert not (keys.directory / "out.secret").exists()
