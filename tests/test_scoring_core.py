import math
import random
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

import schemas
from pipeline.scoring.core import (EncodedDoc, encode, error_row, length_sorted_batches, plan_windows, score_row,
                                   scored_bytes)
from pipeline.scoring.identity import ScorerIdentity

IDENTITY = ScorerIdentity(model_name="m", weights_sha256="ab" * 32, tokenizer="m@0123", dtype="float32",
                          backend="torch", max_tokens=8, truncation="first_n", code_version="0.1.0")


# --------------------------------------------------------------------------- identity

def test_scorer_id_is_stable_short_and_ignores_code_version():
    sid = IDENTITY.scorer_id
    assert len(sid) == 16 and int(sid, 16) >= 0
    assert replace(IDENTITY, code_version="9.9.9").scorer_id == sid
    assert replace(IDENTITY, dtype="bfloat16").scorer_id != sid
    assert replace(IDENTITY, max_tokens=16).scorer_id != sid
    assert replace(IDENTITY, backend="vllm").scorer_id != sid
    # first_n ignores the stride, so an unused stride cannot split one scorer into two ids
    assert replace(IDENTITY, stride=512).scorer_id == sid and replace(IDENTITY, stride=512).stride is None


def test_truncation_labels_and_validation():
    assert IDENTITY.truncation_label == "first_n:8"
    sliding = replace(IDENTITY, truncation="sliding", stride=4)
    assert sliding.truncation_label == "sliding:8:4" and sliding.scorer_id != IDENTITY.scorer_id
    assert sliding.to_dict()["scorer_id"] == sliding.scorer_id
    for bad in (dict(truncation="sliding", stride=8), dict(truncation="sliding", stride=None),
                dict(truncation="middle"), dict(max_tokens=1), dict(backend="tf")):
        with pytest.raises(ValueError):
            replace(IDENTITY, **bad)


# --------------------------------------------------------------------------- windows

def test_first_n_windows():
    assert plan_windows(0, 8) == [] and plan_windows(1, 8) == []
    assert plan_windows(5, 8) == [(0, 5, 1)]
    assert plan_windows(20, 8) == [(0, 8, 1)]


def test_sliding_windows_example():
    # the strided-perplexity scheme: each window scores only what the previous did not reach
    assert plan_windows(10, 4, "sliding", 2) == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    assert plan_windows(3, 4, "sliding", 2) == [(0, 3, 1)]


def test_sliding_windows_score_every_position_once_with_context_brute_force():
    rng = random.Random(0)
    for _ in range(2000):
        max_tokens = rng.randint(2, 40)
        stride = rng.randint(1, max_tokens - 1)
        n = rng.randint(0, 200)
        windows = plan_windows(n, max_tokens, "sliding", stride)
        scored = [0] * n
        for start, end, first in windows:
            assert 0 <= start < first <= end <= n and end - start <= max_tokens
            for p in range(first, end):
                scored[p] += 1
                # the first window predicts from all it has; later ones keep max - stride of context
                assert p - start >= (p if start == 0 else max_tokens - stride)
        assert scored[1:] == [1] * (n - 1) and (n == 0 or scored[0] == 0)
        assert all(w[2] < w[1] for w in windows)           # no empty windows
        assert not windows or windows[-1][1] == n


# --------------------------------------------------------------------------- rows

