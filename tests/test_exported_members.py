"""Each package's public surface is exactly what it means to export."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

EXPECTED = {
    "engine": [
        "BundleError",
        "BundleWatcher",
        "Decision",
        "DeniedSite",
        "Engine",
        "EngineError",
        "EntityUID",
        "PlacedSite",
        "Placement",
        "Policy",
        "PolicyBundle",
        "PolicyError",
        "Request",
        "RequestError",
        "SignatureError",
        "Site",
        "Workload",
    ],
    "attestation": [],
    "audit": [
        "AuditError",
        "AuditLog",
        "Checkpoint",
        "Entry",
        "FormatError",
        "KeptCheckpointError",
        "KeyFormatError",
        "LogIdentityError",
        "NoteError",
        "Overloaded",
        "ProofError",
        "Receipt",
        "SignerKey",
        "Store",
        "StoreError",
        "TamperDetected",
        "Verdict",
        "VerifiedLog",
        "VerifiedReceipt",
        "VerifierKey",
        "digest",
        "make_receipt",
        "prove_consistency",
        "verify_entries",
        "verify_export",
        "verify_receipt",
        "verify_store",
        "write_export",
    ],
    "sdk": [
        "AsyncDecisionClient",
        "AuditReceipt",
        "AuthorizeRequest",
        "AuthorizeResult",
        "ConfigurationError",
        "DecisionClient",
        "DeniedSite",
        "DocketASGIMiddleware",
        "DocketError",
        "DocketServerInterceptor",
        "Entity",
        "EntityRef",
        "GrpcCall",
        "InvalidRequestError",
        "OverloadedError",
        "PermissionDeniedError",
        "PlacedSite",
        "Placement",
        "PlacementOptions",
        "PlacementRequest",
        "ReloadResult",
        "ServerError",
        "TLSConfig",
        "TransportError",
    ],
}


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_all_is_the_intended_surface(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__ == EXPECTED[package]
    assert sorted(module.__all__) == module.__all__
    for name in module.__all__:
        assert getattr(module, name).__module__.startswith(package)


@pytest.mark.parametrize("package", ["attestation", "audit", "sdk"])
def test_lower_packages_do_not_import_engine(package: str) -> None:
    """Imports only point down: attestation, audit and sdk never import engine,
    and a client install (sdk) never imports cedarpy."""
    code = f"import sys, {package}; sys.exit('engine' in sys.modules or 'cedarpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
