"""Which TPM driver the agent uses: tpm2-tools (``Tpm``, subprocesses) or tpm2-pytss
(``EsapiTpm``, the ``docket[tpm]`` extra). Both give the flow the same evidence."""

from __future__ import annotations

import shutil
from typing import Final, Literal, get_args

from sdk._errors import ConfigurationError, TpmError
from sdk.agent._esapi import EXTRA, EsapiTpm, pytss_missing
from sdk.agent._tpm import Tpm

__all__ = ["BACKENDS", "TpmBackend", "choose_backend", "open_tpm"]

TpmBackend = Literal["auto", "tpm2-tools", "tpm2-pytss"]
BACKENDS: Final[tuple[str, ...]] = get_args(TpmBackend)
_TOOL: Final = "tpm2_createek"  # the first tool the tpm2-tools driver runs


def choose_backend(backend: str = "auto") -> Literal["tpm2-tools", "tpm2-pytss"]:
    """The driver ``backend`` names; ``"auto"`` is tpm2-tools when ``tpm2_createek`` is on
    PATH, else tpm2-pytss when it imports. Raises ``ConfigurationError`` for an unknown
    name, ``TpmError`` when ``"auto"`` finds neither."""
    if backend == "tpm2-tools":
        return "tpm2-tools"
    if backend == "tpm2-pytss":
        return "tpm2-pytss"
    if backend != "auto":
        raise ConfigurationError(
            f"unknown TPM backend {backend!r}: expected one of {', '.join(BACKENDS)}"
        )
    if shutil.which(_TOOL) is not None:
        return "tpm2-tools"
    missing = pytss_missing()
    if missing is None:
        return "tpm2-pytss"
    raise TpmError(
        f"no TPM stack: {_TOOL} is not on PATH and tpm2-pytss does not import ({missing}); "
        f"install tpm2-tools, or {EXTRA}"
    )


def open_tpm(tcti: str, backend: str = "auto") -> Tpm | EsapiTpm:
    """The TPM at ``tcti`` through the driver ``choose_backend(backend)`` picks."""
    if choose_backend(backend) == "tpm2-pytss":
        return EsapiTpm(tcti)
    return Tpm(tcti)
