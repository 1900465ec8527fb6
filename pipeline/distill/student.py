"""Distilled scoring's pure core: a cheap student that predicts a strong teacher's per-document target
(log-perplexity, bits per byte, or a rating) from hashed n-grams, the sample it learns from, and how
well it agrees with its teacher (../shared/specs/distillation.md).

    sample   stratified_sample: a seeded share of every group (host, domain), at least a few per group
    features hashed word 1-2-grams + char_wb 2-4-grams of the first `max_chars` characters (each set
             l2-normalised, 2^18 columns) + a few length features; no vocabulary, so any document maps
             to the same columns in any process
    student  ridge regression on those features (the target standardised first)
    agreement Spearman correlation, and the share of documents on the same side of a band's edges
             (Ankner et al.'s low/medium/high at a rate), on held-out folds

No Spark, store or model here: the stage feeds texts and targets in and writes what comes out.
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.hashing import seeded_keys, short_digest
from pipeline.selection.rules import band_percentiles, in_range, percentile_bounds


@dataclass(frozen=True)
class StudentSettings:
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 4)
    hash_bits: int = 18          # columns per feature set: 2^hash_bits
    max_chars: int = 2000        # characters the n-grams see: character n-grams are the cost to bound
    alpha: float = 1.0           # ridge penalty

    @property
    def key(self) -> str:
        return short_digest(asdict(self))


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


def featurize(texts: list[str], settings: StudentSettings):
    """Sparse features: hashed word and character n-grams of each text's first max_chars characters, and
    log character count, log word count and distinct-word share (of the whole text)."""
    from scipy import sparse
    from sklearn.feature_extraction.text import HashingVectorizer
    heads = [t[: settings.max_chars] for t in texts]
    word = HashingVectorizer(analyzer="word", ngram_range=settings.word_ngrams, n_features=2 ** settings.hash_bits,
                             alternate_sign=False, norm="l2", lowercase=True)
    char = HashingVectorizer(analyzer="char_wb", ngram_range=settings.char_ngrams,
                             n_features=2 ** settings.hash_bits, alternate_sign=False, norm="l2", lowercase=False)
    lengths = np.array([_length_features(t) for t in texts], dtype=np.float64).reshape(len(texts), 3)
    return sparse.hstack([word.transform(heads), char.transform(heads), sparse.csr_matrix(lengths)]).tocsr()


def _length_features(text: str) -> tuple[float, float, float]:
    words = text.split()
    return np.log1p(len(text)) / 10, np.log1p(len(words)) / 10, len(set(words)) / max(len(words), 1)


class Student:
    """Ridge regression from `featurize` to a standardised target; `predict` gives the target's units."""

    def __init__(self, settings: StudentSettings, coef: np.ndarray, intercept: float, mean: float, std: float):
        self.settings, self.coef, self.intercept, self.mean, self.std = settings, coef, intercept, mean, std

    @classmethod
    def fit(cls, texts: list[str], targets: np.ndarray, settings: StudentSettings = StudentSettings()) -> "Student":
        from sklearn.linear_model import Ridge
        y = np.asarray(targets, dtype=np.float64)
        if len(y) < 2 or not np.all(np.isfinite(y)):
            raise ValueError(f"a student needs at least 2 finite targets, got {len(y)}")
        mean, std = float(y.mean()), float(y.std()) or 1.0
        model = Ridge(alpha=settings.alpha, solver="auto").fit(featurize(texts, settings), (y - mean) / std)
        return cls(settings, model.coef_.astype(np.float32), float(model.intercept_), mean, std)

    def predict(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.array([], dtype=np.float64)
        z = featurize(texts, self.settings) @ self.coef.astype(np.float64) + self.intercept
        return self.mean + self.std * np.asarray(z, dtype=np.float64)

    # -- saving: one .npz (coefficients) with the settings as JSON inside ------------------------------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        meta = {"settings": asdict(self.settings), "intercept": self.intercept, "mean": self.mean, "std": self.std}
        np.savez_compressed(buf, coef=self.coef, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Student":
        data = np.load(io.BytesIO(blob))
        meta = json.loads(data["meta"].tobytes())
        settings = StudentSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["settings"].items()})
        return cls(settings, data["coef"], meta["intercept"], meta["mean"], meta["std"])


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


def cross_validate(texts: list[str], targets: np.ndarray, settings: StudentSettings = StudentSettings(),
                   folds: int = 5, seed: int = 0, rate: float = 0.5) -> dict:
    """Out-of-fold predictions of a student fitted on the other folds (folds drawn by a seeded
    permutation), their Spearman correlation with the teacher and band agreement at `rate`."""
    y = np.asarray(targets, dtype=np.float64)
    n = len(y)
    if n < 2 * folds:
        raise ValueError(f"{folds}-fold agreement needs at least {2 * folds} documents, got {n}")
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    predicted = np.empty(n)
    for k in range(folds):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        student = Student.fit([texts[i] for i in train], y[train], settings)
        predicted[test] = student.predict([texts[i] for i in test])
    return {"predicted": predicted, "spearman": spearman(y, predicted), "folds": folds,
            "band_agreement": {c: band_agreement(y, predicted, c, rate) for c in ("low", "medium", "high")},
            "rate": rate}
