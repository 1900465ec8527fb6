"""The correlation stage's inputs by hand and against brute force: the domain sample, the
token-weighted bits-per-byte matrix, benchmark errors and the alignment of models."""
import math

import numpy as np
import pyarrow as pa
import pytest

from pipeline.correlations.matrix import align, benchmark_errors, bpb_matrix, domain_sample
from pipeline.hashing import seeded_keys


def test_domain_sample_takes_the_smallest_keys_and_leaves_small_domains_out():
    rng = np.random.default_rng(0)
    ids = np.array([f"{i:032x}" for i in rng.permutation(500)], dtype=object)
    domains = rng.choice(["a.org", "b.org", "c.org", "tiny.org"], size=500, p=[0.5, 0.3, 0.19, 0.01])
    chosen, left_out = domain_sample(ids, domains, per_domain=20, min_pages=10, seed=1)
    keys = seeded_keys(ids.tolist(), "correlations:1")
    sizes = {d: int((domains == d).sum()) for d in set(domains)}
    for d, size in sizes.items():
        members = [i for i in range(500) if domains[i] == d]
        expected = set(sorted(members, key=lambda i: keys[i])[:20]) if size >= 10 else set()
        assert {i for i in chosen if domains[i] == d} == expected, d
    assert left_out == {d: n for d, n in sizes.items() if n < 10} and left_out
    perm = rng.permutation(500)
    again, _ = domain_sample(ids[perm], domains[perm], 20, 10, seed=1)
    assert set(ids[perm][again]) == set(ids[chosen])


def test_the_matrix_is_token_weighted_and_drops_pages_a_model_missed():
    rows = pa.Table.from_pylist([
        # model m1: domain x has a short page with a high NLL and a long one with a low NLL
        {"model": "m1", "doc_id": "p1", "domain": "x", "nll_sum": 100.0, "n_bytes": 10, "n_predicted": 5},
        {"model": "m1", "doc_id": "p2", "domain": "x", "nll_sum": 300.0, "n_bytes": 1000, "n_predicted": 250},
        {"model": "m1", "doc_id": "p3", "domain": "y", "nll_sum": 70.0, "n_bytes": 100, "n_predicted": 30},
        {"model": "m1", "doc_id": "p4", "domain": "y", "nll_sum": 10.0, "n_bytes": 10, "n_predicted": 3},
        {"model": "m2", "doc_id": "p1", "domain": "x", "nll_sum": 90.0, "n_bytes": 10, "n_predicted": 5},
        {"model": "m2", "doc_id": "p2", "domain": "x", "nll_sum": 200.0, "n_bytes": 1000, "n_predicted": 250},
        {"model": "m2", "doc_id": "p3", "domain": "y", "nll_sum": 50.0, "n_bytes": 100, "n_predicted": 30},
        {"model": "m2", "doc_id": "p4", "domain": "y", "nll_sum": None, "n_bytes": 10, "n_predicted": 0},  # unscored
    ])
    m = bpb_matrix(rows)
    assert m.models == ["m1", "m2"] and m.domains == ["x", "y"] and m.dropped_pages == 1
    ln2 = math.log(2)
    np.testing.assert_allclose(m.bpb, [[400 / (ln2 * 1010), 70 / (ln2 * 100)], [290 / (ln2 * 1010), 50 / (ln2 * 100)]])
    # not the mean of page BPBs, which the short page would dominate
    assert m.bpb[0, 0] != pytest.approx(np.mean([100 / (ln2 * 10), 300 / (ln2 * 1000)]))
    assert m.tokens.tolist() == [[255, 30], [255, 30]] and m.pages.tolist() == [2, 1]
    assert m.n_bytes.tolist() == [[1010, 100], [1010, 100]]
    np.testing.assert_allclose(m.tokens_per_byte, [255 / 1010, 30 / 100])


def test_benchmark_errors_average_the_chosen_benchmarks_and_align_reports_what_is_missing():
    board = pa.Table.from_pylist([
        {"model": "m1", "benchmark": "arc", "accuracy": 0.6}, {"model": "m1", "benchmark": "piqa", "accuracy": 0.8},
        {"model": "m2", "benchmark": "arc", "accuracy": 0.5}, {"model": "m2", "benchmark": "piqa", "accuracy": 0.7},
        {"model": "m3", "benchmark": "arc", "accuracy": 0.9},                       # piqa missing
        {"model": "m9", "benchmark": "arc", "accuracy": 0.1}, {"model": "m9", "benchmark": "piqa", "accuracy": 0.1}])
    errors = benchmark_errors(board)
    assert errors == pytest.approx({"m1": 0.3, "m2": 0.4, "m9": 0.9})
    assert benchmark_errors(board, ["arc"])["m3"] == pytest.approx(0.1)
    matrix = bpb_matrix(pa.Table.from_pylist([
        {"model": m, "doc_id": "p", "domain": "x", "nll_sum": v, "n_bytes": 10, "n_predicted": 4}
        for m, v in (("m1", 5.0), ("m2", 6.0), ("m3", 7.0))]))
    X, y, models, missing = align(matrix, errors, min_models=2)
    assert models == ["m1", "m2"] and y.tolist() == pytest.approx([0.3, 0.4]) and X.shape == (2, 1)
    assert missing == {"without_benchmark": ["m3"], "without_scores": ["m9"]}
    with pytest.raises(ValueError, match=r"2 model\(s\) have both .* at least 3 .*benchmark error: \['m3'\]"):
        align(matrix, errors, min_models=3)
    with pytest.raises(ValueError, match="needs columns model, benchmark and accuracy or error"):
        benchmark_errors(pa.table({"model": ["a"], "score": [1.0]}))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        benchmark_errors(pa.table({"model": ["a"], "benchmark": ["b"], "error": [1.5]}))
    board = pa.table({"model": ["a", "a", "b"], "benchmark": ["x", "y", "x"], "accuracy_norm": [0.5, 0.7, 0.9],
                      "bits_per_byte": [1.5, 2.5, 1.0]})
    assert benchmark_errors(board, metric="error_norm") == {"a": pytest.approx(0.4)}      # b lacks y
    assert benchmark_errors(board, ["x"], metric="bits_per_byte") == {"a": 1.5, "b": 1.0}  # not capped at 1
    with pytest.raises(ValueError, match="needs columns model, benchmark and bits_per_byte"):
        benchmark_errors(pa.table({"model": ["a"], "benchmark": ["b"], "accuracy": [0.5]}), metric="bits_per_byte")
