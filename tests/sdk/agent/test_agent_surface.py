"""``sdk.agent``'s public surface: exactly its ``__all__``, and not imported by ``sdk``;
tpm2-pytss is imported only when its driver is used."""

from __future__ import annotations

import subprocess
import sys
import types

import sdk.agent


def test_all_is_exactly_what_the_package_holds() -> None:
    """Everything public in ``sdk.agent`` is in ``__all__`` and nothing else (submodules
    aside): its internals stay in the underscore modules."""
    public = {
        name
        for name, value in vars(sdk.agent).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(sdk.agent.__all__) == public
    names = (
        "Agent AttestResult EsapiTpm MintedJwt Tpm TpmBackend TpmError attest jwt_svid_proof "
        "mint_jwt_svid pcr_selection"
    )
    assert sdk.agent.__all__ == names.split()


def test_importing_sdk_does_not_import_the_agent() -> None:
    code = "import sys, sdk; sys.exit('sdk.agent' in sys.modules or 'cryptography' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_importing_the_agent_does_not_import_tpm2_pytss() -> None:
    code = "import sys, sdk.agent; sys.exit('tpm2_pytss' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
