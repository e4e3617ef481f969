"""The RFC 9162 Merkle tree (the same as RFC 6962's): hashes, proofs and compact ranges.

Nothing here does I/O. A *perfect node* ``(level, index)`` is the root of the complete
subtree over leaves ``[index * 2**level, (index + 1) * 2**level)``; level 0 is a leaf hash.
Once its last leaf is appended a perfect node never changes, so the store keeps every one
of them and proofs are built from them, never by rehashing the log:

* a proof element is the hash of a range of leaves ``[a, b)``: a single perfect node, or,
  on the ragged right edge of a tree whose size is not a power of two, the fold of the
  few perfect nodes :func:`decompose` gives for that range;
* a proof first collects every node id it needs, O(log n) of them, asks the
  :data:`NodeReader` for all of them in one call (one query to storage), then assembles.

:class:`CompactRange` holds the perfect nodes covering a range of leaves. For ``[0, n)`` it
is the frontier that lets a writer append and compute the root in O(log n) memory; the
nodes each append completes are the ones the store keeps.

Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step. Every malformed input
(a hash that is not 32 bytes, an index or size out of range, a proof too long or too
short) and every failing proof raises :class:`~audit._errors.ProofError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Final

from audit._errors import ProofError

_sha256 = hashlib.sha256

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()

NodeId = tuple[int, int]
"""``(level, index)``: the perfect subtree over leaves
``[index * 2**level, (index + 1) * 2**level)``."""

NodeReader = Callable[[Sequence[NodeId]], Sequence[bytes]]
"""Given perfect node ids, their hashes in the same order: one batch lookup in storage."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """The RFC 9162 hash of a leaf: ``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 hash of an interior node: ``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of ``leaf_hashes``, straight from the RFC 9162 §2.1.1 definition.

    A reference that hashes every node, O(n): the log computes roots with
    :class:`CompactRange` or :func:`root_at`. Raises :class:`ProofError` when a leaf hash
    is not 32 bytes.
    """
    for value in leaf_hashes:
        _check_hash(value, "a leaf hash")
    if not leaf_hashes:
        return EMPTY_ROOT
    return _mth(leaf_hashes, 0, len(leaf_hashes))


def _mth(leaves: Sequence[bytes], begin: int, end: int) -> bytes:
    if end - begin == 1:
        return bytes(leaves[begin])
    middle = begin + _split(end - begin)
    return node_hash(_mth(leaves, begin, middle), _mth(leaves, middle, end))


def _split(size: int) -> int:
    """RFC 9162's k for a tree of ``size`` >= 2 leaves: the largest power of two below it."""
    return 1 << ((size - 1).bit_length() - 1)


