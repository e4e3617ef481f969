"""RFC 6962 / RFC 9162 Merkle tree primitives: hashing, compact ranges, proof
generation from stored subtree hashes, and proof verification (raw layer)."""

from audit._merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    NodeId,
    NodeReader,
    consistency_proof,
    decompose,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_at,
    root_of,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "NodeId",
    "NodeReader",
    "consistency_proof",
    "decompose",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_at",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]
