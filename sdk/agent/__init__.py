"""The device attestation agent: a TPM 2.0 earns an X.509 SVID and a JWT-SVID.

``attest(server, tcti, out)`` runs the whole ``docket.v1.Attestation`` flow (what
``docket attest`` does):

    Tpm.create_ek, Tpm.create_ak ──Challenge──> credential, nonce, PCRs to quote
    Tpm.activate, Tpm.quote, Tpm.pcrread, a fresh device key + CSR ──Attest──> credentials
    ──> svid.pem, svid.key, bundle.pem, jwt in ``out`` (each replaced atomically)

``Tpm`` drives tpm2-tools against a TCTI (``swtpm:host=127.0.0.1,port=2321``,
``device:/dev/tpmrm0``, ...) in a private working directory and flushes transient objects
after every command, since a TPM without a resource manager (swtpm) holds only three.

This module needs ``cryptography`` (the device key and its CSR), so ``import sdk`` does
not import it. Every call raises only ``DocketError`` subclasses: ``TpmError`` when the
TPM or tpm2-tools fail, ``PermissionDeniedError`` ("attestation refused: ...") when Docket
refuses the evidence, and the rest of the tree as for the decision client.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict

from sdk._errors import (
    ConfigurationError,
    InvalidRequestError,
    PermissionDeniedError,
    ServerError,
    TpmError,
    status_of,
)
from sdk._retry import RetryPolicy
from sdk._tls import TLSConfig
from sdk.v1 import attestation_pb2 as pb
from sdk.v1.attestation_pb2_grpc import AttestationStub

__all__ = ["AttestResult", "Tpm", "TpmError", "attest", "pcr_selection"]

EK_CERT_INDEX: Final = 0x01C00002
"""The NV index of the RSA 2048 EK certificate (TCG EK Credential Profile)."""

PCR_BANKS: Final[dict[str, tuple[int, int]]] = {
    "sha1": (0x0004, 20),
    "sha256": (0x000B, 32),
    "sha384": (0x000C, 48),
    "sha512": (0x000D, 64),
}
"""PCR bank name → (TPM_ALG_ID, digest size)."""

PCR_COUNT: Final = 24
SVID_FILE: Final = "svid.pem"
KEY_FILE: Final = "svid.key"
BUNDLE_FILE: Final = "bundle.pem"
JWT_FILE: Final = "jwt"
DEVICE_CN: Final = "docket device"

_TOOL_TIMEOUT: Final = 60.0
_MAX_STDERR: Final = 400
# tpm2-tss prefixes its log lines with level, module, file, line and function.
_TSS_PREFIX = re.compile(r"^(?:WARNING|ERROR|WARN|INFO|DEBUG):\w+:\S+:\d+:\S+\(\)\s*")
_SELECTION = re.compile(r"^(\w+):(\d+(?:,\d+)*)$")

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


# --- the TPM -----------------------------------------------------------------------------


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


def _der_prefix(data: bytes, what: str) -> bytes:
    """The DER SEQUENCE at the start of ``data``, without the padding NV indexes may hold.

    Raises ``TpmError`` when ``data`` does not start with a complete DER SEQUENCE.
    """
    if len(data) < 2 or data[0] != 0x30:
        raise TpmError(f"{what} is not a DER certificate")
    first = data[1]
    if first < 0x80:
        header, length = 2, first
    else:
        size = first & 0x7F
        if not 1 <= size <= 4 or len(data) < 2 + size:
            raise TpmError(f"{what} is not a DER certificate (bad length)")
        header, length = 2 + size, int.from_bytes(data[2 : 2 + size], "big")
    end = header + length
    if end > len(data):
        raise TpmError(f"{what} is truncated: {len(data)} bytes of a {end}-byte certificate")
    return data[:end]


def pcr_selection(banks: Mapping[str, Iterable[int]]) -> str:
    """The tpm2-tools selection for ``{"sha256": [0, 1, 2]}``: ``"sha256:0,1,2"``.

    Banks keep their order, indexes are sorted and deduplicated, banks joined by ``+``.
    Raises ``InvalidRequestError`` for an unknown bank, a PCR outside 0-23, an empty bank
    or no bank at all.
    """
    parts: list[str] = []
    for bank, indexes in banks.items():
        if bank not in PCR_BANKS:
            known = ", ".join(PCR_BANKS)
            raise InvalidRequestError(f"unknown PCR bank {bank!r}: expected one of {known}")
        chosen = sorted(set(indexes))
        if not chosen:
            raise InvalidRequestError(f"PCR bank {bank} selects no PCR")
        bad = [i for i in chosen if not 0 <= i < PCR_COUNT]
        if bad:
            raise InvalidRequestError(f"PCR {bad[0]} of bank {bank} is outside 0-{PCR_COUNT - 1}")
        parts.append(f"{bank}:{','.join(str(i) for i in chosen)}")
    if not parts:
        raise InvalidRequestError("no PCRs selected")
    return "+".join(parts)


def _parse_selection(selection: str) -> list[tuple[str, list[int]]]:
    """``"sha256:0,1+sha1:7"`` → ``[("sha256", [0, 1]), ("sha1", [7])]``, in the order
    tpm2-tools reports them (banks as given, indexes ascending). Raises
    ``InvalidRequestError`` for anything else (``all``, names of PCR sets, bad banks)."""
    merged: dict[str, set[int]] = {}
    for part in selection.split("+"):
        match = _SELECTION.match(part.strip())
        if match is None:
            raise InvalidRequestError(
                f"PCR selection {selection!r} is not of the form sha256:0,1,2[+sha1:0,...]"
            )
        merged.setdefault(match[1], set()).update(int(i) for i in match[2].split(","))
    normal = pcr_selection(merged)  # validates banks and indexes
    return [
        (bank, [int(i) for i in indexes.split(",")])
        for bank, _, indexes in (p.partition(":") for p in normal.split("+"))
    ]


def _split_pcr_values(selection: str, raw: bytes) -> dict[tuple[int, int], bytes]:
    """Cut ``tpm2_pcrread -o`` output (the digests back to back) into
    ``{(alg_id, index): digest}``. Raises ``TpmError`` when the size does not match,
    which is what an inactive bank looks like."""
    layout = [
        (PCR_BANKS[bank][0], index, PCR_BANKS[bank][1])
        for bank, indexes in _parse_selection(selection)
        for index in indexes
    ]
    expected = sum(size for _, _, size in layout)
    if len(raw) != expected:
        raise TpmError(
            f"tpm2_pcrread returned {len(raw)} bytes for {selection}, expected {expected}: "
            "is every bank of the selection active on this TPM? (tpm2_getcap pcrs)"
        )
    values: dict[tuple[int, int], bytes] = {}
    offset = 0
    for alg, index, size in layout:
        values[(alg, index)] = raw[offset : offset + size]
        offset += size
    return values


class Tpm:
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

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

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
        return ek_public, _der_prefix(self._read("ek.crt"), what)

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
        _parse_selection(selection)
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
        _parse_selection(selection)
        (self._dir / "pcrs.bin").unlink(missing_ok=True)
        self._run("tpm2_pcrread", "-o", "pcrs.bin", selection)
        return _split_pcr_values(selection, self._read("pcrs.bin"))


# --- the flow ----------------------------------------------------------------------------


class AttestResult(BaseModel):
    """What ``attest`` obtained and where it wrote it.

    ``posture`` holds the claims Docket established (``device_class``, ``ek_hash``,
    ``secure_boot``, ...); the expiries are aware UTC datetimes; ``audit_index`` is the
    issuance's position in Docket's audit log.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    spiffe_id: str
    device_class: str
    svid_expires_at: datetime
    jwt_expires_at: datetime
    posture: dict[str, Any]
    audit_index: int
    svid_path: Path
    key_path: Path
    bundle_path: Path
    jwt_path: Path


