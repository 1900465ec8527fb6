"""Distilled scoring's pure core: a cheap student that predicts a strong teacher's per-document target
(log-perplexity, bits per byte, or a rating) from hashed n-grams, the sample it learns from, and how
well it agrees with its teacher.

    sample   stratified_sample: a seeded share of every group (host, domain), at least a few per group
    features hashed word 1-2-grams + char_wb 2-4-grams of the first `max_chars` characters (each set
             l2-normalised, 2^18 columns; no vocabulary, so any document maps to the same columns in
             any process), and TEXT_FEATURES: shape, repetition and surface statistics, and how the
             teacher's tokenizer cuts the text
    student  a ridge regression on the n-grams, stacked under a ridge regression on the text
             features and the n-gram prediction (the target standardised first)
    agreement Spearman correlation, and the share of documents on the same side of a band's edges
             (Ankner et al.'s low/medium/high at a rate), on held-out folds

No Spark, store or model here: the stage feeds texts and targets in and writes what comes out.
"""
from __future__ import annotations

import io
import json
import zlib
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.hashing import seeded_keys
from pipeline.selection.rules import band_percentiles, in_range, percentile_bounds


@dataclass(frozen=True)
class StudentSettings:
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 4)
    hash_bits: int = 18          # columns per n-gram kind: 2^hash_bits
    max_chars: int = 2000        # characters the features see: character n-grams are the cost to bound
    alpha: float = 1.0           # ridge penalty of the n-gram model
    stack_alpha: float = 3.0     # ridge penalty of the model over text features + the n-gram prediction
    inner_folds: int = 5         # folds of the n-gram model's out-of-fold predictions

    def as_dict(self) -> dict:
        """The settings and the text features' names: what the student's features are."""
        return {**asdict(self), "text_features": list(TEXT_FEATURES)}


def stratified_sample(doc_ids: np.ndarray, groups: np.ndarray, fraction: float, seed: int,
                      min_per_group: int = 5) -> np.ndarray:
    """Indexes of a seeded sample with `fraction` of every group (rounded up, at least `min_per_group`,
    at most the group): in each group, the documents with the smallest `seeded_keys`. A document's
    place in the sample depends on the seed and its id alone, so the sample is the same in any order."""
    if not 0 < fraction <= 1:
        raise ValueError(f"sample fraction must be in (0, 1], got {fraction}")
    if len(doc_ids) == 0:
        return np.array([], dtype=np.int64)
    keys = seeded_keys(list(doc_ids), f"sample:{seed}")
    _, group = np.unique(np.array([str(g) for g in groups]), return_inverse=True)  # None is a group too
    order = np.lexsort((keys, group))            # by group, then by key
    sizes = np.bincount(group)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    takes = np.minimum(sizes, np.maximum(min_per_group, np.ceil(fraction * sizes).astype(np.int64)))
    chosen = [order[start:start + take] for start, take in zip(starts, takes)]
    return np.sort(np.concatenate(chosen))


# -- features -----------------------------------------------------------------------------------------
def ngram_features(texts: list[str], settings: StudentSettings):
    """Sparse hashed word and character (char_wb) n-grams of each text's first max_chars characters,
    each kind l2-normalised: what a text is about and how it is written."""
    from scipy import sparse
    from sklearn.feature_extraction.text import HashingVectorizer
    heads = [t[: settings.max_chars] for t in texts]
    word = HashingVectorizer(analyzer="word", ngram_range=settings.word_ngrams, n_features=2 ** settings.hash_bits,
                             alternate_sign=False, norm="l2", lowercase=True)
    char = HashingVectorizer(analyzer="char_wb", ngram_range=settings.char_ngrams,
                             n_features=2 ** settings.hash_bits, alternate_sign=False, norm="l2", lowercase=False)
    return sparse.hstack([word.transform(heads), char.transform(heads)]).tocsr()


TEXT_FEATURES = ("log_chars", "log_words", "distinct_words", "compression", "duplicate_lines", "log_words_per_line",
                 "short_lines", "alpha", "digit", "upper", "punct", "title_words", "sentence_ends", "mean_word_len",
                 "separators", "capital_mid_sentence", "lower_after_stop", "chars_per_token", "tokens_per_word",
                 "window_log_token_id", "window_log_token_id_std", "window_distinct_tokens")