def decompose(begin: int, end: int) -> list[NodeId]:
    """The fewest perfect nodes that exactly cover leaves ``[begin, end)``, left to right.

    Their sizes first grow, then shrink; for ``begin == 0`` they are the binary digits of
    ``end``, largest first. Raises :class:`ProofError` unless ``0 <= begin <= end``.
    """
    if not 0 <= begin <= end:
        raise ProofError(f"[{begin}, {end}) is not a range of leaves")
    nodes: list[NodeId] = []
    while begin < end:
        # The largest subtree that starts at `begin`: limited by what is left of the range
        # and by how `begin` is aligned.
        level = (end - begin).bit_length() - 1
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def _fold(hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of a range from the hashes of its :func:`decompose` nodes.

    Right to left: the subtrees shrink towards the right edge, where RFC 9162 puts the
    unbalanced part of the tree.
    """
    if not hashes:
        return EMPTY_ROOT
    value = bytes(hashes[-1])
    for left in reversed(hashes[:-1]):
        value = node_hash(left, value)
    return value


def _check_hash(value: bytes, what: str) -> bytes:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")
    return bytes(value)


class CompactRange:
    """The perfect subtrees covering leaves ``[begin, end)``, in :func:`decompose` order.

    For ``begin == 0`` this is the frontier of the tree: enough to append leaves and to
    compute the root in O(log n) memory. Two adjacent ranges merge with :meth:`append_node`.
    """

    __slots__ = ("_begin", "_end", "_hashes", "_ids")

    def __init__(self, begin: int = 0, end: int = 0, hashes: Sequence[bytes] = ()) -> None:
        """Raises :class:`ProofError` unless ``hashes`` are the 32-byte hashes of exactly
        the nodes of ``decompose(begin, end)``."""
        ids = decompose(begin, end)
        if len(hashes) != len(ids):
            raise ProofError(
                f"leaves [{begin}, {end}) are covered by {len(ids)} subtree hashes, "
                f"not {len(hashes)}"
            )
        self._begin = begin
        self._end = end
        self._ids: list[NodeId] | None = ids
        self._hashes = [_check_hash(value, "a subtree hash") for value in hashes]

    @property
    def begin(self) -> int:
        """The first leaf covered."""
        return self._begin

    @property
    def end(self) -> int:
        """One past the last leaf covered: the tree size when ``begin`` is 0."""
        return self._end

    @property
    def hashes(self) -> list[bytes]:
        """The hashes of ``decompose(begin, end)``, in that order (a copy)."""
        return list(self._hashes)

    def append(self, leaf: bytes) -> list[tuple[NodeId, bytes]]:
        """Append the leaf hash of leaf ``end``.

        Returns the perfect nodes of level 1 and above that this leaf completes, lowest
        level first: for a range starting at 0, every node that ends at this leaf (the
        store keeps them for proofs). Raises :class:`ProofError` when ``leaf`` is not 32
        bytes.
        """
        return self._push((0, self._end), _check_hash(leaf, "a leaf hash"))

    def push(self, leaf: bytes) -> bytes:
        """Append one leaf hash to a range starting at leaf 0: the writer's and the
        verifier's hot path. Returns the concatenated hashes of the nodes it completes
        (what :meth:`append` returns, joined). Raises :class:`ProofError` for a range
        not starting at 0 or a leaf that is not 32 bytes."""
        if self._begin != 0 or len(leaf) != HASH_SIZE:
            raise ProofError(
                "push() needs a range starting at leaf 0"
                if self._begin
                else f"a leaf hash is {HASH_SIZE} bytes, not {len(leaf)}"
            )
        hashes, value, joined, index = self._hashes, leaf, b"", self._end
        # For [0, size) the last nodes merge once per trailing one bit of size.
        while index & 1:
            value = _sha256(b"\x01" + hashes.pop() + value).digest()
            joined += value
            index >>= 1
        hashes.append(value)
        self._end += 1
        self._ids = None  # recomputed by the general path when it next needs them
        return joined

    def extend(self, leaves: Sequence[bytes]) -> list[bytes]:
        """:meth:`push` each leaf hash; all are checked before any is appended, so a bad
        one leaves the range as it was. Raises :class:`ProofError`."""
        if self._begin != 0:
            raise ProofError("extend() needs a range starting at leaf 0")
        leaves = [_check_hash(leaf, "a leaf hash") for leaf in leaves]
        return [self.push(leaf) for leaf in leaves]

    def append_node(self, node: NodeId, value: bytes) -> None:
        """Append the perfect subtree ``node`` with hash ``value``; it must start at ``end``.

        Appending the nodes of ``decompose(end, x)`` in order extends the range to ``x``.
        Raises :class:`ProofError` when the node does not start at ``end`` or ``value`` is
        not 32 bytes.
        """
        level, index = node
        if level < 0 or index < 0 or index << level != self._end:
            raise ProofError(f"node {node} does not start at leaf {self._end}")
        self._push(node, _check_hash(value, "a subtree hash"))

    def _push(self, node: NodeId, value: bytes) -> list[tuple[NodeId, bytes]]:
        if self._ids is None:
            self._ids = decompose(self._begin, self._end)
        ids, hashes = self._ids, self._hashes
        level, index = node
        created: list[tuple[NodeId, bytes]] = []
        # A right child merges with its left sibling when the sibling is in the range;
        # the sibling is then necessarily the last node (it ends where this one starts).
        while index & 1 and ids and ids[-1] == (level, index - 1):
            ids.pop()
            value = node_hash(hashes.pop(), value)
            level, index = level + 1, index >> 1
            created.append(((level, index), value))
        ids.append((level, index))
        hashes.append(value)
        self._end += 1 << node[0]
        return created

    def root(self) -> bytes:
        """The Merkle Tree Hash of leaves ``[0, end)``; :data:`EMPTY_ROOT` when empty.

        Raises :class:`ProofError` when the range does not start at leaf 0.
        """
        if self._begin != 0:
            raise ProofError(f"a range starting at leaf {self._begin} has no tree root")
        return _fold(self._hashes)

    def copy(self) -> CompactRange:
        """An independent copy: appending to one does not change the other."""
        other = CompactRange.__new__(CompactRange)
        other._begin, other._end = self._begin, self._end
        other._ids = None if self._ids is None else list(self._ids)
        other._hashes = list(self._hashes)
        return other

    def to_bytes(self) -> bytes:
        """The hashes, concatenated: with ``begin`` and ``end`` this is the whole range."""
        return b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, begin: int, end: int, data: bytes | bytearray | memoryview) -> CompactRange:
        """The range ``[begin, end)`` whose :meth:`to_bytes` is ``data``.

        Raises :class:`ProofError` when ``data`` is not exactly the hashes of
        ``decompose(begin, end)``.
        """
        raw = bytes(data)
        count = len(decompose(begin, end))
        if len(raw) != count * HASH_SIZE:
            raise ProofError(
                f"leaves [{begin}, {end}) need {count} subtree hashes "
                f"({count * HASH_SIZE} bytes), not {len(raw)} bytes"
            )
        return cls(begin, end, [raw[i : i + HASH_SIZE] for i in range(0, len(raw), HASH_SIZE)])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return (self._begin, self._end, self._hashes) == (other._begin, other._end, other._hashes)

    def __repr__(self) -> str:
        return f"CompactRange(begin={self._begin}, end={self._end}, hashes={len(self._hashes)})"


# -- proofs from stored perfect nodes ------------------------------------------------------


def inclusion_proof(index: int, size: int, nodes: NodeReader) -> list[bytes]:
    """RFC 9162 §2.1.3.1 ``PATH(index, D[size])``: the inclusion proof of leaf ``index``
    in the tree of the first ``size`` leaves, from the leaf upwards.

    One ``nodes`` call for O(log size) perfect nodes. Raises :class:`ProofError` unless
    ``0 <= index < size``, or when ``nodes`` does not return one 32-byte hash per id.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    # Walk down from the root; the sibling of each subtree on the path is one element.
    begin, end = 0, size
    while end - begin > 1:
        middle = begin + _split(end - begin)
        if index < middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((begin, middle))
            begin = middle
    ranges.reverse()
    return _hash_ranges(ranges, nodes)


def consistency_proof(old_size: int, new_size: int, nodes: NodeReader) -> list[bytes]:
    """RFC 9162 §2.1.4.1 ``PROOF(old_size, D[new_size])``: that the tree of ``new_size``
    leaves extends the tree of ``old_size`` leaves. Empty when the sizes are equal.

    One ``nodes`` call for O(log new_size) perfect nodes. Raises :class:`ProofError`
    unless ``0 < old_size <= new_size`` (RFC 9162 defines no proof from the empty tree),
    or when ``nodes`` does not return one 32-byte hash per id.
    """
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from tree size {old_size} to {new_size}")
    ranges: list[tuple[int, int]] = []
    # SUBPROOF(m, D[begin:end], b), unrolled: `whole` is b, true while the old tree is
    # a left part of the current subtree that the verifier already knows the root of.
    begin, end, whole = 0, new_size, True
    while old_size != end:
        middle = begin + _split(end - begin)
        if old_size <= middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((begin, middle))
            begin, whole = middle, False
    if not whole:
        ranges.append((begin, end))
    ranges.reverse()
    return _hash_ranges(ranges, nodes)


def root_at(size: int, nodes: NodeReader) -> bytes:
    """The Merkle Tree Hash of the first ``size`` leaves, from at most log2(size) + 1
    stored perfect nodes (one ``nodes`` call). :data:`EMPTY_ROOT` for size 0.

    Raises :class:`ProofError` when ``size`` is negative or ``nodes`` does not return one
    32-byte hash per id.
    """
    if size < 0:
        raise ProofError(f"{size} is not a tree size")
    if size == 0:
        return EMPTY_ROOT
    return _hash_ranges([(0, size)], nodes)[0]


def _hash_ranges(ranges: Sequence[tuple[int, int]], nodes: NodeReader) -> list[bytes]:
    """The Merkle Tree Hash of each range of leaves, from one batch of stored nodes.

    A perfect range is a single node; a range on the ragged right edge is the fold of
    its :func:`decompose` nodes.
    """
    groups = [decompose(begin, end) for begin, end in ranges]
    ids = [node for group in groups for node in group]
    if not ids:
        return []
    values = nodes(ids)
    if len(values) != len(ids):
        raise ProofError(f"asked storage for {len(ids)} subtree hashes, got {len(values)}")
    for node, value in zip(ids, values, strict=True):
        _check_hash(value, f"the stored hash of node {node}")
    result: list[bytes] = []
    position = 0
    for group in groups:
        result.append(_fold(values[position : position + len(group)]))
        position += len(group)
    return result


# -- verification ------------------------------------------------------------------------


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that an inclusion proof of ``leaf`` at ``index`` leads to, in a tree of
    ``size`` leaves (RFC 9162 §2.1.3.2 up to the final comparison).

    Raises :class:`ProofError` unless ``0 <= index < size``, when a hash is not 32 bytes,
    or when the proof has the wrong number of elements for that index and size.
    """
    _check_hash(leaf, "the leaf hash")
    for value in proof:
        _check_hash(value, "an inclusion proof element")
    # 1. The leaf must be in the tree.
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    # 2.-3.
    fn, sn, r = index, size - 1, bytes(leaf)
    # 4.
    for p in proof:
        if sn == 0:
            raise ProofError(f"the inclusion proof is too long for leaf {index} of {size}")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    # 5. (first half: the root comparison is the caller's).
    if sn != 0:
        raise ProofError(f"the inclusion proof is too short for leaf {index} of {size}")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` is leaf ``index`` of the tree of ``size`` leaves with ``root``
    (RFC 9162 §2.1.3.2).

    Raises :class:`ProofError` when the proof does not verify, or when anything is
    malformed: ``index`` not below ``size``, a hash that is not 32 bytes, too many or too
    few proof elements.
    """
    _check_hash(root, "the root hash")
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(f"the inclusion proof of leaf {index} does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` leaves with ``new_root`` extends the tree of
    ``old_size`` leaves with ``old_root`` (RFC 9162 §2.1.4.2).

    Trees of equal size need an empty proof and equal roots. The empty tree (root
    :data:`EMPTY_ROOT`) is a prefix of every tree, with an empty proof: RFC 9162 defines
    no proof for it. Raises :class:`ProofError` when the proof does not verify or anything
    is malformed: negative sizes, ``old_size > new_size``, a hash that is not 32 bytes, too
    many or too few proof elements.
    """
    _check_hash(old_root, "the old root hash")
    _check_hash(new_root, "the new root hash")
    for value in proof:
        _check_hash(value, "a consistency proof element")
    if not 0 <= old_size <= new_size:
        raise ProofError(f"tree size {new_size} cannot extend tree size {old_size}")
    if old_size == 0 and old_root != EMPTY_ROOT:
        raise ProofError("the root of the empty tree is the hash of nothing")
    if old_size == new_size or old_size == 0:
        if proof:
            raise ProofError(
                f"the consistency proof from tree size {old_size} to {new_size} must be empty"
            )
        if old_size == new_size and old_root != new_root:
            raise ProofError(f"two different roots for tree size {old_size}")
        return
    # 1.
    if not proof:
        raise ProofError(f"no consistency proof from tree size {old_size} to {new_size}")
    # 2. A power-of-two old tree is a perfect subtree of the new one: the proof omits
    # its root, which the verifier has.
    path = [bytes(old_root), *proof] if old_size & (old_size - 1) == 0 else list(proof)
    # 3.-4.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:
            raise ProofError(
                f"the consistency proof is too long for tree sizes {old_size} to {new_size}"
            )
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    # 7.
    if sn != 0:
        raise ProofError(
            f"the consistency proof is too short for tree sizes {old_size} to {new_size}"
        )
    if fr != old_root:
        raise ProofError(f"the consistency proof does not lead to the root of tree {old_size}")
    if sr != new_root:
        raise ProofError(f"the consistency proof does not lead to the root of tree {new_size}")