def _is_local_target(target: str) -> bool:
    """True for a gRPC target on this machine: a Unix socket, localhost, a loopback IP."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    rest = target
    for scheme in ("dns:///", "ipv4:", "ipv6:"):
        if rest.startswith(scheme):
            rest = rest[len(scheme) :]
            break
    if rest.startswith("["):
        host = rest[1 : rest.find("]")] if "]" in rest else rest
    elif rest.count(":") == 1:
        host = rest.partition(":")[0]
    else:
        host = rest
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _dial(server: str, tls: TLSConfig | None, insecure_plaintext: bool) -> grpc.Channel:
    if tls is not None:
        return grpc.secure_channel(server, tls.channel_credentials(), tls.channel_options())
    if not (_is_local_target(server) or insecure_plaintext):
        raise ConfigurationError(
            f"refusing plaintext gRPC to {server}, which is not loopback: the JWT and the "
            "certificates would cross the network in the clear; configure TLS"
        )
    return grpc.insecure_channel(server)


def _refusal(exc: grpc.RpcError) -> PermissionDeniedError:
    """PERMISSION_DENIED from the Attestation service: Docket refused, with its reason."""
    details: Any = getattr(exc, "details", None)
    reason = details() if callable(details) else None
    text = reason if isinstance(reason, str) and reason else "(no reason given)"
    status = status_of(exc).name
    return PermissionDeniedError(f"attestation refused: {text}", status=status)


def _call(
    method: Callable[..., _Response],
    request: _Request,
    *,
    call: str,
    timeout: float,
    retry: RetryPolicy | None = None,
) -> _Response:
    """One RPC, its failure mapped to the SDK's errors (``call`` names it); UNAVAILABLE
    is retried under ``retry``, given only for calls that are safe to repeat."""
    attempts = (retry or RetryPolicy(retries=0)).start(call)
    while True:
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as exc:
            if status_of(exc) in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNAUTHENTICATED,
            ):
                raise _refusal(exc) from exc
            time.sleep(attempts.backoff_or_raise(exc))


def _selection_from_challenge(pcrs: Iterable[pb.PcrSelection]) -> str:
    banks: dict[str, set[int]] = {}
    for selection in pcrs:
        banks.setdefault(selection.hash, set()).update(selection.pcrs)
    try:
        return pcr_selection(banks)
    except InvalidRequestError as exc:
        raise ServerError(f"the challenge asks for PCRs this agent cannot quote: {exc}") from exc


def _pcr_values(values: Mapping[tuple[int, int], bytes]) -> list[pb.PcrValue]:
    names = {alg: name for name, (alg, _) in PCR_BANKS.items()}
    return [
        pb.PcrValue(hash=names[alg], index=index, value=value)
        for (alg, index), value in values.items()
    ]


def _device_key_and_csr() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A fresh ECDSA P-256 device key and its DER PKCS#10 request (the server sets the
    SPIFFE ID, so the subject is only a label)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE_CN)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.DER)


def _check_response(
    response: pb.AttestResponse, key: ec.EllipticCurvePrivateKey, call: str
) -> None:
    """Refuse a response that is incomplete or certifies another key than ours."""
    for name in ("spiffe_id", "svid_pem", "bundle_pem", "jwt"):
        if not getattr(response, name):
            raise ServerError(f"{call} returned no {name}")
    present = {
        "svid_expires_at": response.HasField("svid_expires_at"),
        "jwt_expires_at": response.HasField("jwt_expires_at"),
        "posture": response.HasField("posture"),
    }
    for name, there in present.items():
        if not there:
            raise ServerError(f"{call} returned no {name}")
    try:
        leaf = x509.load_pem_x509_certificates(response.svid_pem.encode())[0]
        leaf_key = leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except ValueError as exc:
        raise ServerError(f"{call} returned an unreadable svid_pem: {exc}") from exc
    ours = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_key != ours:
        raise ServerError(f"{call} returned an SVID for another key than the device key")


def _prepare_out(out: Path) -> Path:
    """Create ``out`` (mode 0700) when missing. Raises ``ConfigurationError``."""
    try:
        if not out.is_dir():
            out.mkdir(mode=0o700, parents=True)
            out.chmod(0o700)  # mkdir's mode is masked by the umask
    except OSError as exc:
        raise ConfigurationError(f"cannot create the output directory {out}: {exc}") from exc
    return out


def _write_atomically(directory: Path, files: Mapping[str, tuple[bytes, int]]) -> None:
    """Write ``{name: (content, mode)}`` into ``directory`` so that each file is either
    the old or the new one: every file is first written and fsynced under a temporary
    name in the same directory, then all are renamed over the old ones together.

    Raises ``ConfigurationError`` when a file cannot be written (the old set stays).
    """
    staged: list[tuple[str, Path]] = []
    try:
        for name, (content, mode) in files.items():
            # mkstemp creates the file 0600, so a key is never readable by others.
            fd, temp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
            staged.append((name, Path(temp_name)))
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fchmod(handle.fileno(), mode)
                os.fsync(handle.fileno())
        for name, temp in staged:
            os.replace(temp, directory / name)
        staged.clear()
        _fsync_directory(directory)
    except OSError as exc:
        raise ConfigurationError(f"cannot write the credentials into {directory}: {exc}") from exc
    finally:
        for _, temp in staged:
            temp.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _credential_files(
    response: pb.AttestResponse, key: ec.EllipticCurvePrivateKey
) -> dict[str, tuple[bytes, int]]:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        SVID_FILE: (response.svid_pem.encode(), 0o644),
        KEY_FILE: (key_pem, 0o600),
        BUNDLE_FILE: (response.bundle_pem.encode(), 0o644),
        # a JWT-SVID is a bearer token: as secret as the key while it lives
        JWT_FILE: (response.jwt.encode(), 0o600),
    }


def _posture_dict(posture: pb.Posture) -> dict[str, Any]:
    return {field.name: getattr(posture, field.name) for field in posture.DESCRIPTOR.fields}


def attest(
    server: str,
    tcti: str,
    out: Path,
    *,
    audience: str = "docket",
    tls: TLSConfig | None = None,
    timeout: float = 30.0,
    ek_intermediates: Sequence[bytes] = (),
    insecure_plaintext: bool = False,
) -> AttestResult:
    """Attest the TPM at ``tcti`` to Docket at ``server`` (``HOST:PORT``) and write the
    credentials into ``out``: ``svid.pem`` (leaf then chain), ``svid.key`` (PKCS#8,
    0600), ``bundle.pem`` and ``jwt`` (0600). ``out`` is created 0700 when missing.

    Every run is a full attestation with a fresh device key, so running it again renews;
    each file is replaced atomically. ``audience`` is the JWT-SVID's; ``tls`` configures
    the channel (plaintext is allowed only to loopback unless ``insecure_plaintext``);
    ``timeout`` is each call's deadline in seconds; ``ek_intermediates`` are DER
    certificates between the EK certificate and its root, when the TPM lacks them.

    Raises ``PermissionDeniedError`` ("attestation refused: <reason>") when Docket
    refuses the EK, the AK or the evidence; ``TpmError``; ``TransportError`` when Docket
    cannot be reached; ``ConfigurationError`` for unusable settings or an unwritable
    ``out``; ``ServerError`` for a response the agent cannot use.
    """
    if not timeout > 0:
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout}")
    channel = _dial(server, tls, insecure_plaintext)
    _prepare_out(out)
    try:
        with Tpm(tcti) as tpm:
            ek_public, ek_certificate = tpm.create_ek()
            ak_public = tpm.create_ak()
            stub = AttestationStub(channel)
            challenge = _call(
                stub.Challenge,
                pb.ChallengeRequest(
                    ek_public=ek_public,
                    ek_certificate=ek_certificate or b"",
                    ek_intermediates=list(ek_intermediates),
                    ak_public=ak_public,
                ),
                call=f"Challenge on {server}",
                timeout=timeout,
                retry=RetryPolicy(),
            )
            selection = _selection_from_challenge(challenge.pcrs)
            secret = tpm.activate(challenge.credential)
            quote, signature = tpm.quote(challenge.nonce, selection)
            values = tpm.pcrread(selection)
            key, csr = _device_key_and_csr()
            call = f"Attest on {server}"
            # not retried: the challenge is consumed by its first answer
            response = _call(
                stub.Attest,
                pb.AttestRequest(
                    challenge_id=challenge.challenge_id,
                    activated_secret=secret,
                    quote=quote,
                    signature=signature,
                    pcr_values=_pcr_values(values),
                    csr=csr,
                    audience=audience,
                ),
                call=call,
                timeout=timeout,
            )
    finally:
        channel.close()
    _check_response(response, key, call)
    _write_atomically(out, _credential_files(response, key))
    posture = _posture_dict(response.posture)
    return AttestResult(
        spiffe_id=response.spiffe_id,
        device_class=response.posture.device_class,
        svid_expires_at=response.svid_expires_at.ToDatetime(tzinfo=UTC),
        jwt_expires_at=response.jwt_expires_at.ToDatetime(tzinfo=UTC),
        posture=posture,
        audit_index=response.audit_index,
        svid_path=out / SVID_FILE,
        key_path=out / KEY_FILE,
        bundle_path=out / BUNDLE_FILE,
        jwt_path=out / JWT_FILE,
    )
