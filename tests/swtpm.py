"""A software TPM (swtpm) for tests and fixture scripts, driven with tpm2-tools.

``SoftwareTpm.start(state_dir)`` runs ``swtpm socket`` on a free TCP port pair of
127.0.0.1 and waits until it listens; :meth:`SoftwareTpm.run` runs a tpm2-tools command
against it and then flushes transient objects (swtpm has three slots and no resource
manager); :meth:`SoftwareTpm.stop` stops it by its PID.

:func:`provision` manufactures a state with an EK certificate (``swtpm_setup`` with a
private ``swtpm_localca`` whose root is :attr:`ProvisionedState.root_cert`); tests copy
that state rather than paying 1-3 s each.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

TOOLS = ("swtpm", "tpm2_createek", "tpm2_createak", "tpm2_activatecredential", "tpm2_quote")


class SoftwareTpmError(RuntimeError):
    """swtpm did not start (its stderr says why)."""


def free_port_pair() -> int:
    """A port P with P and P+1 free on 127.0.0.1 (swtpm's server and control ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise SoftwareTpmError("no two consecutive free ports on 127.0.0.1")


@dataclass
class SoftwareTpm:
    """A running swtpm and the environment that points tpm2-tools at it."""

    process: subprocess.Popen[bytes]
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, state: Path, *, timeout: float = 10.0) -> SoftwareTpm:
        """Start swtpm with its state in ``state``. Raises :class:`SoftwareTpmError`."""
        port = free_port_pair()
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
        tpm = cls(
            process, port, dict(os.environ, TPM2TOOLS_TCTI=f"swtpm:host=127.0.0.1,port={port}")
        )
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                tpm.stop()
                raise SoftwareTpmError(f"swtpm exited with {process.returncode}: {stderr}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return tpm
            except OSError:
                if time.monotonic() > deadline:
                    tpm.stop()
                    raise SoftwareTpmError(f"swtpm did not listen within {timeout} s") from None
                time.sleep(0.05)

    def run(self, *argv: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a tpm2-tools command, then flush its transient objects."""
        try:
            return subprocess.run(
                argv, cwd=cwd, env=self.env, capture_output=True, text=True, check=check
            )
        finally:
            subprocess.run(
                ["tpm2_flushcontext", "-t"], cwd=cwd, env=self.env, capture_output=True, check=True
            )

    def stop(self) -> None:
        """Stop swtpm by its PID (SIGTERM, then SIGKILL after 10 s)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()


# --- a manufactured TPM: EK certificate from a private local CA --------------------------

PROVISION_TOOLS = ("swtpm_setup", "swtpm_localca", "certtool")

ROOT_CERT = "swtpm-localca-rootca-cert.pem"
"""swtpm_localca's self-signed root, created next to its signing key on first use."""


@dataclass(frozen=True)
class ProvisionedState:
    """A swtpm state manufactured by ``swtpm_setup`` with EK and platform certificates.

    ``state`` is a template: copy it per test (:meth:`copy_state`), since a running swtpm
    changes it. ``root_cert`` is the local CA's self-signed root (what a verifier trusts
    as an EK root); ``issuer_cert`` is the intermediate that signed the EK certificate
    (an ``ek_intermediates`` entry). Both are PEM.
    """

    state: Path
    ca_dir: Path
    root_cert: Path
    issuer_cert: Path

    def copy_state(self, destination: Path) -> Path:
        """A fresh copy of the manufactured state at ``destination`` (must not exist)."""
        shutil.copytree(self.state, destination)
        return destination


def provision(directory: Path, *, timeout: float = 120.0) -> ProvisionedState:
    """Manufacture a TPM 2.0 state under ``directory`` with a private swtpm_localca.

    Everything (swtpm_setup.conf, swtpm-localca.conf/.options, the CA's keys and the
    state) stays inside ``directory``: /etc and /var/lib/swtpm-localca are never read or
    written. The RSA EK certificate lands in NV 0x1c00002, the NV is locked. Raises
    :class:`SoftwareTpmError` with swtpm_setup's log when it fails.
    """
    ca_dir = directory / "localca"
    state = directory / "state"
    config_home = directory / "config-home"
    for path in (ca_dir, state, config_home):
        path.mkdir(mode=0o700, parents=True)
    localca_conf = directory / "swtpm-localca.conf"
    localca_conf.write_text(
        f"statedir = {ca_dir}\n"
        f"signingkey = {ca_dir / 'signkey.pem'}\n"
        f"issuercert = {ca_dir / 'issuercert.pem'}\n"
        f"certserial = {ca_dir / 'certserial'}\n"
    )
    localca_options = directory / "swtpm-localca.options"
    localca_options.write_text(
        "--platform-manufacturer Docket\n--platform-version 2.1\n--platform-model docket-test\n"
    )
    setup_conf = directory / "swtpm_setup.conf"
    setup_conf.write_text(
        f"create_certs_tool = {shutil.which('swtpm_localca') or 'swtpm_localca'}\n"
        f"create_certs_tool_config = {localca_conf}\n"
        f"create_certs_tool_options = {localca_options}\n"
        "active_pcr_banks = sha256\n"
    )
    log = directory / "swtpm_setup.log"
    env = dict(os.environ, XDG_CONFIG_HOME=str(config_home), HOME=str(config_home))
    try:
        done = subprocess.run(
            [
                "swtpm_setup",
                "--tpm2",
                *("--tpmstate", str(state)),
                "--create-ek-cert",
                "--create-platform-cert",
                "--lock-nvram",
                *("--config", str(setup_conf)),
                *("--logfile", str(log)),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SoftwareTpmError(f"swtpm_setup did not run: {exc}") from exc
    if done.returncode != 0:
        details = log.read_text(errors="replace") if log.exists() else ""
        raise SoftwareTpmError(
            f"swtpm_setup exited with {done.returncode}: {done.stderr}{done.stdout}{details}"
        )
    provisioned = ProvisionedState(state, ca_dir, ca_dir / ROOT_CERT, ca_dir / "issuercert.pem")
    for cert in (provisioned.root_cert, provisioned.issuer_cert):
        if not cert.is_file():
            raise SoftwareTpmError(f"swtpm_localca wrote no {cert}")
    return provisioned
