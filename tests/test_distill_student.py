"""Distilled scoring's core against brute-force references: the stratified sample, Spearman's correlation,
band agreement, and a student that learns a target hidden in the words."""
import random
import zlib

import numpy as np
import pytest

from pipeline.distill.student import (
    TEXT_FEATURES,
    Student,
    TeacherTokens,
    StudentSettings,
    band_agreement,
    cross_validate,
    spearman,
    stratified_sample,
    text_features,
)
from pipeline.hashing import seeded_keys

pytest.importorskip("sklearn")


def test_stratified_sample_takes_the_smallest_keys_of_every_group():
    rng = np.random.default_rng(0)
    ids = np.array([f"{i:032x}" for i in rng.permutation(3000)], dtype=object)
    groups = np.array(rng.choice(["a.org", "b.org", "c.org", None], size=3000, p=[0.7, 0.2, 0.098, 0.002]),
                      dtype=object)
    chosen = stratified_sample(ids, groups, fraction=0.05, seed=3, min_per_group=5)
    keys = seeded_keys(ids.tolist(), "sample:3")
    for group in ("a.org", "b.org", "c.org", None):
        members = [i for i in range(len(ids)) if groups[i] == group]
        take = min(len(members), max(5, int(np.ceil(0.05 * len(members)))))
        expected = set(sorted(members, key=lambda i: keys[i])[:take])
        assert {i for i in chosen if groups[i] == group} == expected, group
    # the same documents whatever the input order
    perm = rng.permutation(len(ids))
    again = stratified_sample(ids[perm], groups[perm], fraction=0.05, seed=3, min_per_group=5)
    assert set(ids[perm][again]) == set(ids[chosen])
    assert set(ids[stratified_sample(ids, groups, 0.05, seed=4)]) != set(ids[chosen])
    with pytest.raises(ValueError):
        stratified_sample(ids, groups, fraction=0, seed=0)


def test_spearman_matches_the_rank_formula_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        a = rng.integers(0, 8, n).astype(float)   # many ties
        b = a + rng.normal(0, 3, n)
        from scipy.stats import spearmanr
        assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(spearman(np.ones(5), np.arange(5)))


def test_band_agreement_matches_a_loop():
    rng = np.random.default_rng(2)
    teacher = rng.normal(size=400)
    student = teacher + rng.normal(0, 0.7, 400)
    for criterion in ("low", "medium", "high"):
        got = band_agreement(teacher, student, criterion, 0.3)

        def kept(x):
            lo_pct, hi_pct = {"low": (0, 30), "medium": (35, 65), "high": (70, 100)}[criterion]
            lo = -np.inf if lo_pct == 0 else np.quantile(x, lo_pct / 100)
            hi = np.inf if hi_pct == 100 else np.quantile(x, hi_pct / 100)
            return [lo < v <= hi for v in x]
        same = sum(k1 == k2 for k1, k2 in zip(kept(teacher), kept(student)))
        assert got == pytest.approx(same / 400)
    assert band_agreement(teacher, teacher, "medium", 0.5) == 1.0


