"""The flow's checks (sdk/agent/_attest.py): the PCRs a challenge asks for, and the
response Docket returns to Attest.

The whole flow against a real ``docket serve`` and swtpm is tests/e2e/test_attest_flow.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from agent_responses import attest_response
from cryptography.hazmat.primitives.asymmetric import ec

from sdk import ConfigurationError, ServerError
from sdk.agent._attest import (
    MAX_EVENT_LOG_BYTES,
    _check_response,
    _posture_dict,
    _selection_from_challenge,
    read_event_log,
)
from sdk.v1 import attestation_pb2 as pb


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


def test_response_for_another_key_is_refused() -> None:
    ours = ec.generate_private_key(ec.SECP256R1())
    theirs = ec.generate_private_key(ec.SECP256R1())
    _check_response(attest_response(ours), ours, "Attest")
    with pytest.raises(ServerError, match="another key"):
        _check_response(attest_response(theirs), ours, "Attest")


@pytest.mark.parametrize("field", ["spiffe_id", "svid_pem", "jwt", "svid_expires_at", "posture"])
def test_incomplete_response_is_refused(field: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ServerError, match=f"Attest returned no {field}"):
        _check_response(attest_response(key, **{field: None}), key, "Attest")


def test_the_event_log_is_the_file_given_else_the_kernels_when_readable(tmp_path: Path) -> None:
    kernel = tmp_path / "binary_bios_measurements"
    given = tmp_path / "recorded.bin"
    given.write_bytes(b"recorded log")
    assert read_event_log(given, kernel=kernel) == b"recorded log"
    assert read_event_log(None, kernel=kernel) == b""  # no kernel log: none sent
    kernel.write_bytes(b"kernel log")
    assert read_event_log(None, kernel=kernel) == b"kernel log"
    kernel.chmod(0)
    if os.geteuid() != 0:  # root reads it anyway
        assert read_event_log(None, kernel=kernel) == b""  # not readable: none sent


def test_an_event_log_file_that_cannot_be_read_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"event log .*missing\.bin: cannot read"):
        read_event_log(tmp_path / "missing.bin", kernel=tmp_path / "none")
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(MAX_EVENT_LOG_BYTES + 1))
    with pytest.raises(ConfigurationError, match="more than the 1048576 bytes Docket accepts"):
        read_event_log(big, kernel=tmp_path / "none")


def test_the_posture_the_agent_reports_has_a_dbx_revision_only_when_docket_sent_one() -> None:
    assert "dbx_revision" not in _posture_dict(pb.Posture(device_class="dev"))
    assert _posture_dict(pb.Posture(dbx_revision=0))["dbx_revision"] == 0
