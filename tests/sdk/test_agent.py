"""The device agent's pure parts: PCR selections, NV certificate trimming, tpm2-tools error
lines, atomic credential files, gRPC error mapping and the plaintext rule.

The TPM itself is exercised against a real swtpm in tests/e2e/test_agent_tpm.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sdk import (
    ConfigurationError,
    InvalidRequestError,
    PermissionDeniedError,
    ServerError,
    TransportError,
)
from sdk._retry import RetryPolicy
from sdk.agent import (
    Tpm,
    TpmError,
    _call,
    _check_response,
    _credential_files,
    _der_prefix,
    _dial,
    _is_local_target,
    _parse_selection,
    _prepare_out,
    _selection_from_challenge,
    _split_pcr_values,
    _stderr_line,
    _write_atomically,
    pcr_selection,
)
from sdk.v1 import attestation_pb2 as pb

# --- PCR selections ----------------------------------------------------------------------

SELECTIONS = [
    pytest.param({"sha256": [0, 1, 2]}, "sha256:0,1,2", id="one-bank"),
    pytest.param({"sha256": [7, 0, 7, 3]}, "sha256:0,3,7", id="sorted-deduplicated"),
    pytest.param({"sha256": [0], "sha1": [23]}, "sha256:0+sha1:23", id="banks-keep-order"),
    pytest.param({"sha512": range(3)}, "sha512:0,1,2", id="any-iterable"),
]


@pytest.mark.parametrize(("banks", "expected"), SELECTIONS)
def test_pcr_selection(banks: dict[str, Any], expected: str) -> None:
    assert pcr_selection(banks) == expected


BAD_SELECTIONS = [
    pytest.param({"md5": [0]}, "unknown PCR bank 'md5'", id="unknown-bank"),
    pytest.param({"sha256": [24]}, "PCR 24 of bank sha256 is outside 0-23", id="too-high"),
    pytest.param({"sha256": [-1]}, "outside", id="negative"),
    pytest.param({"sha256": []}, "selects no PCR", id="empty-bank"),
    pytest.param({}, "no PCRs selected", id="nothing"),
]


@pytest.mark.parametrize(("banks", "message"), BAD_SELECTIONS)
def test_bad_pcr_selection_is_refused(banks: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        pcr_selection(banks)


def test_challenge_selections_merge_by_bank() -> None:
    pcrs = [
        pb.PcrSelection(hash="sha256", pcrs=[4, 0]),
        pb.PcrSelection(hash="sha1", pcrs=[1]),
        pb.PcrSelection(hash="sha256", pcrs=[7, 4]),
    ]
    assert _selection_from_challenge(pcrs) == "sha256:0,4,7+sha1:1"


@pytest.mark.parametrize(
    "pcrs",
    [
        pytest.param([], id="none"),
        pytest.param([pb.PcrSelection(hash="sm3_256", pcrs=[0])], id="unknown-bank"),
    ],
)
def test_challenge_the_agent_cannot_quote_is_a_server_error(pcrs: list[pb.PcrSelection]) -> None:
    with pytest.raises(ServerError, match="cannot quote"):
        _selection_from_challenge(pcrs)


def test_selection_string_parses_back() -> None:
    assert _parse_selection("sha256:7,0+sha1:3+sha256:1") == [("sha256", [0, 1, 7]), ("sha1", [3])]


@pytest.mark.parametrize("text", ["all", "sha256", "sha256:", "sha256:0,,1", "sha256:a", ""])
def test_unparseable_selection_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequestError):
        _parse_selection(text)


def test_pcr_values_are_cut_in_selection_order() -> None:
    raw = b"".join(bytes([i]) * 32 for i in (0, 1)) + bytes([9]) * 20
    assert _split_pcr_values("sha256:0,1+sha1:5", raw) == {
        (0x000B, 0): bytes([0]) * 32,
        (0x000B, 1): bytes([1]) * 32,
        (0x0004, 5): bytes([9]) * 20,
    }


def test_pcr_values_of_the_wrong_size_are_a_tpm_error() -> None:
    with pytest.raises(TpmError, match="returned 32 bytes for sha256:0,1, expected 64"):
        _split_pcr_values("sha256:0,1", bytes(32))


# --- the EK certificate in NV ------------------------------------------------------------


def _certificate(subject: str = "device") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def test_nv_padding_is_removed_from_the_certificate() -> None:
    der = _certificate()[0].public_bytes(serialization.Encoding.DER)
    assert _der_prefix(der + b"\x00" * 100 + b"\xff" * 7, "the EK certificate") == der
    assert _der_prefix(der, "the EK certificate") == der


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "not a DER certificate", id="empty"),
        pytest.param(b"\xff" * 64, "not a DER certificate", id="erased-nv"),
        pytest.param(b"\x30\x85\x00\x00\x00\x00\x01", "bad length", id="length-of-5-bytes"),
        pytest.param(b"\x30\x82\x04\x00" + bytes(10), "truncated", id="truncated"),
    ],
)
def test_nv_content_that_is_no_certificate_is_a_tpm_error(data: bytes, message: str) -> None:
    with pytest.raises(TpmError, match=message):
        _der_prefix(data, "the EK certificate")


# --- tpm2-tools errors -------------------------------------------------------------------

# as tpm2-tools 5.4 prints it, trailing spaces and a repeated line included
DEAD_TCTI_STDERR = "\n".join(
    [
        "WARNING:tcti:src/util/io.c:262:socket_connect() Failed to connect to host 127.0.0.1, "
        "port 1: errno 111: Connection refused ",
        "ERROR:tcti:src/tss2-tcti/tcti-swtpm.c:614:Tss2_Tcti_Swtpm_Init() Cannot connect to "
        "swtpm TPM socket ",
        "ERROR:tcti:src/tss2-tcti/tctildr.c:428:Tss2_TctiLdr_Initialize_Ex() Failed to "
        "instantiate TCTI ",
        "ERROR:tcti:src/tss2-tcti/tctildr.c:428:Tss2_TctiLdr_Initialize_Ex() Failed to "
        "instantiate TCTI ",
        'ERROR: Could not load tcti, got: "swtpm:host=127.0.0.1,port=1"',
        "",
    ]
)


def test_tpm2_tools_stderr_becomes_one_readable_line() -> None:
    assert _stderr_line(DEAD_TCTI_STDERR) == (
        "Failed to connect to host 127.0.0.1, port 1: errno 111: Connection refused; "
        "Cannot connect to swtpm TPM socket; Failed to instantiate TCTI; "
        'ERROR: Could not load tcti, got: "swtpm:host=127.0.0.1,port=1"'
    )
    assert _stderr_line("") == "(no output on stderr)"
    long = _stderr_line("x" * 1000)
    assert len(long) == 400
    assert long.endswith("...")


def test_missing_tpm2_tools_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without tpm2-tools
    with Tpm("swtpm:host=127.0.0.1,port=1") as tpm, pytest.raises(TpmError) as caught:
        tpm.create_ek()
    assert str(caught.value) == "tpm2_createek not found on PATH: install tpm2-tools"


def test_tpm_working_directory_is_private_and_removed() -> None:
    with Tpm("device:/dev/null") as tpm:
        directory = tpm.directory
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert not directory.exists()


def test_empty_tcti_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="TCTI is empty"):
        Tpm(" ")


# --- credential files --------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_output_directory_is_created_0700(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # the mode must not depend on the caller's umask
    try:
        out = _prepare_out(tmp_path / "a" / "creds")
    finally:
        os.umask(old_umask)
    assert out.is_dir()
    assert _mode(out) == 0o700


def test_existing_output_directory_is_left_as_it_is(tmp_path: Path) -> None:
    tmp_path.chmod(0o750)
    _prepare_out(tmp_path)
    assert _mode(tmp_path) == 0o750


def _response(key: ec.EllipticCurvePrivateKey, **changes: Any) -> pb.AttestResponse:
    cert, _ = _certificate("leaf")
    leaf = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    response = pb.AttestResponse(
        spiffe_id="spiffe://docket.test/device/ab",
        svid_pem=leaf.public_bytes(serialization.Encoding.PEM).decode(),
        bundle_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        jwt="eyJ.eyJ.sig",
        posture=pb.Posture(attested=True, device_class="dev"),
        audit_index=3,
    )
    response.svid_expires_at.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
    response.jwt_expires_at.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
    for name, value in changes.items():
        if value is None:
            response.ClearField(name)  # type: ignore[arg-type]  # a field name from the test table
        else:
            setattr(response, name, value)
    return response


def test_credential_files_are_written_with_their_modes(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    response = _response(key)
    _write_atomically(tmp_path, _credential_files(response, key))

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
    _write_atomically(tmp_path, _credential_files(_response(first), first))
    old_inode = (tmp_path / "svid.key").stat().st_ino
    second = ec.generate_private_key(ec.SECP256R1())
    _write_atomically(tmp_path, _credential_files(_response(second), second))

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
        _write_atomically(tmp_path, files)
    assert (tmp_path / "svid.pem").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["svid.pem"]


def test_response_for_another_key_is_refused() -> None:
    ours = ec.generate_private_key(ec.SECP256R1())
    theirs = ec.generate_private_key(ec.SECP256R1())
    _check_response(_response(ours), ours, "Attest")
    with pytest.raises(ServerError, match="another key"):
        _check_response(_response(theirs), ours, "Attest")


@pytest.mark.parametrize("field", ["spiffe_id", "svid_pem", "jwt", "svid_expires_at", "posture"])
def test_incomplete_response_is_refused(field: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ServerError, match=f"Attest returned no {field}"):
        _check_response(_response(key, **{field: None}), key, "Attest")


# --- gRPC: error mapping and the plaintext rule ------------------------------------------


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def _failing(code: grpc.StatusCode, details: str, calls: list[float]) -> Any:
    def method(request: object, *, timeout: float) -> NoReturn:
        calls.append(timeout)
        raise _Failed(code, details)

    return method


ERRORS = [
    pytest.param(
        grpc.StatusCode.PERMISSION_DENIED,
        PermissionDeniedError,
        "attestation refused: EK not trusted: no EK certificate chaining to a configured root",
        id="refused",
    ),
    pytest.param(
        grpc.StatusCode.INVALID_ARGUMENT,
        InvalidRequestError,
        "Challenge on h:1 failed: INVALID_ARGUMENT: EK not trusted",
        id="invalid",
    ),
    pytest.param(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        TransportError,
        "Challenge on h:1 failed: DEADLINE_EXCEEDED: EK not trusted",
        id="deadline",
    ),
    pytest.param(
        grpc.StatusCode.INTERNAL, ServerError, "Challenge on h:1 failed: INTERNAL", id="internal"
    ),
]


@pytest.mark.parametrize(("code", "kind", "message"), ERRORS)
def test_rpc_errors_map_to_the_sdk_tree(
    code: grpc.StatusCode, kind: type[Exception], message: str
) -> None:
    details = "EK not trusted: no EK certificate chaining to a configured root"
    calls: list[float] = []
    with pytest.raises(kind) as caught:
        _call(_failing(code, details, calls), object(), call="Challenge on h:1", timeout=2.0)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value.__cause__, grpc.RpcError)
    assert calls == [2.0]  # nothing but UNAVAILABLE is retried


def test_unavailable_is_retried_only_when_asked() -> None:
    calls: list[float] = []
    method = _failing(grpc.StatusCode.UNAVAILABLE, "connection refused", calls)
    with pytest.raises(TransportError, match="after 3 attempts: UNAVAILABLE"):
        _call(method, object(), call="Challenge", timeout=1.0, retry=RetryPolicy(2, 0.0, 0.0))
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(TransportError, match="Attest failed: UNAVAILABLE"):
        _call(method, object(), call="Attest", timeout=1.0)
    assert len(calls) == 1


LOCAL_TARGETS = [
    pytest.param("127.0.0.1:50051", True, id="ipv4-loopback"),
    pytest.param("127.9.9.9:50051", True, id="ipv4-loopback-net"),
    pytest.param("localhost:50051", True, id="localhost"),
    pytest.param("[::1]:50051", True, id="ipv6-loopback"),
    pytest.param("dns:///localhost:50051", True, id="dns-scheme"),
    pytest.param("unix:/run/docket.sock", True, id="unix-socket"),
    pytest.param("10.0.0.5:50051", False, id="private-ip"),
    pytest.param("docket.example.com:443", False, id="hostname"),
    pytest.param("localhost.example.com:443", False, id="localhost-prefix"),
    pytest.param("[2001:db8::1]:50051", False, id="ipv6"),
]


@pytest.mark.parametrize(("target", "local"), LOCAL_TARGETS)
def test_local_targets(target: str, local: bool) -> None:
    assert _is_local_target(target) is local


def test_plaintext_off_loopback_is_refused_unless_asked_for() -> None:
    with pytest.raises(ConfigurationError, match=r"refusing plaintext gRPC to 10\.0\.0\.5:50051"):
        _dial("10.0.0.5:50051", None, insecure_plaintext=False)
    _dial("10.0.0.5:50051", None, insecure_plaintext=True).close()
    _dial("127.0.0.1:50051", None, insecure_plaintext=False).close()


def test_importing_sdk_does_not_import_the_agent() -> None:
    code = "import sys, sdk; sys.exit('sdk.agent' in sys.modules or 'cryptography' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