def _corpus(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Texts mixing plain words with 'spam' words; the target is the spam share plus a little noise."""
    rng = random.Random(seed)
    plain = "the of and to in a is that for it as was with be by on not this are from at which".split()
    spam = "buy cheap free click offer deal win prize best discount".split()
    texts, targets = [], []
    for _ in range(n):
        share = rng.random()
        words = [rng.choice(spam) if rng.random() < share else rng.choice(plain) for _ in range(rng.randint(30, 120))]
        texts.append(" ".join(words))
        targets.append(sum(w in spam for w in words) / len(words) + rng.gauss(0, 0.02))
    return texts, np.array(targets)


def _tokens(texts: list[str]) -> list[TeacherTokens]:
    """A stand-in for the teacher's tokenizer: a token per word, its id from the word's hash."""
    return [TeacherTokens(len(t[:2000].split()), tuple(zlib.crc32(w.encode()) % 50000 for w in t.split()[:127])) for t in texts]


def test_a_student_learns_a_target_hidden_in_the_words_and_round_trips():
    texts, targets = _corpus(240)
    settings = StudentSettings(hash_bits=14)
    result = cross_validate(texts, _tokens(texts), targets, settings, folds=4, seed=0, rate=0.5)
    assert result["spearman"] > 0.9 and result["band_agreement"]["medium"] > 0.8
    assert len(result["predicted"]) == 240
    student = Student.fit(texts, _tokens(texts), targets, settings)
    held_out, truth = _corpus(60, seed=1)
    predicted = student.predict(held_out, _tokens(held_out))
    assert spearman(truth, predicted) > 0.9 and abs(predicted.mean() - truth.mean()) < 0.1
    again = Student.from_bytes(student.to_bytes())
    assert again.settings == settings and np.array_equal(again.predict(held_out, _tokens(held_out)), predicted)
    assert student.predict([], []).shape == (0,)
    with pytest.raises(ValueError):
        Student.fit(texts[:1], _tokens(texts[:1]), targets[:1], settings)


def test_a_student_learns_a_target_carried_by_the_text_features():
    """Repetition is in no n-gram's weight (any words can repeat): the target is the share of repeated
    lines, which the stacked text features (duplicate_lines, compression) carry to held-out texts."""
    rng = random.Random(5)
    vocab = [f"w{i}" for i in range(3000)]

    def corpus(n):
        texts, targets = [], []
        for _ in range(n):
            lines = [" ".join(rng.sample(vocab, 8)) for _ in range(12)]
            repeated = rng.randint(0, 11)
            lines = lines[: 12 - repeated] + [lines[0]] * repeated
            texts.append("\n".join(lines))
            targets.append(repeated / 12)
        return texts, np.array(targets)
    texts, targets = corpus(200)
    student = Student.fit(texts, _tokens(texts), targets, StudentSettings(hash_bits=14))
    held_out, truth = corpus(80)
    assert spearman(truth, student.predict(held_out, _tokens(held_out))) > 0.9


def test_teacher_tokens_are_the_teachers_window():
    ids, ends = [1, 10, 11, 12, 13, 14], [3, 7, 9, 15, 20]          # a BOS, then five tokens
    view = TeacherTokens.of(ids, ends, has_bos=True, max_chars=9, max_tokens=4)
    assert view.head == 3 and view.window == (10, 11, 12)           # 3 tokens end by char 9; 4 positions, BOS first
    view = TeacherTokens.of(ids[1:], ends, has_bos=False, max_chars=100, max_tokens=4)
    assert view.head == 5 and view.window == (10, 11, 12, 13)


def test_text_features_by_hand():
    text = "Home | About\nHome | About\nThe cat sat. the dog ran Away"
    f = dict(zip(TEXT_FEATURES, text_features(text, TeacherTokens(20, (5, 5, 99, 0)), max_chars=2000)))
    words = text.split()
    assert f["log_chars"] == pytest.approx(np.log1p(len(text))) and f["log_words"] == pytest.approx(np.log1p(len(words)))
    assert f["duplicate_lines"] == pytest.approx(1 / 3)            # 3 lines, 2 distinct
    assert f["short_lines"] == pytest.approx(2 / 3)                # "Home | About" has 3 words
    assert f["separators"] == pytest.approx(2 / len(words))        # the two "|"
    assert f["lower_after_stop"] == pytest.approx(1 / len(words))  # "sat. the"
    # capitals after a word without a sentence end: "| About" twice, "About Home", "About The", "ran Away"
    assert f["capital_mid_sentence"] == pytest.approx(5 / len(words))
    assert f["chars_per_token"] == pytest.approx(len(text) / 20) and f["tokens_per_word"] == pytest.approx(20 / len(words))
    assert f["distinct_words"] == pytest.approx(len({w.lower() for w in words}) / len(words))
    logs = np.log1p([5, 5, 99, 0])
    assert f["window_log_token_id"] == pytest.approx(logs.mean()) and f["window_log_token_id_std"] == pytest.approx(logs.std())
    assert f["window_distinct_tokens"] == pytest.approx(3 / 4)
    # only the first max_chars characters are read (the lengths are of the whole text)
    long = text + " zzz" * 1000
    g = dict(zip(TEXT_FEATURES, text_features(long, TeacherTokens(20, (5, 5, 99, 0)), max_chars=len(text))))
    assert {k: v for k, v in g.items() if not k.startswith("log_")} == \
        {k: v for k, v in f.items() if not k.startswith("log_")}
