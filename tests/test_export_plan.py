"""The export plan's pure functions against plain-loop reference implementations."""
import hashlib
import random

import numpy as np
import pyarrow as pa
import pytest

import schemas
from pipeline.export.plan import (assign_shards, document_order, normalise_weights, plan_documents,
                                  plan_fingerprint, sample_mixture, sample_to_budget, token_dtype)
from pipeline.hashing import seeded_keys

SEEDS = range(6)


def _doc_ids(rng, n):
    return [hashlib.blake2b(str(rng.random()).encode(), digest_size=16).hexdigest() for _ in range(n)]


# -- references: the rules as loops -------------------------------------------------------

def ref_order(doc_ids, shuffle, seed):
    def key(d):
        return int.from_bytes(hashlib.blake2b(f"{seed}:{d}".encode(), digest_size=8).digest(), "little")
    return sorted(range(len(doc_ids)), key=(lambda i: (key(doc_ids[i]), doc_ids[i])) if shuffle
                  else (lambda i: doc_ids[i]))


def ref_budget(n_tokens, budget):
    keep, taken = [], 0
    for n in n_tokens:
        keep.append(taken < budget)
        taken += n if keep[-1] else 0
    return keep


def ref_mixture(groups, n_tokens, weights, budget):
    total_w = sum(weights.values())
    w = {g: x / total_w for g, x in weights.items() if x > 0}
    totals = {g: sum(n for gg, n in zip(groups, n_tokens) if gg == g) for g in w}
    if budget is None:
        budget = min(totals[g] / w[g] for g in w)
    taken = dict.fromkeys(w, 0)
    keep = []
    for g, n in zip(groups, n_tokens):
        keep.append(g in w and taken[g] < budget * w[g])
        if keep[-1]:
            taken[g] += n
    return keep


def ref_shards(sizes, target):
    shards, index, acc = [], 0, 0
    for size in sizes:
        shards.append(index)
        acc += size
        if acc >= target:
            index, acc = index + 1, 0
    return shards


# -- order ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_order_matches_reference_and_ignores_input_order(seed):
    rng = random.Random(seed)
    ids = _doc_ids(rng, 200)
    for shuffle in (True, False):
        order = document_order(ids, shuffle, seed)
        assert order.tolist() == ref_order(ids, shuffle, seed)
        shuffled = ids[:]
        rng.shuffle(shuffled)  # another partitioning of the same documents: the same sequence of doc_ids
        assert [shuffled[i] for i in document_order(shuffled, shuffle, seed)] == [ids[i] for i in order]
    assert seeded_keys(ids, seed).dtype == np.uint64
    assert document_order(ids, True, seed).tolist() != document_order(ids, True, seed + 1).tolist()
    assert document_order(ids, False, seed).tolist() == sorted(range(200), key=ids.__getitem__)


def test_order_of_nothing():
    assert document_order([], True, 0).tolist() == [] and seeded_keys([], 0).tolist() == []


