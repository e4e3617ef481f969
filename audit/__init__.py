"""The tamper-evident audit log: hash chain, RFC 6962 Merkle tree, signed checkpoints.

The log, its proofs and `docket audit …` arrive with the audit issue; the package
exists now so the layout and the dependency direction (never imports engine) hold.
"""

__all__: list[str] = []
