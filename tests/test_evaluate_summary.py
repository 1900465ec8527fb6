"""The comparison's arithmetic by hand: equal tokens per arm, means, spreads and the paired verdict."""
import math

import pytest

from pipeline.evaluate.summary import compare_arms, tokens_prefix, training_rows


def test_every_arm_trains_on_the_same_rows():
    assert training_rows(1000, 50, 8) == (400, 0.4)
    assert training_rows(100, 50, 8) == (400, 4.0)          # a small arm repeats its rows four times
    with pytest.raises(ValueError):
        training_rows(0, 10, 8)


def test_the_paired_verdict_by_hand():
    rows = {r["arm"]: r for r in compare_arms({"random": [3.0, 3.2, 3.1], "curated": [2.8, 3.0, 2.95],
                                               "noisy": [2.5, 3.3, 3.0]}, "random")}
    c = rows["curated"]
    assert c["mean"] == pytest.approx(2.9166667) and c["diff_mean"] == pytest.approx(-0.1833333)
    assert c["diff_std"] == pytest.approx(0.0288675, rel=1e-5) and c["beats_baseline"]
    n = rows["noisy"]       # lower on average (-0.1667) but not on every seed
    assert n["diff_mean"] == pytest.approx(-0.1666667) and not n["beats_baseline"]
    assert rows["random"]["diff_mean"] == 0 and not rows["random"]["beats_baseline"]
    assert rows["random"]["std"] == pytest.approx(0.1)
    one = compare_arms({"random": [3.0], "curated": [2.0]}, "random")
    assert math.isnan(one[1]["diff_std"]) and not one[1]["beats_baseline"]   # one seed: no spread, no verdict
    with pytest.raises(ValueError, match="same seeds"):
        compare_arms({"random": [3.0, 3.1], "curated": [2.0]}, "random")
    with pytest.raises(ValueError, match="baseline"):
        compare_arms({"curated": [2.0]}, "random")


def test_tokens_prefix_against_brute_force():
    import random
    rng = random.Random(0)
    for _ in range(300):
        lengths = [rng.randint(1, 9) for _ in range(rng.randint(0, 12))]
        needed = rng.randint(-2, 60)
        n = tokens_prefix(lengths, needed)
        brute = next((k for k in range(len(lengths) + 1) if sum(lengths[:k]) >= needed), len(lengths))
        assert n == brute, (lengths, needed)
