"""The flow's checks (sdk/agent/_attest.py): the PCRs a challenge asks for, and the
response Docket returns to Attest.

The whole flow against a real ``docket serve`` and swtpm is tests/e2e/test_attest_flow.py.
"""

from __future__ import annotations

import pytest
from agent_responses import attest_response
from cryptography.hazmat.primitives.asymmetric import ec

from sdk import ServerError
from sdk.agent._attest import _check_response, _selection_from_challenge
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
