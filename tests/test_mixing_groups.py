"""Held-out splits per group and the rows dealt to groups, against brute force on random inputs."""
import math

import numpy as np
import pytest

from pipeline.hashing import seeded_keys
from pipeline.mixing.groups import GroupAllocator, heldout_split


def test_heldout_split_takes_the_smallest_keys_of_each_group_in_any_order():
    rng = np.random.default_rng(0)
    ids = [f"doc{i}" for i in range(300)]
    groups = rng.choice(["a", "b", "c", "tiny"], 300, p=[0.5, 0.3, 0.19, 0.01])
    held = heldout_split(ids, groups, 0.1, seed=3, min_docs=2)
    keys = seeded_keys(ids, "heldout:3")
    for g in set(groups):
        members = [i for i in range(300) if groups[i] == g]
        n = min(len(members) - 1, max(2, math.ceil(0.1 * len(members))))
        expected = set(sorted(members, key=lambda i: keys[i])[:n])
        assert {i for i in members if held[i]} == expected
    order = rng.permutation(300)
    again = heldout_split([ids[i] for i in order], groups[order], 0.1, seed=3, min_docs=2)
    assert {ids[i] for i, h in zip(order, again) if h} == {ids[i] for i in range(300) if held[i]}
    assert not heldout_split(["x"], ["solo"], 0.5).any()          # a one-document group keeps its document
    with pytest.raises(ValueError):
        heldout_split(ids, groups, 1.0)


@pytest.mark.parametrize("seed", range(5))
def test_rows_track_changing_proportions(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 7))
    allocator, expected = GroupAllocator(m), np.zeros(m)
    for _ in range(200):
        p = rng.dirichlet(np.ones(m) * 0.5)
        rows = int(rng.integers(1, 33))
        counts = allocator.allocate(p, rows)
        assert counts.sum() == rows and (counts >= 0).all()
        expected += rows * p
        assert (allocator.dealt - expected).max() < 1 + 1e-9     # never a row ahead: credits stay above -1
        assert (expected - allocator.dealt).max() < 2             # and not far behind
    with pytest.raises(ValueError):
        allocator.allocate(np.full(m, 0.5), 4)


def test_largest_groups_against_brute_force():
    from pipeline.mixing.groups import largest_groups
    rng = np.random.default_rng(0)
    for _ in range(200):
        groups = [None if x == 0 else f"g{x}" for x in rng.integers(0, 7, rng.integers(0, 40))]
        k, min_docs = int(rng.integers(1, 5)), int(rng.integers(1, 6))
        counts = {g: groups.count(g) for g in set(groups) if g is not None}
        ranked = sorted((g for g in counts if counts[g] >= min_docs), key=lambda g: (-counts[g], g))[:k]
        assert largest_groups(groups, k, min_docs) == sorted(ranked)