@dataclass(frozen=True)
class TeacherTokens:
    """How the teacher's tokenizer cuts a text: its tokens in the first max_chars characters, and the
    ids of the tokens the teacher reads (its window, BOS excluded)."""
    head: int
    window: tuple[int, ...]

    @classmethod
    def of(cls, ids: list[int], char_ends: list[int], has_bos: bool, max_chars: int,
           max_tokens: int) -> "TeacherTokens":
        """From an encoding (pipeline.scoring.core.EncodedDoc's fields)."""
        from bisect import bisect_right
        first = int(has_bos)
        return cls(bisect_right(char_ends, max_chars), tuple(ids[first:max_tokens]))   # positions < max_tokens


def text_features(text: str, tokens: TeacherTokens, max_chars: int) -> list[float]:
    """TEXT_FEATURES of one text: shape, repetition and surface statistics of its first max_chars
    characters (lengths of the whole), and how the teacher's tokenizer cuts it. They carry what degrades
    a text whatever its source: repeated lines compress well, shuffled words break sentences, noise
    breaks words into more and rarer tokens (a byte-level BPE numbers its merges by frequency, so a
    token id's log is a rough surprisal), repetition leaves few distinct tokens in the teacher's window."""
    head = text[:max_chars]
    words = head.split()
    n_words, n_chars = max(len(words), 1), max(len(head), 1)
    lines = [line for line in head.splitlines() if line.strip()]
    n_lines = max(len(lines), 1)
    raw = head.encode("utf-8")
    pairs = list(zip(words, words[1:]))
    return [
        np.log1p(len(text)), np.log1p(len(text.split())),
        len({w.lower() for w in words}) / n_words,
        len(zlib.compress(raw, 6)) / max(len(raw), 1),
        1 - len(set(lines)) / n_lines,
        np.log1p(n_words / n_lines),
        sum(len(line.split()) < 4 for line in lines) / n_lines,
        sum(c.isalpha() for c in head) / n_chars,
        sum(c.isdigit() for c in head) / n_chars,
        sum(c.isupper() for c in head) / n_chars,
        sum(not c.isalnum() and not c.isspace() for c in head) / n_chars,
        sum(w[:1].isupper() for w in words) / n_words,
        sum(w[-1:] in ".!?" for w in words) / n_words,
        sum(map(len, words)) / n_words,
        sum(not any(c.isalnum() for c in w) for w in words) / n_words,
        sum(b[:1].isupper() and a[-1:] not in '.!?:"' for a, b in pairs) / n_words,
        sum(a[-1:] in ".!?" and b[:1].islower() for a, b in pairs) / n_words,
        n_chars / max(tokens.head, 1),
        tokens.head / n_words,
        *_window_features(tokens.window),
    ]


def _window_features(ids: tuple[int, ...]) -> tuple[float, float, float]:
    if not ids:
        return 0.0, 0.0, 0.0
    logs = np.log1p(np.asarray(ids, dtype=np.float64))
    return float(logs.mean()), float(logs.std()), len(set(ids)) / len(ids)


def text_feature_matrix(texts: list[str], tokens: list[TeacherTokens], settings: StudentSettings) -> np.ndarray:
    if len(texts) != len(tokens):
        raise ValueError(f"{len(texts)} texts but {len(tokens)} token views")
    return np.array([text_features(t, k, settings.max_chars) for t, k in zip(texts, tokens)],
                    dtype=np.float64).reshape(len(texts), len(TEXT_FEATURES))


