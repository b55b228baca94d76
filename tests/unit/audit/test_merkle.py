import hashlib

import pytest

from services.audit import merkle

pytestmark = pytest.mark.unit

# The RFC 6962 test vectors used by Certificate Transparency implementations.
LEAVES = [
    bytes.fromhex(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_empty_tree_root_is_the_hash_of_nothing():
    assert merkle.root([]).hex() == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("n", range(1, 9))
def test_roots_match_the_rfc6962_vectors(n):
    assert merkle.root(LEAVES[:n]).hex() == ROOTS[n - 1]
    acc = merkle.Accumulator()
    for leaf in LEAVES[:n]:
        acc.append(leaf)
    assert acc.root().hex() == ROOTS[n - 1]


def test_inclusion_proof_vector():
    leaves = [merkle.leaf_hash(x) for x in LEAVES]
    assert [p.hex() for p in merkle.inclusion_proof(0, leaves)] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]


def _brute_root(leaves):
    # The recursive definition itself, written independently of the module.
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return merkle.node_hash(_brute_root(leaves[:k]), _brute_root(leaves[k:]))


LEAF_HASHES = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(40)]


@pytest.mark.parametrize("n", range(1, 41))
def test_accumulator_and_root_agree_with_the_definition(n):
    acc = merkle.Accumulator()
    for leaf in LEAF_HASHES[:n]:
        acc.append_leaf_hash(leaf)
    expected = _brute_root(LEAF_HASHES[:n])
    assert acc.root() == expected == merkle.root_from_leaf_hashes(LEAF_HASHES[:n])


@pytest.mark.parametrize("n", range(1, 41))
def test_every_inclusion_proof_verifies_and_tampering_fails(n):
    leaves = LEAF_HASHES[:n]
    tree_root = merkle.root_from_leaf_hashes(leaves)
    for i in range(n):
        proof = merkle.inclusion_proof(i, leaves)
        assert merkle.verify_inclusion(leaves[i], i, n, proof, tree_root)
        assert not merkle.verify_inclusion(merkle.leaf_hash(b"changed"), i, n, proof, tree_root)
        if n > 1:
            assert not merkle.verify_inclusion(leaves[i], (i + 1) % n, n, proof, tree_root)
        if proof:
            bad = [*proof[:-1], merkle.leaf_hash(b"x")]
            assert not merkle.verify_inclusion(leaves[i], i, n, bad, tree_root)
            assert not merkle.verify_inclusion(leaves[i], i, n, proof[:-1], tree_root)


@pytest.mark.parametrize("n", range(1, 41))
def test_every_consistency_proof_verifies_and_tampering_fails(n):
    leaves = LEAF_HASHES[:n]
    new_root = merkle.root_from_leaf_hashes(leaves)
    for m in range(1, n + 1):
        old_root = merkle.root_from_leaf_hashes(leaves[:m])
        proof = merkle.consistency_proof(m, leaves)
        assert merkle.verify_consistency(m, n, old_root, new_root, proof)
        assert not merkle.verify_consistency(m, n, merkle.leaf_hash(b"x"), new_root, proof)
        if m < n:
            assert not merkle.verify_consistency(m, n, old_root, merkle.leaf_hash(b"x"), proof)
            forged = merkle.root_from_leaf_hashes([*leaves[: m - 1], merkle.leaf_hash(b"y")])
            assert not merkle.verify_consistency(m, n, forged, new_root, proof)


def test_proof_arguments_are_checked():
    with pytest.raises(ValueError):
        merkle.inclusion_proof(3, LEAF_HASHES[:3])
    with pytest.raises(ValueError):
        merkle.consistency_proof(0, LEAF_HASHES[:3])
    assert not merkle.verify_consistency(4, 3, b"", b"", [])
