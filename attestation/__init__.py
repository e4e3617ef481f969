"""TPM 2.0 attestation: evidence → verified posture → short-lived credentials.

The verifier, the CA and `docket ca …` arrive with the attestation issue; the package
exists now so the layout and the dependency direction (never imports engine) hold.
"""

__all__: list[str] = []
