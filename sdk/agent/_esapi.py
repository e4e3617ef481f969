"""The TPM driver on tpm2-pytss (ESAPI), the optional extra ``pip install 'docket[tpm]'``.

``EsapiTpm`` gives the flow what the tpm2-tools driver (``_tpm.py``) gives it, byte for
byte in the same formats: the EK's TPM2B_PUBLIC from the same default template and its
certificate from NV, an AK made with tpm2_createak's template, the secret of a credential
in tpm2-tools' file format, a TPMS_ATTEST and TPMT_SIGNATURE, the PCR values. The keys
are kept as saved contexts; every transient object and session is flushed after each
command, since a TPM without a resource manager (swtpm) holds only three. Every failure
is a ``TpmError`` naming the TPM command.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar

from sdk._closing import Closing
from sdk._errors import ConfigurationError, TpmError
from sdk.agent._nv import EK_CERT_INDEX, der_prefix
from sdk.agent._pcrs import PCR_BANKS, parse_selection, split_pcr_values

if TYPE_CHECKING:
    from tpm2_pytss import ESAPI

__all__ = ["EXTRA", "EsapiTpm", "pytss_missing"]

EXTRA: Final = "pip install 'docket[tpm]'"
"""How to install tpm2-pytss (it builds against libtss2-dev, found with pkg-config)."""

_T = TypeVar("_T")
# TPML_DIGEST holds at most 8 digests: TPM2_PCR_Read answers 8 PCRs at a time.
_PCRS_PER_READ: Final = 8


def pytss_missing() -> str | None:
    """Why tpm2-pytss does not import here (the ImportError's words), or ``None``."""
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError as exc:  # the package, or the libtss2 it links to, is missing
        return str(exc)
    return None


class EsapiTpm(Closing):
    """A TPM 2.0 reached through tpm2-pytss's ESAPI and a TCTI.

    ``tcti`` is a tpm2-tools TCTI string (``swtpm:host=127.0.0.1,port=2321``,
    ``device:/dev/tpmrm0``). The same calls as ``Tpm`` (``create_ek``, ``create_ak``,
    ``activate``, ``quote``, ``pcrread``), returning the same bytes. Use it as a context
    manager (or call ``close()``). Raises ``TpmError`` when tpm2-pytss is not installed,
    the TCTI cannot be opened or a TPM command fails.
    """

    def __init__(self, tcti: str) -> None:
        if not tcti.strip():
            raise ConfigurationError("the TCTI is empty: e.g. device:/dev/tpmrm0")
        missing = pytss_missing()
        if missing is not None:
            raise TpmError(f"tpm2-pytss does not import ({missing}): {EXTRA}")
        # tpm2-tss logs its errors to stderr itself; the agent reports them as one line.
        # Only while this driver lives: tpm2-tools started later get the caller's setting.
        self._quieted = "TSS2_LOG" not in os.environ
        if self._quieted:
            os.environ["TSS2_LOG"] = "all+NONE"
        from tpm2_pytss import ESAPI, TSS2_Exception

        self.tcti = tcti
        self._ek: Any = None  # saved contexts (TPMS_CONTEXT) of the EK and the AK
        self._ak: Any = None
        self._esys: ESAPI | None = None
        try:
            self._esys = ESAPI(tcti)
        except (TSS2_Exception, ValueError) as exc:
            self.close()
            raise TpmError(f"cannot open the TPM at TCTI {tcti}: {exc}") from exc

    def close(self) -> None:
        """Close the ESAPI context (each command flushed what it loaded). Idempotent."""
        if self._esys is not None:
            self._esys.close()
            self._esys = None
        self._ek = self._ak = None
        if self._quieted:
            os.environ.pop("TSS2_LOG", None)
            self._quieted = False

    def _call(self, what: str, run: Callable[[ESAPI, list[Any]], _T]) -> _T:
        """Run ``run(esys, loaded)`` as one command, then flush every handle it appended
        to ``loaded`` (transient objects, sessions). Maps tpm2-pytss errors to
        ``TpmError``; a failing flush is reported only when the command succeeded."""
        from tpm2_pytss import TSS2_Exception

        if self._esys is None:
            raise TpmError("the TPM is closed")
        esys = self._esys
        loaded: list[Any] = []
        try:
            result = run(esys, loaded)
        except (TSS2_Exception, ValueError) as exc:
            for handle in loaded:
                with contextlib.suppress(TSS2_Exception):  # the command's error is the one
                    esys.flush_context(handle)
            raise TpmError(f"{what} failed (TCTI {self.tcti}): {exc}") from exc
        try:
            for handle in loaded:
                esys.flush_context(handle)
        except TSS2_Exception as exc:
            raise TpmError(f"flushing after {what} failed (TCTI {self.tcti}): {exc}") from exc
        return result

    @staticmethod
    def _ek_session(esys: ESAPI, loaded: list[Any]) -> Any:
        """A policy session satisfying the EK's policy (PolicySecret of the endorsement
        hierarchy), as tpm2_createak and tpm2_activatecredential make it."""
        from tpm2_pytss import ESYS_TR, TPM2_ALG, TPM2_SE

        session = esys.start_auth_session(
            ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, None, TPM2_ALG.SHA256
        )
        loaded.append(session)
        esys.policy_secret(ESYS_TR.ENDORSEMENT, session, expiration=0)
        return session

    def _load(self, esys: ESAPI, loaded: list[Any], context: Any) -> Any:
        handle = esys.context_load(context)
        loaded.append(handle)
        return handle

    def create_ek(self) -> tuple[bytes, bytes | None]:
        """Create the RSA 2048 endorsement key from the default template (TCG EK
        Credential Profile, the template and nonce NV indexes honoured).

        Returns its TPM2B_PUBLIC and the DER EK certificate from NV index 0x1c00002
        (trailing padding removed), or ``None`` when the TPM has no such index.
        """
        from tpm2_pytss import ESYS_TR
        from tpm2_pytss.utils import NVReadEK, create_ek_template

        def run(esys: ESAPI, loaded: list[Any]) -> tuple[bytes, bytes | None]:
            certificate, template = create_ek_template("EK-RSA2048", NVReadEK(esys))
            handle, public, *_ = esys.create_primary(
                None, template, primary_handle=ESYS_TR.ENDORSEMENT
            )
            loaded.append(handle)
            self._ek = esys.context_save(handle)
            return bytes(public.marshal()), certificate

        ek_public, certificate = self._call("TPM2_CreatePrimary (the EK)", run)
        if certificate is None:
            return ek_public, None
        what = f"the EK certificate in NV 0x{EK_CERT_INDEX:08x}"
        return ek_public, der_prefix(bytes(certificate), what)

    def create_ak(self) -> bytes:
        """Create the attestation key under the EK with tpm2_createak's template: ECC
        P-256, SHA-256, ECDSA, restricted signing. Returns its TPM2B_PUBLIC."""
        if self._ek is None:
            raise TpmError("create the EK (create_ek) before the AK")
        from tpm2_pytss import TPM2B_PUBLIC, TPMA_OBJECT, TPMT_PUBLIC

        attributes = (
            TPMA_OBJECT.RESTRICTED
            | TPMA_OBJECT.USERWITHAUTH
            | TPMA_OBJECT.SIGN_ENCRYPT
            | TPMA_OBJECT.FIXEDTPM
            | TPMA_OBJECT.FIXEDPARENT
            | TPMA_OBJECT.SENSITIVEDATAORIGIN
        )
        template = TPM2B_PUBLIC(
            publicArea=TPMT_PUBLIC.parse("ecc256:ecdsa-sha256:null", attributes, "sha256")
        )

        def run(esys: ESAPI, loaded: list[Any]) -> bytes:
            ek = self._load(esys, loaded, self._ek)
            private, public, *_ = esys.create(
                ek, None, template, session1=self._ek_session(esys, loaded)
            )
            ak = esys.load(ek, private, public, session1=self._ek_session(esys, loaded))
            loaded.append(ak)
            self._ak = esys.context_save(ak)
            return bytes(public.marshal())

        return self._call("TPM2_Create (the AK)", run)

    def _require_keys(self) -> None:
        if self._ek is None or self._ak is None:
            raise TpmError("create the EK and the AK (create_ek, create_ak) first")

    def activate(self, credential: bytes) -> bytes:
        """Recover the secret of a credential (tpm2-tools file format) made for this EK
        and AK, under the EK's policy (PolicySecret of the endorsement hierarchy)."""
        self._require_keys()
        from tpm2_pytss import ESYS_TR
        from tpm2_pytss.utils import tools_to_credential

        def run(esys: ESAPI, loaded: list[Any]) -> bytes:
            id_object, secret = tools_to_credential(credential)
            ak = self._load(esys, loaded, self._ak)
            ek = self._load(esys, loaded, self._ek)
            session = self._ek_session(esys, loaded)
            info = esys.activate_credential(
                ak, ek, id_object, secret, session1=ESYS_TR.PASSWORD, session2=session
            )
            return bytes(info)

        return self._call("TPM2_ActivateCredential", run)

    def quote(self, nonce: bytes, selection: str) -> tuple[bytes, bytes]:
        """Quote the PCRs of ``selection`` (``"sha256:0,1,2"``) over ``nonce`` with the AK.

        Returns the TPMS_ATTEST and the TPMT_SIGNATURE bytes. Raises
        ``InvalidRequestError`` for a malformed selection.
        """
        self._require_keys()
        parse_selection(selection)
        from tpm2_pytss import TPML_PCR_SELECTION

        def run(esys: ESAPI, loaded: list[Any]) -> tuple[bytes, bytes]:
            ak = self._load(esys, loaded, self._ak)
            attest, signature = esys.quote(ak, TPML_PCR_SELECTION.parse(selection), nonce)
            return bytes(attest), bytes(signature.marshal())

        return self._call("TPM2_Quote", run)

    def pcrread(self, selection: str) -> dict[tuple[int, int], bytes]:
        """The values of the PCRs of ``selection``: ``{(TPM_ALG_ID, index): digest}``.

        Raises ``InvalidRequestError`` for a malformed selection, ``TpmError`` when a
        bank is not active.
        """
        from tpm2_pytss import TPML_PCR_SELECTION

        def run(esys: ESAPI, loaded: list[Any]) -> bytes:
            digests = b""
            for part in _reads(selection):
                wanted = TPML_PCR_SELECTION.parse(part)
                _, answered, values = esys.pcr_read(wanted)
                # an inactive bank answers no PCR: split_pcr_values reports it
                if answered.marshal() == wanted.marshal():
                    digests += b"".join(bytes(value) for value in values)
            return digests

        return split_pcr_values(selection, self._call("TPM2_PCR_Read", run))


def _reads(selection: str) -> Iterator[str]:
    """``selection`` as TPM2_PCR_Read calls, in order: one bank and at most 8 PCRs each."""
    for bank, indexes in parse_selection(selection):
        assert bank in PCR_BANKS  # parse_selection checked it
        for start in range(0, len(indexes), _PCRS_PER_READ):
            chunk = indexes[start : start + _PCRS_PER_READ]
            yield f"{bank}:{','.join(str(i) for i in chunk)}"
