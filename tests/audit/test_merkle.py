"""The RFC 6962 / RFC 9162 Merkle tree: published vectors, mutants and properties.

The vectors are the RFC 6962 test data that the reference implementations publish
(google/certificate-transparency-go ``merkletree``, transparency-dev/merkle
``proof/verify_test.go``): eight leaves, the roots of the trees of their first 0..8, and
inclusion and consistency proofs in those trees. The mutants are the corruptions those
suites apply, plus malformed hash lengths.

Proofs are generated from a store of perfect subtree hashes built here independently of
the code under test (pairing each level bottom-up), and checked against ``root_of``, the
literal RFC definition.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit._errors import ProofError
from audit._merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    NodeId,
    consistency_proof,
    decompose,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_at,
    root_from_inclusion,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# -- published RFC 6962 vectors -----------------------------------------------------------

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
LEAF_HASHES = [leaf_hash(data) for data in LEAVES]

# ROOTS[n] is the root of the tree of the first n leaves.
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]

# (leaf index, tree size, proof). The published tables number leaves from 1.
INCLUSION_VECTORS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# (old size, new size, proof).
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


# -- an independent store of perfect subtree hashes -----------------------------------------


def perfect_nodes(leaves: Sequence[bytes]) -> dict[NodeId, bytes]:
    """Every perfect subtree hash of the tree over ``leaves``, pairing level by level."""
    table: dict[NodeId, bytes] = {}
    level, row = 0, list(leaves)
    while row:
        table.update(((level, index), value) for index, value in enumerate(row))
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
        level += 1
    return table


@dataclass
class Reader:
    """A ``NodeReader`` over a table of perfect nodes that records every call."""

    table: dict[NodeId, bytes]
    calls: list[list[NodeId]] = field(default_factory=list)

    def __call__(self, ids: Sequence[NodeId]) -> list[bytes]:
        self.calls.append(list(ids))
        return [self.table[node] for node in ids]


def vector_reader() -> Reader:
    return Reader(perfect_nodes(LEAF_HASHES))


def unhex(proof: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in proof]


def leaves_for(n: int, seed: bytes = b"") -> list[bytes]:
    return [leaf_hash(seed + i.to_bytes(8, "big")) for i in range(n)]


def flip(value: bytes, bit: int = 3) -> bytes:
    return bytes([value[0] ^ (1 << bit)]) + value[1:]


# -- the vectors ---------------------------------------------------------------------------


def test_hashes_are_the_rfc_ones() -> None:
    left, right = b"a" * 32, b"b" * 32
    assert leaf_hash(b"data") == hashlib.sha256(b"\x00data").digest()
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT == ROOTS[0]
    assert HASH_SIZE == 32


@pytest.mark.parametrize("size", range(9), ids=lambda n: f"size-{n}")
def test_roots_match_the_vectors(size: int) -> None:
    assert root_of(LEAF_HASHES[:size]) == ROOTS[size]

    frontier = CompactRange()
    for leaf in LEAF_HASHES[:size]:
        frontier.append(leaf)
    assert frontier.root() == ROOTS[size]

    reader = vector_reader()
    assert root_at(size, reader) == ROOTS[size]
    assert len(reader.calls) == (1 if size else 0)


@pytest.mark.parametrize(
    ("index", "size", "proof"),
    INCLUSION_VECTORS,
    ids=[f"leaf-{i}-of-{n}" for i, n, _ in INCLUSION_VECTORS],
)
def test_inclusion_vectors(index: int, size: int, proof: list[str]) -> None:
    reader = vector_reader()
    assert inclusion_proof(index, size, reader) == unhex(proof)
    assert len(reader.calls) == (1 if proof else 0)
    verify_inclusion(index, size, LEAF_HASHES[index], unhex(proof), ROOTS[size])
    assert root_from_inclusion(index, size, LEAF_HASHES[index], unhex(proof)) == ROOTS[size]


@pytest.mark.parametrize(
    ("old", "new", "proof"),
    CONSISTENCY_VECTORS,
    ids=[f"{m}-to-{n}" for m, n, _ in CONSISTENCY_VECTORS],
)
def test_consistency_vectors(old: int, new: int, proof: list[str]) -> None:
    reader = vector_reader()
    assert consistency_proof(old, new, reader) == unhex(proof)
    assert len(reader.calls) == (1 if proof else 0)
    verify_consistency(old, new, ROOTS[old], ROOTS[new], unhex(proof))


# The stored nodes a proof reads (transparency-dev/merkle proof/proof_test.go): perfect
# nodes only, the ragged right edge as its few perfect parts, one batch.
NODES_READ = [
    ("inclusion", 0, 7, {(0, 1), (1, 1), (0, 6), (1, 2)}),
    ("inclusion", 3, 7, {(0, 2), (1, 0), (0, 6), (1, 2)}),
    ("inclusion", 4, 7, {(0, 5), (0, 6), (2, 0)}),
    ("inclusion", 6, 7, {(1, 2), (2, 0)}),
    ("inclusion", 3, 5, {(0, 2), (1, 0), (0, 4)}),
    ("inclusion", 10, 15, {(0, 11), (1, 4), (0, 14), (1, 6), (3, 0)}),
    ("inclusion", 24, 31, {(0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0)}),
    (
        "inclusion",
        81,
        95,
        {(0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)},
    ),
    ("consistency", 1, 6, {(0, 1), (1, 1), (1, 2)}),
    ("consistency", 2, 8, {(1, 1), (2, 1)}),
    ("consistency", 3, 7, {(0, 2), (0, 3), (1, 0), (0, 6), (1, 2)}),
    ("consistency", 4, 7, {(0, 6), (1, 2)}),
    ("consistency", 5, 7, {(0, 4), (0, 5), (0, 6), (2, 0)}),
    ("consistency", 7, 8, {(0, 6), (0, 7), (1, 2), (2, 0)}),
    ("consistency", 10, 15, {(1, 4), (1, 5), (0, 14), (1, 6), (3, 0)}),
    ("consistency", 24, 31, {(3, 2), (0, 30), (1, 14), (2, 6), (4, 0)}),
    (
        "consistency",
        81,
        95,
        {(0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)},
    ),
]


@pytest.mark.parametrize(
    ("kind", "first", "size", "expected"),
    NODES_READ,
    ids=[f"{kind}-{a}-{b}" for kind, a, b, _ in NODES_READ],
)
def test_proofs_read_only_these_stored_nodes(
    kind: str, first: int, size: int, expected: set[NodeId]
) -> None:
    leaves = leaves_for(size)
    reader = Reader(perfect_nodes(leaves))
    if kind == "inclusion":
        proof = inclusion_proof(first, size, reader)
        verify_inclusion(first, size, leaves[first], proof, root_of(leaves))
    else:
        proof = consistency_proof(first, size, reader)
        verify_consistency(first, size, root_of(leaves[:first]), root_of(leaves), proof)
    (ids,) = reader.calls
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == expected


# -- mutants -------------------------------------------------------------------------------

# The vectors' eight leaves and more after them: the roots of trees of other sizes.
EXTENDED = LEAF_HASHES + [leaf_hash(b"more" + bytes([i])) for i in range(8, 24)]


def real_root(size: int) -> bytes:
    """The root a tree of ``size`` really has. A proof binds its tree size only through the
    root (a checkpoint signs both): with the original root, a size that keeps the proof's
    shape does verify, so a wrong-size mutant comes with the root of its size."""
    return root_of(EXTENDED[: max(size, 0)])


def replaced(proof: list[bytes], k: int, value: bytes) -> list[bytes]:
    return [*proof[:k], value, *proof[k + 1 :]]


def inclusion_mutants() -> list[Any]:
    cases = []
    for index, size, hexes in INCLUSION_VECTORS:
        proof, leaf, root = unhex(hexes), LEAF_HASHES[index], ROOTS[size]
        mutants = {
            "index-1": (index - 1, size, leaf, proof, root),
            "index+1": (index + 1, size, leaf, proof, root),
            "index^2": (index ^ 2, size, leaf, proof, root),
            "size*2": (index, size * 2, leaf, proof, real_root(size * 2)),
            "size/2": (index, size // 2, leaf, proof, real_root(size // 2)),
            "size+1": (index, size + 1, leaf, proof, real_root(size + 1)),
            "size-0": (index, 0, leaf, proof, EMPTY_ROOT),
            "wrong-leaf": (index, size, leaf_hash(b"WrongLeaf"), proof, root),
            "leaf-not-a-hash": (index, size, b"WrongLeaf", proof, root),
            "leaf-31-bytes": (index, size, leaf[:31], proof, root),
            "leaf-33-bytes": (index, size, leaf + b"\x00", proof, root),
            "empty-root": (index, size, leaf, proof, EMPTY_ROOT),
            "random-root": (index, size, leaf, proof, SOME_HASH),
            "root-31-bytes": (index, size, leaf, proof, root[:31]),
            "root-33-bytes": (index, size, leaf, proof, root + b"\x00"),
            "trailing-garbage": (index, size, leaf, [*proof, b""], root),
            "trailing-root": (index, size, leaf, [*proof, root], root),
            "preceding-garbage": (index, size, leaf, [b"", *proof], root),
            "preceding-root": (index, size, leaf, [root, *proof], root),
        }
        for k, element in enumerate(proof):
            mutants[f"flip-proof[{k}]"] = (
                index,
                size,
                leaf,
                replaced(proof, k, flip(element)),
                root,
            )
            mutants[f"remove-proof[{k}]"] = (index, size, leaf, proof[:k] + proof[k + 1 :], root)
            mutants[f"proof[{k}]-31-bytes"] = (
                index,
                size,
                leaf,
                replaced(proof, k, element[:31]),
                root,
            )
            mutants[f"proof[{k}]-33-bytes"] = (
                index,
                size,
                leaf,
                replaced(proof, k, element + b"\x00"),
                root,
            )
        if proof:
            mutants["empty-proof"] = (index, size, leaf, [], root)
            mutants["truncated"] = (index, size, leaf, proof[: len(proof) // 2], root)
            mutants["extra-copy-of-last"] = (index, size, leaf, [*proof, proof[-1]], root)
        if len(proof) > 1:
            mutants["inserted"] = (index, size, leaf, [proof[0], SOME_HASH, *proof[1:]], root)
            mutants["swapped"] = (index, size, leaf, [proof[1], proof[0], *proof[2:]], root)
        cases += [
            pytest.param(*args, id=f"leaf-{index}-of-{size}-{desc}")
            for desc, args in mutants.items()
        ]
    return cases


def consistency_mutants() -> list[Any]:
    cases = []
    for old, new, hexes in CONSISTENCY_VECTORS:
        proof, old_root, new_root = unhex(hexes), ROOTS[old], ROOTS[new]
        mutants = {
            "old-1": (old - 1, new, real_root(old - 1), new_root, proof),
            "old+1": (old + 1, new, real_root(old + 1), new_root, proof),
            "old^2": (old ^ 2, new, real_root(old ^ 2), new_root, proof),
            "new*2": (old, new * 2, old_root, real_root(new * 2), proof),
            "new/2": (old, new // 2, old_root, real_root(new // 2), proof),
            "new+1": (old, new + 1, old_root, real_root(new + 1), proof),
            "wrong-old-root": (old, new, SOME_HASH, new_root, proof),
            "wrong-new-root": (old, new, old_root, SOME_HASH, proof),
            "old-root-not-a-hash": (old, new, b"WrongRoot", new_root, proof),
            "old-root-31-bytes": (old, new, old_root[:31], new_root, proof),
            "old-root-33-bytes": (old, new, old_root + b"\x00", new_root, proof),
            "new-root-31-bytes": (old, new, old_root, new_root[:31], proof),
            "new-root-33-bytes": (old, new, old_root, new_root + b"\x00", proof),
            "trailing-garbage": (old, new, old_root, new_root, [*proof, b""]),
            "trailing-old-root": (old, new, old_root, new_root, [*proof, old_root]),
            "trailing-new-root": (old, new, old_root, new_root, [*proof, new_root]),
            "preceding-garbage": (old, new, old_root, new_root, [b"", *proof]),
            "preceding-old-root": (old, new, old_root, new_root, [old_root, *proof]),
            "preceding-new-root": (old, new, old_root, new_root, [new_root, *proof]),
        }
        if old - 1 == 0 and not proof:
            del mutants["old-1"]  # the empty tree is a prefix of every tree: no mutant
        if old != new:
            mutants["swapped-roots"] = (old, new, new_root, old_root, proof)
        for k, element in enumerate(proof):
            flipped = replaced(proof, k, flip(element, 4))
            mutants[f"flip-proof[{k}]"] = (old, new, old_root, new_root, flipped)
            mutants[f"remove-proof[{k}]"] = (
                old,
                new,
                old_root,
                new_root,
                proof[:k] + proof[k + 1 :],
            )
            short, long = replaced(proof, k, element[:31]), replaced(proof, k, element + b"\x00")
            mutants[f"proof[{k}]-31-bytes"] = (old, new, old_root, new_root, short)
            mutants[f"proof[{k}]-33-bytes"] = (old, new, old_root, new_root, long)
        if proof:
            mutants["empty-proof"] = (old, new, old_root, new_root, [])
            mutants["truncated"] = (old, new, old_root, new_root, proof[: len(proof) // 2])
            mutants["extra-copy-of-last"] = (old, new, old_root, new_root, [*proof, proof[-1]])
            mutants["preceding-proof[0]"] = (old, new, old_root, new_root, [proof[0], *proof])
        if len(proof) > 1:
            swapped = [proof[1], proof[0], *proof[2:]]
            mutants["swapped"] = (old, new, old_root, new_root, swapped)
        cases += [
            pytest.param(*args, id=f"{old}-to-{new}-{desc}") for desc, args in mutants.items()
        ]
    return cases


@pytest.mark.parametrize(("index", "size", "leaf", "proof", "root"), inclusion_mutants())
def test_inclusion_mutant_is_rejected(
    index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes
) -> None:
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf, proof, root)


@pytest.mark.parametrize(("old", "new", "old_root", "new_root", "proof"), consistency_mutants())
def test_consistency_mutant_is_rejected(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> None:
    with pytest.raises(ProofError):
        verify_consistency(old, new, old_root, new_root, proof)


H = LEAF_HASHES
R1, R4, R5, R8 = ROOTS[1], ROOTS[4], ROOTS[5], ROOTS[8]
CONSISTENCY_EDGES: list[tuple[Any, ...]] = [
    # (description, old size, new size, old root, new root, proof, accepted)
    ("empty-to-empty", 0, 0, EMPTY_ROOT, EMPTY_ROOT, [], True),
    ("empty-to-5", 0, 5, EMPTY_ROOT, R5, [], True),
    ("empty-to-5-with-a-proof", 0, 5, EMPTY_ROOT, R5, [R5], False),
    ("empty-tree-with-another-root", 0, 5, R1, R5, [], False),
    ("empty-to-empty-with-another-root", 0, 0, R1, R1, [], False),
    ("same-size", 5, 5, R5, R5, [], True),
    ("same-size-with-a-proof", 5, 5, R5, R5, [R5], False),
    ("same-size-two-roots", 5, 5, R5, R4, [], False),
    ("shrinking", 8, 4, R8, R4, [R4], False),
    ("negative-old-size", -1, 5, EMPTY_ROOT, R5, [], False),
    ("negative-sizes", -2, -1, EMPTY_ROOT, EMPTY_ROOT, [], False),
    ("growing-needs-a-proof", 1, 2, R1, ROOTS[2], [], False),
    ("power-of-two-old-tree", 4, 8, R4, R8, [root_of(LEAF_HASHES[4:8])], True),
]


@pytest.mark.parametrize(
    ("old", "new", "old_root", "new_root", "proof", "accepted"),
    [pytest.param(*case[1:], id=case[0]) for case in CONSISTENCY_EDGES],
)
def test_consistency_edge_cases(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes], accepted: bool
) -> None:
    if accepted:
        verify_consistency(old, new, old_root, new_root, proof)
    else:
        with pytest.raises(ProofError):
            verify_consistency(old, new, old_root, new_root, proof)


INCLUSION_EDGES: list[tuple[Any, ...]] = [
    # (description, index, size, leaf, proof, root, accepted)
    ("single-leaf-tree", 0, 1, LEAF_HASHES[3], [], LEAF_HASHES[3], True),
    ("empty-tree", 0, 0, EMPTY_ROOT, [], EMPTY_ROOT, False),
    ("negative-index", -1, 1, R1, [], R1, False),
    ("negative-size", 0, -1, R1, [], R1, False),
    ("index-is-size", 1, 1, R1, [], R1, False),
    ("single-leaf-empty-hashes", 0, 1, b"", [], b"", False),
]


@pytest.mark.parametrize(
    ("index", "size", "leaf", "proof", "root", "accepted"),
    [pytest.param(*case[1:], id=case[0]) for case in INCLUSION_EDGES],
)
def test_inclusion_edge_cases(
    index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes, accepted: bool
) -> None:
    if accepted:
        verify_inclusion(index, size, leaf, proof, root)
    else:
        with pytest.raises(ProofError):
            verify_inclusion(index, size, leaf, proof, root)


P8 = unhex(INCLUSION_VECTORS[2][2])  # leaf 5 of 8
C68 = unhex(CONSISTENCY_VECTORS[2][2])  # 6 to 8
REASONS = [
    # (description, verification, what the error says)
    ("inclusion-too-long", lambda: verify_inclusion(5, 8, H[5], [*P8, R8], R8), "too long"),
    ("inclusion-too-short", lambda: verify_inclusion(5, 8, H[5], P8[:2], R8), "too short"),
    ("inclusion-wrong-root", lambda: verify_inclusion(5, 8, H[5], P8, R5), "does not lead"),
    ("inclusion-beyond-size", lambda: verify_inclusion(8, 8, H[5], P8, R8), "not in a tree"),
    ("inclusion-short-hash", lambda: verify_inclusion(5, 8, H[5][:31], P8, R8), "31 bytes"),
    (
        "consistency-too-long",
        lambda: verify_consistency(6, 8, ROOTS[6], R8, [*C68, R8]),
        "too long",
    ),
    (
        "consistency-too-short",
        lambda: verify_consistency(6, 8, ROOTS[6], R8, C68[:2]),
        "too short",
    ),
    (
        "consistency-wrong-old-root",
        lambda: verify_consistency(6, 8, R5, R8, C68),
        "root of tree 6",
    ),
    (
        "consistency-wrong-new-root",
        lambda: verify_consistency(6, 8, ROOTS[6], R5, C68),
        "root of tree 8",
    ),
    ("consistency-fork", lambda: verify_consistency(5, 5, R5, R4, []), "two different roots"),
    ("consistency-long-hash", lambda: verify_consistency(6, 8, R1 + b"x", R8, C68), "33 bytes"),
]


@pytest.mark.parametrize(
    ("verification", "reason"), [pytest.param(*case[1:], id=case[0]) for case in REASONS]
)
def test_failures_say_what_is_wrong(verification: Any, reason: str) -> None:
    with pytest.raises(ProofError, match=reason):
        verification()


# -- generation: bad requests and a misbehaving store ----------------------------------------


@pytest.mark.parametrize(
    "request_proof",
    [
        pytest.param(lambda r: inclusion_proof(0, 0, r), id="inclusion-in-empty-tree"),
        pytest.param(lambda r: inclusion_proof(8, 8, r), id="inclusion-index-is-size"),
        pytest.param(lambda r: inclusion_proof(-1, 8, r), id="inclusion-negative-index"),
        pytest.param(lambda r: consistency_proof(0, 8, r), id="consistency-from-empty-tree"),
        pytest.param(lambda r: consistency_proof(0, 0, r), id="consistency-empty-to-empty"),
        pytest.param(lambda r: consistency_proof(8, 7, r), id="consistency-shrinking"),
        pytest.param(lambda r: consistency_proof(-1, 8, r), id="consistency-negative-size"),
        pytest.param(lambda r: root_at(-1, r), id="root-at-negative-size"),
    ],
)
def test_bad_proof_requests_raise_without_reading(request_proof: Any) -> None:
    reader = vector_reader()
    with pytest.raises(ProofError):
        request_proof(reader)
    assert reader.calls == []


def test_nothing_to_read_means_no_read() -> None:
    reader = vector_reader()
    assert consistency_proof(5, 5, reader) == []
    assert inclusion_proof(0, 1, reader) == []
    assert root_at(0, reader) == EMPTY_ROOT
    assert reader.calls == []


@pytest.mark.parametrize(
    "reader",
    [
        pytest.param(lambda ids: [SOME_HASH for _ in ids][1:], id="one-hash-short"),
        pytest.param(lambda ids: [SOME_HASH for _ in ids] + [SOME_HASH], id="one-hash-extra"),
        pytest.param(lambda ids: [SOME_HASH[:31] for _ in ids], id="31-byte-hashes"),
        pytest.param(lambda ids: [b"" for _ in ids], id="empty-hashes"),
    ],
)
def test_a_misbehaving_store_raises_proof_error(reader: Any) -> None:
    with pytest.raises(ProofError):
        inclusion_proof(3, 7, reader)
    with pytest.raises(ProofError):
        consistency_proof(3, 7, reader)
    with pytest.raises(ProofError):
        root_at(7, reader)


# -- decompose and CompactRange ------------------------------------------------------------

DECOMPOSITIONS = [
    (0, 0, []),
    (5, 5, []),
    (0, 1, [(0, 0)]),
    (0, 7, [(2, 0), (1, 2), (0, 6)]),
    (0, 8, [(3, 0)]),
    (3, 7, [(0, 3), (1, 2), (0, 6)]),
    (2, 8, [(1, 1), (2, 1)]),
    (5, 13, [(0, 5), (1, 3), (2, 2), (0, 12)]),
    (4, 7, [(1, 2), (0, 6)]),
]


@pytest.mark.parametrize(
    ("begin", "end", "nodes"), DECOMPOSITIONS, ids=[f"{a}-{b}" for a, b, _ in DECOMPOSITIONS]
)
def test_decompose(begin: int, end: int, nodes: list[NodeId]) -> None:
    assert decompose(begin, end) == nodes


@pytest.mark.parametrize(("begin", "end"), [(3, 2), (-1, 2), (-2, -1)], ids=str)
def test_decompose_rejects_what_is_not_a_range(begin: int, end: int) -> None:
    with pytest.raises(ProofError):
        decompose(begin, end)


@pytest.mark.parametrize(
    "action",
    [
        pytest.param(lambda: CompactRange(0, 3, [H[0]]), id="too-few-hashes"),
        pytest.param(lambda: CompactRange(0, 1, [H[0], H[1]]), id="too-many-hashes"),
        pytest.param(lambda: CompactRange(0, 1, [H[0][:31]]), id="31-byte-hash"),
        pytest.param(lambda: CompactRange(2, 1), id="begin-after-end"),
        pytest.param(lambda: CompactRange(-1, 0), id="negative-begin"),
        pytest.param(lambda: CompactRange.from_bytes(0, 3, H[0]), id="bytes-for-one-of-two"),
        pytest.param(lambda: CompactRange.from_bytes(0, 1, H[0] + b"x"), id="bytes-trailing"),
        pytest.param(lambda: CompactRange.from_bytes(0, 0, b"x"), id="bytes-for-empty"),
        pytest.param(lambda: CompactRange().append(H[0] + b"x"), id="append-33-byte-leaf"),
        pytest.param(lambda: CompactRange(3, 4, [H[3]]).root(), id="root-of-a-later-range"),
        pytest.param(
            lambda: CompactRange(0, 4, [ROOTS[4]]).append_node((0, 5), H[0]),
            id="append-node-after-a-gap",
        ),
        pytest.param(
            lambda: CompactRange(0, 2, [ROOTS[2]]).append_node((2, 1), H[0]),
            id="append-node-not-starting-at-end",
        ),
        pytest.param(
            lambda: CompactRange(0, 4, [ROOTS[4]]).append_node((2, 1), H[0][:31]),
            id="append-node-31-byte-hash",
        ),
        pytest.param(
            lambda: CompactRange().append_node((-1, 0), H[0]), id="append-node-negative-level"
        ),
    ],
)
def test_compact_range_rejects_malformed_input(action: Any) -> None:
    with pytest.raises(ProofError):
        action()


def test_compact_range_round_trips_and_copies_independently() -> None:
    frontier = CompactRange()
    for leaf in H[:7]:
        frontier.append(leaf)
    assert (frontier.begin, frontier.end, len(frontier.hashes)) == (0, 7, 3)
    assert CompactRange.from_bytes(0, 7, frontier.to_bytes()) == frontier
    assert CompactRange.from_bytes(0, 7, memoryview(frontier.to_bytes())) == frontier

    copy = frontier.copy()
    copy.append(H[7])
    assert frontier.root() == ROOTS[7]
    assert copy.root() == ROOTS[8]
    assert copy != frontier

    frontier.hashes.clear()
    assert frontier.root() == ROOTS[7], "hashes is a copy, not the range's own list"
    assert repr(frontier) == "CompactRange(begin=0, end=7, hashes=3)"


def test_empty_compact_range() -> None:
    empty = CompactRange()
    assert empty.root() == EMPTY_ROOT
    assert empty.to_bytes() == b""
    assert CompactRange.from_bytes(0, 0, b"") == empty


# -- properties ----------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, database=None)


def mth(table: dict[NodeId, bytes], begin: int, end: int) -> bytes:
    """RFC 9162 §2.1.1 MTH(D[begin:end]) for begin < end, taking perfect subtrees from
    ``table``: a second reference, O(log n), for the roots of many prefixes."""
    size = end - begin
    if size & (size - 1) == 0:
        return table[(size.bit_length() - 1, begin // size)]
    middle = begin + (1 << ((size - 1).bit_length() - 1))
    return node_hash(mth(table, begin, middle), mth(table, middle, end))


@PROPERTY_SETTINGS
@given(n=st.integers(1, 300), seed=st.binary(max_size=4), data=st.data())
def test_generated_proofs_verify(n: int, seed: bytes, data: st.DataObject) -> None:
    leaves = leaves_for(n, seed)
    table = perfect_nodes(leaves)
    root = root_of(leaves)
    assert mth(table, 0, n) == root
    reader = Reader(table)
    for index in range(n):
        verify_inclusion(index, n, leaves[index], inclusion_proof(index, n, reader), root)
    for old in range(1, n + 1):
        old_root = mth(table, 0, old)
        verify_consistency(old, n, old_root, root, consistency_proof(old, n, reader))

    # A smaller tree than the store holds: the proofs read only nodes inside it.
    size = data.draw(st.integers(1, n), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(1, size), label="old")
    inner = Reader({(lv, i): h for (lv, i), h in table.items() if (i + 1) << lv <= size})
    size_root = root_of(leaves[:size])
    assert root_at(size, inner) == size_root
    verify_inclusion(index, size, leaves[index], inclusion_proof(index, size, inner), size_root)
    proof = consistency_proof(old, size, inner)
    verify_consistency(old, size, root_of(leaves[:old]), size_root, proof)

    for ids in reader.calls + inner.calls:
        assert len(ids) <= 2 * n.bit_length() + 2


@PROPERTY_SETTINGS
@given(n=st.integers(1, 300), seed=st.binary(max_size=4))
def test_appending_gives_every_prefix_root_and_exactly_the_perfect_nodes(
    n: int, seed: bytes
) -> None:
    leaves = leaves_for(n, seed)
    table = perfect_nodes(leaves)
    frontier = CompactRange()
    for index, leaf in enumerate(leaves):
        created = frontier.append(leaf)
        size = index + 1
        # The perfect nodes above the leaf that end with it: one per trailing zero of size.
        levels = range(1, (size & -size).bit_length())
        assert created == [((lv, (size >> lv) - 1), table[(lv, (size >> lv) - 1)]) for lv in levels]
        assert frontier.root() == root_of(leaves[:size])
        assert frontier == CompactRange(0, size, [table[node] for node in decompose(0, size)])


@PROPERTY_SETTINGS
@given(n=st.integers(0, 300), seed=st.binary(max_size=4), data=st.data())
def test_extend_is_append_in_bulk(n: int, seed: bytes, data: st.DataObject) -> None:
    leaves = leaves_for(n, seed)
    cut = data.draw(st.integers(0, n), label="cut")
    one_by_one, bulk = CompactRange(), CompactRange()
    expected = [b"".join(value for _, value in one_by_one.append(leaf)) for leaf in leaves]
    assert bulk.extend(leaves[:cut]) + bulk.extend(leaves[cut:]) == expected
    assert bulk == one_by_one
    assert bulk.root() == root_of(leaves)
    bulk.append_node((0, n), leaf_hash(b"next"))  # the general path still works after it
    one_by_one.append(leaf_hash(b"next"))
    assert bulk == one_by_one


def test_extend_with_a_bad_leaf_changes_nothing() -> None:
    frontier = CompactRange()
    frontier.extend(H[:3])
    with pytest.raises(ProofError, match="33 bytes"):
        frontier.extend([H[3], H[4] + b"x"])
    assert frontier == CompactRange(0, 3, [ROOTS[2], H[2]])
    assert frontier.root() == ROOTS[3]
    with pytest.raises(ProofError):
        CompactRange(3, 3).extend(H[3:5])


@PROPERTY_SETTINGS
@given(n=st.integers(1, 300), seed=st.binary(max_size=4), data=st.data())
def test_merging_ranges_gives_the_root(n: int, seed: bytes, data: st.DataObject) -> None:
    leaves = leaves_for(n, seed)
    table = perfect_nodes(leaves)
    end = data.draw(st.integers(0, n), label="end")
    middle = data.draw(st.integers(0, end), label="middle")

    left = CompactRange()
    for leaf in leaves[:middle]:
        left.append(leaf)
    right = CompactRange(middle, middle)
    for leaf in leaves[middle:end]:
        for node, value in right.append(leaf):
            assert table[node] == value
    assert right.hashes == [table[node] for node in decompose(middle, end)]

    for node, value in zip(decompose(middle, end), right.hashes, strict=True):
        left.append_node(node, value)
    assert left.end == end
    assert left.root() == root_of(leaves[:end])
    assert left == CompactRange(0, end, [table[node] for node in decompose(0, end)])


@settings(max_examples=300, deadline=None, database=None)
@given(begin=st.integers(0, 2**70), length=st.integers(0, 2**70))
def test_decompose_is_the_fewest_perfect_nodes(begin: int, length: int) -> None:
    end = begin + length
    nodes = decompose(begin, end)
    position = begin
    for level, index in nodes:
        assert index << level == position, "contiguous, aligned subtrees"
        position += 1 << level
    assert position == end
    # Maximal: no node's parent lies inside the range (else it and its sibling would merge).
    for level, index in nodes:
        parent_begin, parent_end = (index >> 1) << (level + 1), ((index >> 1) + 1) << (level + 1)
        assert not begin <= parent_begin < parent_end <= end
    assert len(nodes) <= 2 * max(length, 1).bit_length()


hashes = st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40))


@settings(max_examples=500, deadline=None, database=None)
@given(
    index=st.integers(-3, 2**66),
    size=st.integers(-3, 2**66),
    leaf=hashes,
    proof=st.lists(hashes, max_size=70),
    root=hashes,
)
def test_verify_inclusion_raises_only_proof_error(
    index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes
) -> None:
    with contextlib.suppress(ProofError):
        verify_inclusion(index, size, leaf, proof, root)


@settings(max_examples=500, deadline=None, database=None)
@given(
    old=st.integers(-3, 2**66),
    new=st.integers(-3, 2**66),
    old_root=hashes,
    new_root=hashes,
    proof=st.lists(hashes, max_size=70),
)
def test_verify_consistency_raises_only_proof_error(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> None:
    with contextlib.suppress(ProofError):
        verify_consistency(old, new, old_root, new_root, proof)


@settings(max_examples=300, deadline=None, database=None)
@given(begin=st.integers(-3, 2**66), end=st.integers(-3, 2**66), data=st.binary(max_size=200))
def test_loading_a_compact_range_raises_only_proof_error(begin: int, end: int, data: bytes) -> None:
    with contextlib.suppress(ProofError):
        CompactRange.from_bytes(begin, end, data)


@PROPERTY_SETTINGS
@given(n=st.integers(2, 300), data=st.data())
def test_any_change_to_a_valid_proof_is_detected(n: int, data: st.DataObject) -> None:
    leaves = leaves_for(n)
    reader = Reader(perfect_nodes(leaves))
    root = root_of(leaves)
    index = data.draw(st.integers(0, n - 1), label="index")
    old = data.draw(st.integers(1, n - 1), label="old")
    old_root = root_of(leaves[:old])
    inclusion = inclusion_proof(index, n, reader)
    consistency = consistency_proof(old, n, reader)

    # One byte of one hash: the leaf or root (position -1) or a proof element.
    def mutate(values: list[bytes]) -> list[bytes]:
        k = data.draw(st.integers(0, len(values) - 1), label="element")
        at = data.draw(st.integers(0, HASH_SIZE - 1), label="byte")
        xor = data.draw(st.integers(1, 255), label="xor")
        changed = bytearray(values[k])
        changed[at] ^= xor
        return replaced(values, k, bytes(changed))

    leaf, *path, changed_root = mutate([leaves[index], *inclusion, root])
    with pytest.raises(ProofError):
        verify_inclusion(index, n, leaf, path, changed_root)
    first_root, *path, second_root = mutate([old_root, *consistency, root])
    with pytest.raises(ProofError):
        verify_consistency(old, n, first_root, second_root, path)


# -- O(log n) reads at scale ---------------------------------------------------------------


class SyntheticTree:
    """The tree whose leaf i is ``leaf_hash(i.to_bytes(8, "big"))``, computing a perfect
    node only when it is asked for (subtrees of up to 2**BLOCK leaves are hashed in one
    pass; bigger ones are cached)."""

    BLOCK = 10

    def __init__(self) -> None:
        self.cache: dict[NodeId, bytes] = {}
        self.calls: list[list[NodeId]] = []

    def node(self, level: int, index: int) -> bytes:
        if (level, index) in self.cache:
            return self.cache[(level, index)]
        if level <= self.BLOCK:
            first = index << level
            row = [leaf_hash(i.to_bytes(8, "big")) for i in range(first, first + (1 << level))]
            while len(row) > 1:
                row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row), 2)]
            value = row[0]
        else:
            value = node_hash(self.node(level - 1, 2 * index), self.node(level - 1, 2 * index + 1))
        if level >= self.BLOCK:
            self.cache[(level, index)] = value
        return value

    def __call__(self, ids: Sequence[NodeId]) -> list[bytes]:
        self.calls.append(list(ids))
        return [self.node(level, index) for level, index in ids]


@pytest.fixture(scope="module")
def big_tree() -> SyntheticTree:
    return SyntheticTree()


BIG = 2**20 + 12345


@pytest.mark.parametrize("index", [0, 12345, 2**19 + 7, 2**20 - 1, 2**20, BIG - 1])
def test_inclusion_proof_reads_log_n_nodes_in_one_call(big_tree: SyntheticTree, index: int) -> None:
    big_tree.calls.clear()
    proof = inclusion_proof(index, BIG, big_tree)
    (ids,) = big_tree.calls
    assert len(ids) < 2 * math.log2(BIG) + 2
    assert all((i + 1) << level <= BIG for level, i in ids), "only nodes inside the tree"

    big_tree.calls.clear()
    root = root_at(BIG, big_tree)
    assert len(big_tree.calls) == 1
    assert len(big_tree.calls[0]) == BIG.bit_count()
    verify_inclusion(index, BIG, big_tree.node(0, index), proof, root)


@pytest.mark.parametrize("old", [1, 12345, 2**19, 2**20, BIG - 1])
def test_consistency_proof_reads_log_n_nodes_in_one_call(big_tree: SyntheticTree, old: int) -> None:
    big_tree.calls.clear()
    proof = consistency_proof(old, BIG, big_tree)
    (ids,) = big_tree.calls
    assert len(ids) < 2 * math.log2(BIG) + 2
    verify_consistency(old, BIG, root_at(old, big_tree), root_at(BIG, big_tree), proof)