# -- token budget ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_budget_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n_tokens = rng.integers(1, 50, size=300)
    for budget in (1, 7, int(n_tokens.sum()) // 3, int(n_tokens.sum()), 10**9):
        keep = sample_to_budget(n_tokens, budget)
        assert keep.tolist() == ref_budget(n_tokens.tolist(), budget)
        taken = int(n_tokens[keep].sum())
        assert taken >= min(budget, n_tokens.sum())                      # the crossing document is kept ...
        assert taken - n_tokens[keep][-1] < budget                       # ... and it is the only one past it


def test_budget_edges():
    assert sample_to_budget([], 10).tolist() == []
    assert sample_to_budget([3, 4, 5], None).tolist() == [True, True, True]
    assert sample_to_budget([3, 4, 5], 100).tolist() == [True, True, True]
    assert sample_to_budget([3, 4, 5], 3).tolist() == [True, False, False]
    assert sample_to_budget([3, 4, 5], 4).tolist() == [True, True, False]


# -- mixture --------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_mixture_matches_reference(seed):
    rng = np.random.default_rng(seed)
    groups = rng.choice(["a.org", "b.org", "c.org", None], size=400).tolist()
    n_tokens = rng.integers(1, 40, size=400)
    weights = {"a.org": float(rng.uniform(0.1, 1)), "b.org": float(rng.uniform(0.1, 1)), "c.org": 0.0}
    for budget in (None, 50, 1000, 10**9):
        keep = sample_mixture(groups, n_tokens, weights, budget)
        assert keep.tolist() == ref_mixture(groups, n_tokens.tolist(), weights, budget)
    # Without a budget the scarcest group (relative to its weight) is taken whole, the others to their share.
    keep = sample_mixture(groups, n_tokens, weights)
    w = normalise_weights(weights)
    tokens = {g: int(n_tokens[keep & (np.array(groups, dtype=object) == g)].sum()) for g in w}
    totals = {g: int(n_tokens[np.array(groups, dtype=object) == g].sum()) for g in w}
    scarce = min(("a.org", "b.org"), key=lambda g: totals[g] / w[g])
    assert tokens[scarce] == totals[scarce] and tokens["c.org"] == 0
    share = tokens["a.org"] / (tokens["a.org"] + tokens["b.org"])
    assert share == pytest.approx(w["a.org"] / (w["a.org"] + w["b.org"]), abs=0.05)


def test_mixture_errors_and_edges():
    with pytest.raises(ValueError, match="x.org"):
        sample_mixture(["a.org", "b.org"], [1, 1], {"a.org": 1, "x.org": 1})
    for bad in ({}, {"a.org": -1}, {"a.org": 0}, {"a.org": float("nan")}, {"a.org": "1"}):
        with pytest.raises(ValueError):
            normalise_weights(bad)
    assert normalise_weights({"a": 3, "b": 1}) == {"a": 0.75, "b": 0.25}
    # a zero weight for an absent group is fine: it excludes nothing that exists
    assert sample_mixture(["a.org"], [5], {"a.org": 1, "gone.org": 0}).tolist() == [True]
    # a group short of its target gives all it has
    assert sample_mixture(["a", "a", "b"], [10, 10, 1], {"a": 0.5, "b": 0.5}, budget=40).tolist() == [True] * 3


# -- shards ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_shards_match_reference(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 100, size=500)
    for target in (1, 50, 99, 1000, 10**9):
        assert assign_shards(sizes, target).tolist() == ref_shards(sizes.tolist(), target)


def test_shard_edges():
    assert assign_shards([], 10).tolist() == []
    assert assign_shards([500, 1, 1, 500, 1], 100).tolist() == [0, 1, 1, 1, 2]  # an oversize doc closes a shard
    assert assign_shards([5, 5, 5, 5], 10).tolist() == [0, 0, 1, 1]             # exactly at the target closes it


# -- the plan -------------------------------------------------------------------------------

def _candidates(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return pa.table({"doc_id": _doc_ids(random.Random(seed), n),
                     "group": rng.choice(["a.org", "b.org"], size=n).tolist(),
                     "n_tokens": rng.integers(1, 80, size=n), "n_bytes": rng.integers(1, 400, size=n)})


def test_plan_is_ordered_sampled_and_cut():
    cands = _candidates()
    plan = plan_documents(cands, shuffle=True, seed=3, token_budget=5000, weights=None, shard_bytes=2000,
                          token_bytes=None)
    assert plan.schema.equals(schemas.EXPORT_DOCUMENTS, check_metadata=False)
    order = [cands["doc_id"][i].as_py() for i in ref_order(cands["doc_id"].to_pylist(), True, 3)]
    assert plan["doc_id"].to_pylist() == order[:plan.num_rows]           # a prefix of the seeded order
    assert plan["shard"].to_pylist() == ref_shards(plan["n_bytes"].to_pylist(), 2000)
    positions, expected = plan["position"].to_pylist(), []
    for i, s in enumerate(plan["shard"].to_pylist()):
        expected.append(0 if i == 0 or s != plan["shard"][i - 1].as_py() else expected[-1] + 1)
    assert positions == expected
    # token shards are cut by token bytes
    tokens = plan_documents(cands, shuffle=False, seed=0, token_budget=None, weights=None, shard_bytes=400,
                            token_bytes=2)
    assert tokens.num_rows == 300 and tokens["doc_id"].to_pylist() == sorted(cands["doc_id"].to_pylist())
    assert tokens["shard"].to_pylist() == ref_shards([2 * n for n in tokens["n_tokens"].to_pylist()], 400)
    # the fingerprint follows the plan
    again = plan_documents(cands, shuffle=True, seed=3, token_budget=5000, weights=None, shard_bytes=2000,
                           token_bytes=None)
    reseeded = plan_documents(cands, shuffle=True, seed=4, token_budget=5000, weights=None, shard_bytes=2000,
                              token_bytes=None)
    assert plan_fingerprint("f", plan) == plan_fingerprint("f", again) != plan_fingerprint("f", reseeded)


def test_token_dtype():
    assert token_dtype("auto", 300) == "uint16" and token_dtype("auto", 65536) == "uint16"
    assert token_dtype("auto", 65537) == "uint32" and token_dtype("uint32", 10) == "uint32"
    with pytest.raises(ValueError, match="uint16"):
        token_dtype("uint16", 100_000)
