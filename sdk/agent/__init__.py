"""The device attestation agent: a TPM 2.0 earns an X.509 SVID and a JWT-SVID.

``attest(server, tcti, out)`` runs the whole ``docket.v1.Attestation`` flow (what
``docket attest`` does):

    Tpm.create_ek, Tpm.create_ak ──Challenge──> credential, nonce, PCRs to quote
    Tpm.activate, Tpm.quote, Tpm.pcrread, the boot event log (the kernel's, or a file),
    a fresh device key + CSR ──Attest──> credentials
    ──> svid.pem, svid.key, bundle.pem, jwt in ``out`` (each replaced atomically)

Two TPM drivers give the flow the same evidence, byte for byte in the same formats, so
the verifier cannot tell them apart:

- ``Tpm`` drives tpm2-tools against a TCTI (``swtpm:host=127.0.0.1,port=2321``,
  ``device:/dev/tpmrm0``, ...) in a private working directory;
- ``EsapiTpm`` drives tpm2-pytss (ESAPI) in-process, the optional extra
  ``pip install 'docket[tpm]'`` (it builds against libtss2-dev).

``attest(..., backend=...)`` picks one: ``"tpm2-tools"``, ``"tpm2-pytss"``, or ``"auto"``
(the default): tpm2-tools when ``tpm2_createek`` is on PATH, else tpm2-pytss when it
imports. Both flush transient objects after every command, since a TPM without a
resource manager (swtpm) holds only three.

``Agent(attest, out, socket)`` is what ``docket agent run`` runs: it attests, writes the
credentials into ``out``, renews them at half their lifetime (re-attesting, so the
posture is current), and serves them on the SPIFFE Workload API on the Unix socket
``socket``, to any SPIFFE client (py-spiffe, go-spiffe, Envoy). Its JWT-SVIDs, for any
audiences a workload asks, come from ``mint_jwt_svid``: no TPM, the SVID's key signs a
single-use challenge and the audiences (``jwt_svid_proof``, the bytes signed).

One module per reason to change:

    _attest.py        the flow: Challenge, the TPM's answers, Attest, the checked response;
                      which boot event log is sent (read_event_log)
    _backend.py       which driver: tpm2-tools or tpm2-pytss, and "auto"
    _tpm.py           the tpm2-tools driver: subprocesses, transient-object flushing
    _esapi.py         the tpm2-pytss driver: ESAPI calls, transient-object flushing
    _nv.py            the EK certificate's NV index, the DER cut from its padding (pure)
    _pcrs.py          PCR selections and the values tpm2_pcrread returns (pure)
    _channel.py       the gRPC channel: plaintext only to loopback, errors mapped
    _credentials.py   the device key and CSR, the credential files written atomically
    _jwt.py           JWT-SVIDs for any audiences, proven with the SVID's key
    _identity.py      the SVID served (read back from the files), its JWT keys, checking
                      a JWT-SVID (ValidateJWTSVID)
    _renewal.py       when to renew and back off, what is served now, the renewal loop,
                      JWT-SVIDs minted per audience
    _workload_api.py  the SPIFFE Workload API (gRPC on a Unix socket; messages in
                      sdk/workload)
    _daemon.py        ``Agent``: the renewal loop and the Workload API together

This package needs ``cryptography`` (the device key and its CSR), so ``import sdk`` does
not import it; tpm2-pytss is imported only when its driver is used. Every call raises
only ``DocketError`` subclasses: ``TpmError`` when the TPM, tpm2-tools or tpm2-pytss fail
or are missing, ``PermissionDeniedError`` ("attestation refused: ...") when Docket
refuses the evidence, and the rest of the tree as for the decision client.
"""

from sdk._errors import TpmError
from sdk.agent._attest import AttestResult, attest
from sdk.agent._backend import TpmBackend
from sdk.agent._daemon import Agent
from sdk.agent._esapi import EsapiTpm
from sdk.agent._jwt import MintedJwt, jwt_svid_proof, mint_jwt_svid
from sdk.agent._pcrs import pcr_selection
from sdk.agent._tpm import Tpm

__all__ = [
    "Agent",
    "AttestResult",
    "EsapiTpm",
    "MintedJwt",
    "Tpm",
    "TpmBackend",
    "TpmError",
    "attest",
    "jwt_svid_proof",
    "mint_jwt_svid",
    "pcr_selection",
]
