"""Quote hash policy against a real ``docket serve`` and a real swtpm (issue 14, finding 12).

A device whose AK signs its quote with SHA-1 (``tpm2_createak -g sha1``, ``tpm2_quote -g
sha1``) is refused by default, the refusal naming the algorithm, and the refusal is an
audit entry; with ``quote_hashes`` allowing sha1 (``DOCKET_QUOTE_HASHES``) the same device
attests. The device is the agent of sdk.agent with its TPM driver quoting in SHA-1.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from e2e.docket_process import Docket, start_docket
from swtpm import ProvisionedState, SoftwareTpm

from sdk import PermissionDeniedError, agent
from sdk.agent import _backend

pytestmark = pytest.mark.e2e

SHA1_REFUSAL = "quote signed with sha1, which this appraisal does not accept"


class Sha1Tpm(agent.Tpm):
    """The agent's TPM driver, with an AK whose scheme hash is SHA-1 and quotes signed so:
    what an old or downgraded agent sends."""

    def create_ak(self) -> bytes:
        self._run(
            "tpm2_createak",
            *("-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha1", "-s", "ecdsa"),
            *("-u", "ak.pub", "-n", "ak.name"),
        )
        self._has_ak = True
        return self._read("ak.pub")

    def quote(self, nonce: bytes, selection: str) -> tuple[bytes, bytes]:
        self._run(
            "tpm2_quote",
            *("-c", "ak.ctx", "-q", nonce.hex(), "-l", selection),
            *("-m", "quote.msg", "-s", "quote.sig", "-g", "sha1"),
        )
        return self._read("quote.msg"), self._read("quote.sig")


def _serve(root: Path, provisioned: ProvisionedState, env: dict[str, str]) -> Docket:
    roots = root / "data" / "trust" / "ek-roots"
    roots.mkdir(parents=True)
    shutil.copy(provisioned.root_cert, roots / "swtpm-localca.pem")
    return start_docket(root, env=env)


def _attest_sha1(
    docket: Docket, swtpm: SoftwareTpm, provisioned: ProvisionedState, out: Path
) -> agent.AttestResult:
    issuer = x509.load_pem_x509_certificate(provisioned.issuer_cert.read_bytes())
    return agent.attest(
        f"127.0.0.1:{docket.grpc_port}",
        swtpm.env["TPM2TOOLS_TCTI"],
        out,
        ek_intermediates=[issuer.public_bytes(Encoding.DER)],
        backend="tpm2-tools",
    )


def test_sha1_signed_quote_is_refused_by_default(
    swtpm: SoftwareTpm,
    provisioned_tpm: ProvisionedState,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_backend, "Tpm", Sha1Tpm)  # the tpm2-tools driver the flow opens
    docket = _serve(tmp_path / "serve", provisioned_tpm, {})
    try:
        with pytest.raises(PermissionDeniedError, match=SHA1_REFUSAL):
            _attest_sha1(docket, swtpm, provisioned_tpm, tmp_path / "creds")
        assert not (tmp_path / "creds" / "svid.pem").exists()
        refusals = [e for e in docket.audit_entries("attestation") if e["decision"] == "deny"]
        assert [e["detail"]["reason"] for e in refusals] == [SHA1_REFUSAL], refusals
    finally:
        assert docket.stop() == 0, docket.log.read_text()


def test_sha1_signed_quote_is_accepted_when_the_setting_allows_it(
    swtpm: SoftwareTpm,
    provisioned_tpm: ProvisionedState,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_backend, "Tpm", Sha1Tpm)  # the tpm2-tools driver the flow opens
    env = {"DOCKET_QUOTE_HASHES": '["sha1", "sha256"]'}
    docket = _serve(tmp_path / "serve", provisioned_tpm, env)
    try:
        result = _attest_sha1(docket, swtpm, provisioned_tpm, tmp_path / "creds")
        assert result.device_class == "dev"
        assert result.svid_path.exists()
    finally:
        assert docket.stop() == 0, docket.log.read_text()