def test_score_row_formulas_and_schema():
    nll = np.array([0.5, 1.0, 2.0, 8.0])
    row = score_row("d1", IDENTITY, nll, n_tokens=4, n_bytes_scored=20)
    assert row["n_predicted"] == 4 and row["n_tokens"] == 4 and row["n_bytes"] == 20
    assert row["nll_sum"] == pytest.approx(11.5)
    assert row["nll_mean"] == pytest.approx(11.5 / 4)
    assert row["perplexity"] == pytest.approx(math.exp(11.5 / 4))
    assert row["bits_per_byte"] == pytest.approx(11.5 / (math.log(2) * 20))
    assert row["nll_p50"] == pytest.approx(1.5) and row["nll_p90"] == pytest.approx(np.percentile(nll, 90))
    assert row["surprise_fraction"] == pytest.approx(0.25)      # only 8.0 > ln(1000)
    assert row["error"] is None and row["truncation"] == "first_n:8"
    assert row["scorer_id"] == IDENTITY.scorer_id and row["backend"] == "torch"
    err = error_row("d2", IDENTITY, 1, 3, "too_short: 1 token(s)")
    assert score_row("d2", IDENTITY, np.array([]), 1, 3) == err
    assert err["nll_sum"] is None and err["n_predicted"] == 0
    table = pa.Table.from_pylist([row, err])
    assert set(row) == set(schemas.SCORES.names) == set(err)
    schemas.validate(table, schemas.SCORES)


# --------------------------------------------------------------------------- tokens and bytes

class _CharTokenizer:
    """One token per character, like a HF fast tokenizer's output for this purpose."""
    def __init__(self, bos=None):
        self.bos_token_id = bos

    def __call__(self, text, add_special_tokens, return_offsets_mapping):
        assert add_special_tokens is False and return_offsets_mapping
        return {"input_ids": [ord(c) for c in text], "offset_mapping": [(i, i + 1) for i in range(len(text))]}


def test_encode_prepends_bos_and_bytes_follow_truncation():
    text = "héllo wörld"                                    # 11 chars, 13 UTF-8 bytes
    with_bos, without = encode(_CharTokenizer(bos=7), text), encode(_CharTokenizer(), text)
    assert with_bos.ids[0] == 7 and with_bos.ids[1:] == without.ids and with_bos.n_tokens == 11
    assert without.n_tokens == 11 and not without.has_bos
    # whole document covered: all its bytes
    assert scored_bytes(text, with_bos, plan_windows(12, 64)) == 13
    assert scored_bytes(text, with_bos, plan_windows(12, 6, "sliding", 3)) == 13
    # first 6 positions = BOS + "héllo" -> 6 bytes; without BOS the first 6 tokens = "héllo " -> 7
    assert scored_bytes(text, with_bos, plan_windows(12, 6)) == 6
    assert scored_bytes(text, without, plan_windows(11, 6)) == 7
    assert scored_bytes("", EncodedDoc([7], True, []), []) == 0


# --------------------------------------------------------------------------- batching

def test_length_sorted_batches_respect_budget_brute_force():
    rng = random.Random(1)
    for _ in range(300):
        lengths = [rng.randint(1, 100) for _ in range(rng.randint(0, 60))]
        budget = rng.randint(1, 400)
        batches = length_sorted_batches(lengths, budget)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        for b in batches:
            assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= budget
            assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
        flat = [lengths[i] for b in batches for i in b]
        assert flat == sorted(flat, reverse=True)
    assert length_sorted_batches([3, 10, 5, 7, 1, 20], 20) == [[5], [1, 3], [2, 0, 4]]
    with pytest.raises(ValueError):
        length_sorted_batches([1], 0)


# --------------------------------------------------------------------------- huge documents

def test_truncate_text_cuts_first_n_at_the_char_limit_only():
    from pipeline.scoring.core import CHARS_PER_TOKEN, LIMIT_ERROR, char_limit, is_limit_error, truncate_text
    limit = char_limit(IDENTITY)
    assert limit == 8 * CHARS_PER_TOKEN
    text = "é" * (limit + 10)
    assert truncate_text(text, IDENTITY) == "é" * limit
    assert truncate_text(truncate_text(text, IDENTITY), IDENTITY) == "é" * limit     # idempotent
    assert truncate_text("short", IDENTITY) == "short"
    sliding = replace(IDENTITY, truncation="sliding", stride=4)
    assert char_limit(sliding) is None and truncate_text(text, sliding) == text
    assert is_limit_error(f"{LIMIT_ERROR}: 5 bytes") and not is_limit_error("too_short: 0 token(s)")
    assert not is_limit_error(None)
