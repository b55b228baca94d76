"""RFC 6962 (Certificate Transparency) Merkle trees over audit event hashes. Pure.

leaf = SHA-256(0x00 || event hash), node = SHA-256(0x01 || left || right). The tree of n leaves
splits at k, the largest power of two smaller than n. Proof algorithms follow RFC 6962 section
2.1 (PATH, PROOF) and the verification steps of RFC 9162 sections 2.1.3.2 and 2.1.4.2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def _root(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    n = hi - lo
    if n == 1:
        return leaves[lo]
    k = _split(n)
    return node_hash(_root(leaves, lo, lo + k), _root(leaves, lo + k, hi))


def root_from_leaf_hashes(leaves: Sequence[bytes]) -> bytes:
    """MTH over already hashed leaves."""
    if not leaves:
        return EMPTY_ROOT
    return _root(leaves, 0, len(leaves))


def root(data: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over raw entries (here: event hashes)."""
    return root_from_leaf_hashes([leaf_hash(d) for d in data])


class Accumulator:
    """Appends leaves one by one and gives the root of every prefix in O(log n): it keeps the
    roots of the perfect subtrees the prefix decomposes into (the tree's right frontier)."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (size, root), sizes strictly decreasing
        self.size = 0
        # The last leaf's siblings inside the perfect subtree it closed (bottom-up): with the
        # rest of the frontier they are its audit path (last_path). None: not known (a frontier
        # restored from a prune anchor, before any append).
        self._last_inner: list[bytes] | None = None

    def append_leaf_hash(self, leaf: bytes) -> None:
        size, current = 1, leaf
        inner: list[bytes] = []
        while self._stack and self._stack[-1][0] == size:
            _, left = self._stack.pop()
            inner.append(left)
            current = node_hash(left, current)
            size *= 2
        self._stack.append((size, current))
        self.size += 1
        self._last_inner = inner

    def append(self, data: bytes) -> None:
        self.append_leaf_hash(leaf_hash(data))

    def frontier(self) -> list[tuple[int, bytes]]:
        """The roots of the perfect subtrees of the tree so far (biggest first): all that is
        needed to go on appending, and to get the root of every later prefix, once the leaves
        themselves are gone (a pruned audit prefix)."""
        return list(self._stack)

    @classmethod
    def from_frontier(cls, frontier: Sequence[tuple[int, bytes]]) -> Accumulator:
        """The accumulator a prefix left; refuses a frontier no tree could have."""
        sizes = [size for size, _ in frontier]
        if any(s <= 0 or s & (s - 1) for s in sizes) or sizes != sorted(set(sizes), reverse=True):
            raise ValueError("a frontier holds perfect subtrees of decreasing distinct sizes")
        acc = cls()
        acc._stack = [(size, bytes(node)) for size, node in frontier]
        acc.size = sum(sizes)
        return acc

    def last_path(self) -> list[bytes] | None:
        """The audit path (RFC 6962 PATH, bottom-up) of the newest leaf in the tree so far, i.e.
        inclusion_proof(size - 1, leaves) without the leaves; None when not known. With that
        leaf it gives the root, and from_last_path rebuilds the frontier from both: what a
        checkpoint keeps so the next verification can start at its tree size."""
        if self._last_inner is None or not self._stack:
            return None
        return [*self._last_inner, *(node for _, node in reversed(self._stack[:-1]))]

    @classmethod
    def from_last_path(cls, size: int, leaf: bytes, path: Sequence[bytes]) -> Accumulator:
        """The accumulator of a tree of `size` leaves whose last leaf hash is `leaf` and whose
        audit path is `path` (last_path). Its root() is what that leaf and path give: equal to
        a signed root, it vouches for both (finding another leaf or path with the same root is
        a SHA-256 collision). Refuses a path of the wrong length for `size`."""
        if size <= 0:
            raise ValueError("a tree with a last leaf has at least one leaf")
        sizes = [1 << bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1]
        inner_count = sizes[-1].bit_length() - 1  # the last leaf's depth in its perfect subtree
        if len(path) != inner_count + len(sizes) - 1:
            raise ValueError(f"an audit path of the last of {size} leaves has another length")
        inner = [bytes(node) for node in path[:inner_count]]
        current = leaf
        for left in inner:
            current = node_hash(left, current)
        # The rest of the path is the frontier's other roots, smallest (rightmost) first.
        others = [bytes(node) for node in path[inner_count:]]
        acc = cls()
        acc._stack = [*zip(sizes[:-1], reversed(others), strict=True), (sizes[-1], current)]
        acc.size = size
        acc._last_inner = inner
        return acc

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        # RFC 6962 puts the biggest perfect subtree left and folds the rest to the right.
        current = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            current = node_hash(left, current)
        return current


# ---- inclusion -------------------------------------------------------------------------------


def _path(index: int, leaves: Sequence[bytes], lo: int, hi: int) -> list[bytes]:
    n = hi - lo
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*_path(index, leaves, lo, lo + k), _root(leaves, lo + k, hi)]
    return [*_path(index - k, leaves, lo + k, hi), _root(leaves, lo, lo + k)]


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) over hashed leaves: the audit path of leaf `index` (0-based)."""
    if not 0 <= index < len(leaves):
        raise ValueError("leaf index outside the tree")
    return _path(index, leaves, 0, len(leaves))


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """RFC 9162 2.1.3.2, with `leaf` the leaf hash."""
    if index >= tree_size or index < 0:
        return False
    fn, sn = index, tree_size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


# ---- consistency -----------------------------------------------------------------------------


def _subproof(m: int, leaves: Sequence[bytes], lo: int, hi: int, complete: bool) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if complete else [_root(leaves, lo, hi)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves, lo, lo + k, complete), _root(leaves, lo + k, hi)]
    return [*_subproof(m - k, leaves, lo + k, hi, False), _root(leaves, lo, lo + k)]


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) over hashed leaves: the tree of the first old_size leaves is a prefix."""
    if not 0 < old_size <= len(leaves):
        raise ValueError("old tree size must be between 1 and the new tree size")
    return _subproof(old_size, leaves, 0, len(leaves), True)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2."""
    if old_size <= 0 or old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