# -- the student ----------------------------------------------------------------------------------
def _ridge(x, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import Ridge
    model = Ridge(alpha=alpha).fit(x, y)
    return np.asarray(model.coef_, dtype=np.float64), float(model.intercept_)


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold of each of n items: a seeded permutation dealt round-robin (sizes differ by at most one)."""
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return fold


class Student:
    """Two ridge regressions, stacked, predicting a standardised target (`predict` gives its units):

        ngram   = hashed n-grams . a + b                      (what the text is and how it is written)
        z       = standardised TEXT_FEATURES . c + d * ngram + e

    The second is fitted on the n-gram model's out-of-fold predictions (inner_folds), so it learns
    how far to trust them on documents the n-gram model has not seen. All linear: the coefficients
    are the whole model, saved as arrays."""

    def __init__(self, settings: StudentSettings, arrays: dict[str, np.ndarray], mean: float, std: float):
        self.settings, self.arrays, self.mean, self.std = settings, arrays, mean, std
        self._ngram_coef = arrays["ngram_coef"].astype(np.float64)   # once, not on every predict call

    @classmethod
    def fit(cls, texts: list[str], tokens: list[TeacherTokens], targets: np.ndarray,
            settings: StudentSettings = StudentSettings()) -> "Student":
        y = np.asarray(targets, dtype=np.float64)
        if len(y) < max(2, settings.inner_folds) or not np.all(np.isfinite(y)):
            raise ValueError(f"a student needs at least {max(2, settings.inner_folds)} finite targets, got {len(y)}")
        mean, std = float(y.mean()), float(y.std()) or 1.0
        z = (y - mean) / std
        grams = ngram_features(texts, settings)
        ngram_coef, ngram_intercept = _ridge(grams, z, settings.alpha)
        out_of_fold = np.empty(len(z))
        fold = fold_ids(len(z), settings.inner_folds, seed=0)
        for k in range(settings.inner_folds):
            train, test = fold != k, fold == k
            coef, intercept = _ridge(grams[train], z[train], settings.alpha)
            out_of_fold[test] = grams[test] @ coef + intercept
        dense = text_feature_matrix(texts, tokens, settings)
        center, scale = dense.mean(axis=0), dense.std(axis=0)
        scale[scale == 0] = 1.0
        coef, intercept = _ridge(np.c_[(dense - center) / scale, out_of_fold], z, settings.stack_alpha)
        arrays = {"ngram_coef": ngram_coef.astype(np.float32), "ngram_intercept": np.array(ngram_intercept),
                  "center": center, "scale": scale, "coef": coef, "intercept": np.array(intercept)}
        return cls(settings, arrays, mean, std)

    def predict(self, texts: list[str], tokens: list[TeacherTokens]) -> np.ndarray:
        if not texts:
            return np.array([], dtype=np.float64)
        a = self.arrays
        ngram = ngram_features(texts, self.settings) @ self._ngram_coef + float(a["ngram_intercept"])
        dense = (text_feature_matrix(texts, tokens, self.settings) - a["center"]) / a["scale"]
        z = np.c_[dense, ngram] @ a["coef"] + float(a["intercept"])
        return self.mean + self.std * np.asarray(z, dtype=np.float64)

    # -- saving: one .npz of the arrays, with the settings as JSON inside -----------------------------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        meta = {"settings": asdict(self.settings), "mean": self.mean, "std": self.std,
                "text_features": list(TEXT_FEATURES)}
        np.savez_compressed(buf, **self.arrays, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Student":
        data = np.load(io.BytesIO(blob))
        meta = json.loads(data["meta"].tobytes())
        if meta.get("text_features") != list(TEXT_FEATURES):
            raise ValueError("this student was fitted with other text features: run `curate distill` again")
        settings = StudentSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["settings"].items()})
        return cls(settings, {k: data[k] for k in data.files if k != "meta"}, meta["mean"], meta["std"])


# -- agreement ----------------------------------------------------------------------------------------
def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their average rank (as Spearman's correlation needs)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    out = np.empty(len(values))
    start = 0
    for stop in np.append(np.flatnonzero(np.diff(sorted_values)) + 1, len(values)):
        out[order[start:stop]] = (start + stop + 1) / 2
        start = stop
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's correlation of the (tie-averaged) ranks."""
    ra, rb = ranks(a), ranks(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def band_agreement(teacher: np.ndarray, student: np.ndarray, criterion: str, rate: float) -> float:
    """Share of documents the band (criterion at rate, each score's own percentiles) keeps under both
    scores or drops under both."""
    lower, upper = band_percentiles(criterion, rate)
    keep_t = in_range(teacher, *percentile_bounds(teacher, lower, upper))
    keep_s = in_range(student, *percentile_bounds(student, lower, upper))
    return float(np.mean(keep_t == keep_s))


def cross_validate(texts: list[str], tokens: list[TeacherTokens], targets: np.ndarray,
                   settings: StudentSettings = StudentSettings(), folds: int = 5, seed: int = 0,
                   rate: float = 0.5) -> dict:
    """Out-of-fold predictions of a student fitted on the other folds (folds drawn by a seeded
    permutation), their Spearman correlation with the teacher and band agreement at `rate`."""
    y = np.asarray(targets, dtype=np.float64)
    n = len(y)
    if n < 2 * folds:
        raise ValueError(f"{folds}-fold agreement needs at least {2 * folds} documents, got {n}")
    fold = fold_ids(n, folds, seed)
    predicted = np.empty(n)
    for k in range(folds):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        student = Student.fit([texts[i] for i in train], [tokens[i] for i in train], y[train], settings)
        predicted[test] = student.predict([texts[i] for i in test], [tokens[i] for i in test])
    return {"predicted": predicted, "spearman": spearman(y, predicted), "folds": folds,
            "band_agreement": {c: band_agreement(y, predicted, c, rate) for c in ("low", "medium", "high")},
            "rate": rate}
