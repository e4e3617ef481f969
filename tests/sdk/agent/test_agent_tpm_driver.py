"""The TPM driver's parts that need no TPM (sdk/agent/_tpm.py): NV certificate trimming,
tpm2-tools error lines, a missing tpm2-tools, the private working directory.

The driver against a real swtpm is tests/e2e/test_agent_tpm.py.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from agent_responses import certificate
from cryptography.hazmat.primitives import serialization

from sdk import ConfigurationError
from sdk.agent import Tpm, TpmError
from sdk.agent._nv import der_prefix
from sdk.agent._tpm import _stderr_line

# --- the EK certificate in NV ------------------------------------------------------------


def test_nv_padding_is_removed_from_the_certificate() -> None:
    der = certificate()[0].public_bytes(serialization.Encoding.DER)
    assert der_prefix(der + b"\x00" * 100 + b"\xff" * 7, "the EK certificate") == der
    assert der_prefix(der, "the EK certificate") == der


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
        der_prefix(data, "the EK certificate")


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
