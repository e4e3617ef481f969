"""The TPM driver: tpm2-tools run against a TCTI in a private working directory.

``Tpm`` makes the EK (and reads its certificate from NV) and the AK, activates a
credential, quotes and reads PCRs. Each command runs as a subprocess, and transient
objects are flushed after every one, since a TPM without a resource manager (swtpm)
holds only three. Every failure is a ``TpmError`` naming the tool, with its stderr
in one line.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from sdk._closing import Closing
from sdk._errors import ConfigurationError, TpmError
from sdk.agent._nv import EK_CERT_INDEX, der_prefix
from sdk.agent._pcrs import parse_selection, split_pcr_values

__all__ = ["Tpm"]

_TOOL_TIMEOUT: Final = 60.0
_MAX_STDERR: Final = 400
# tpm2-tss prefixes its log lines with level, module, file, line and function.
_TSS_PREFIX = re.compile(r"^(?:WARNING|ERROR|WARN|INFO|DEBUG):\w+:\S+:\d+:\S+\(\)\s*")


def _stderr_line(stderr: str) -> str:
    """tpm2-tools' stderr as one readable line: TSS source locations dropped, repeats
    removed, long output cut."""
    lines: list[str] = []
    for raw in stderr.splitlines():
        line = _TSS_PREFIX.sub("", raw.strip()).strip()
        if line and line not in lines:
            lines.append(line)
    text = "; ".join(lines) or "(no output on stderr)"
    return text if len(text) <= _MAX_STDERR else text[: _MAX_STDERR - 3] + "..."


class Tpm(Closing):
    """A TPM 2.0 reached through tpm2-tools and a TCTI, with a private working directory.

    ``tcti`` is what ``TPM2TOOLS_TCTI`` would hold: ``swtpm:host=127.0.0.1,port=2321``,
    ``swtpm:path=/run/swtpm/sock``, ``device:/dev/tpmrm0``, ``tabrmd``. Keys live as saved
    contexts in the working directory; transient objects are flushed after every command.
    Call ``create_ek`` and ``create_ak`` first. Use it as a context manager (or call
    ``close()``) to remove the working directory. Every method raises ``TpmError``, with
    the failing tool and its stderr in one line.
    """

    def __init__(self, tcti: str, *, timeout: float = _TOOL_TIMEOUT) -> None:
        if not tcti.strip():
            raise ConfigurationError("the TCTI is empty: e.g. device:/dev/tpmrm0")
        self.tcti = tcti
        self.timeout = timeout
        self._env = dict(os.environ, TPM2TOOLS_TCTI=tcti)
        self._dir = Path(tempfile.mkdtemp(prefix="docket-tpm-"))
        self._has_ek = False
        self._has_ak = False

    @property
    def directory(self) -> Path:
        """The private working directory (mode 0700) holding the key contexts."""
        return self._dir

    def close(self) -> None:
        """Remove the working directory (the saved key contexts). Idempotent."""
        shutil.rmtree(self._dir, ignore_errors=True)
        self._has_ek = self._has_ak = False

    def _exec(self, argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        tool = argv[0]
        try:
            return subprocess.run(
                argv,
                cwd=self._dir,
                env=self._env,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise TpmError(f"{tool} not found on PATH: install tpm2-tools") from exc
        except subprocess.TimeoutExpired as exc:
            raise TpmError(
                f"{tool} did not finish within {self.timeout:g} s (TCTI {self.tcti})"
            ) from exc

    def _run(self, *argv: str) -> subprocess.CompletedProcess[bytes]:
        """Run one tpm2-tools command, then flush transient objects.

        A failing flush is reported only when the command itself succeeded.
        """
        try:
            done = self._exec(argv)
        except TpmError:
            self._flush_quietly()
            raise
        if done.returncode != 0:
            self._flush_quietly()
            raise TpmError(
                f"{argv[0]} failed (exit {done.returncode}, TCTI {self.tcti}): "
                f"{_stderr_line(done.stderr.decode(errors='replace'))}"
            )
        flushed = self._exec(["tpm2_flushcontext", "-t"])
        if flushed.returncode != 0:
            raise TpmError(
                f"tpm2_flushcontext -t failed after {argv[0]} (TCTI {self.tcti}): "
                f"{_stderr_line(flushed.stderr.decode(errors='replace'))}"
            )
        return done

    def _flush_quietly(self) -> None:
        with contextlib.suppress(TpmError):  # the command's own error is the one to report
            self._exec(["tpm2_flushcontext", "-t"])

    def _read(self, name: str) -> bytes:
        try:
            return (self._dir / name).read_bytes()
        except OSError as exc:
            raise TpmError(f"tpm2-tools wrote no {name}: {exc.strerror}") from exc

    def _nv_indexes(self) -> set[int]:
        listing = self._run("tpm2_getcap", "handles-nv-index").stdout.decode(errors="replace")
        return {int(h, 16) for h in re.findall(r"0x[0-9a-fA-F]+", listing)}

    def create_ek(self) -> tuple[bytes, bytes | None]:
        """Create the RSA 2048 endorsement key from the default template.

        Returns its TPM2B_PUBLIC and the DER EK certificate from NV index 0x1c00002
        (trailing padding removed), or ``None`` when the TPM has no such index.
        """
        self._run("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
        self._has_ek = True
        ek_public = self._read("ek.pub")
        if EK_CERT_INDEX not in self._nv_indexes():
            return ek_public, None
        self._run("tpm2_nvread", f"0x{EK_CERT_INDEX:08x}", "-o", "ek.crt")
        what = f"the EK certificate in NV 0x{EK_CERT_INDEX:08x}"
        return ek_public, der_prefix(self._read("ek.crt"), what)

    def create_ak(self) -> bytes:
        """Create the attestation key under the EK: ECC P-256, SHA-256, ECDSA, restricted
        signing (tpm2_createak's attributes). Returns its TPM2B_PUBLIC."""
        if not self._has_ek:
            raise TpmError("create the EK (create_ek) before the AK")
        self._run(
            "tpm2_createak",
            *("-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa"),
            *("-u", "ak.pub", "-n", "ak.name"),
        )
        self._has_ak = True
        return self._read("ak.pub")

    def _require_keys(self) -> None:
        if not (self._has_ek and self._has_ak):
            raise TpmError("create the EK and the AK (create_ek, create_ak) first")

    def activate(self, credential: bytes) -> bytes:
        """Recover the secret of a credential (tpm2-tools file format) made for this EK
        and AK: tpm2_activatecredential under the EK's policy (PolicySecret of the
        endorsement hierarchy)."""
        self._require_keys()
        for name in ("out.secret", "session.ctx"):
            (self._dir / name).unlink(missing_ok=True)
        (self._dir / "cred.bin").write_bytes(credential)
        self._run("tpm2_startauthsession", "--policy-session", "-S", "session.ctx")
        try:
            self._run("tpm2_policysecret", "-S", "session.ctx", "-c", "e")
            self._run(
                "tpm2_activatecredential",
                *("-c", "ak.ctx", "-C", "ek.ctx", "-i", "cred.bin", "-o", "out.secret"),
                *("-P", "session:session.ctx"),
            )
        finally:
            self._run("tpm2_flushcontext", "session.ctx")
        return self._read("out.secret")

    def quote(self, nonce: bytes, selection: str) -> tuple[bytes, bytes]:
        """Quote the PCRs of ``selection`` (``"sha256:0,1,2"``) over ``nonce`` with the AK.

        Returns the TPMS_ATTEST and the TPMT_SIGNATURE bytes. Raises
        ``InvalidRequestError`` for a malformed selection.
        """
        self._require_keys()
        parse_selection(selection)
        for name in ("quote.msg", "quote.sig"):
            (self._dir / name).unlink(missing_ok=True)
        extra = ("-q", nonce.hex()) if nonce else ()
        self._run(
            "tpm2_quote",
            *("-c", "ak.ctx", *extra, "-l", selection),
            *("-m", "quote.msg", "-s", "quote.sig", "-g", "sha256"),
        )
        return self._read("quote.msg"), self._read("quote.sig")

    def pcrread(self, selection: str) -> dict[tuple[int, int], bytes]:
        """The values of the PCRs of ``selection``: ``{(TPM_ALG_ID, index): digest}``.

        Raises ``InvalidRequestError`` for a malformed selection, ``TpmError`` when a
        bank is not active.
        """
        parse_selection(selection)
        (self._dir / "pcrs.bin").unlink(missing_ok=True)
        self._run("tpm2_pcrread", "-o", "pcrs.bin", selection)
        return split_pcr_values(selection, self._read("pcrs.bin"))
