"""The page-level selector (Thrush et al., 2025): pages of domains the projection gives weight are
`include`, the rest `exclude`; a supervised fastText classifier on the page text (newlines replaced by
spaces, word bigrams) learns the difference on 95% of the pages and is measured on the other 5%, then
scores every page of the store with P(include). Selection keeps pages in descending score until a
token budget or keep fraction is met.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np

from pipeline.hashing import seeded_uniforms

LABELS = ("__label__include", "__label__exclude")


def clean(text: str) -> str:
    """One line of text, as fastText reads a training example: newlines and tabs become spaces."""
    return " ".join(text.split())


@dataclass(frozen=True)
class SelectorSettings:
    epochs: int = 10
    lr: float = 0.5           # fastText's 0.1 barely moves on a few hundred pages
    word_ngrams: int = 2
    dim: int = 32
    bucket: int = 200_000     # hashed word-bigram rows; fastText's 2M default makes a 0.5 GB model at dim 64
    min_count: int = 1
    heldout_fraction: float = 0.05
    seed: int = 0


def heldout_mask(doc_ids: list[str], fraction: float, seed: int) -> np.ndarray:
    """A seeded, order-independent held-out share of the pages."""
    return seeded_uniforms(list(doc_ids), f"selector-heldout:{seed}") < fraction


def train(doc_ids: list[str], texts: list[str], include: np.ndarray, settings: SelectorSettings = SelectorSettings()):
    """Train on the pages outside the held-out share; returns (model, metrics on the held-out pages:
    precision, recall and F1 of `include`, accuracy, counts)."""
    import fasttext
    fasttext.FastText.eprint = lambda *a, **k: None
    include = np.asarray(include, dtype=bool)
    if include.all() or not include.any():
        raise ValueError("the selector needs pages of both labels: the projection gave every domain "
                         f"{'weight' if include.all() else 'no weight'}")
    held = heldout_mask(doc_ids, settings.heldout_fraction, settings.seed)
    if held.all():
        raise ValueError("every page is held out: lower heldout_fraction")
    with tempfile.TemporaryDirectory(prefix="curate-selector-") as tmp:
        path = os.path.join(tmp, "train.txt")
        with open(path, "w", encoding="utf-8") as f:
            for text, label in zip(np.asarray(texts, dtype=object)[~held], include[~held]):
                f.write(f"{LABELS[0] if label else LABELS[1]} {clean(text)}\n")
        lr = settings.lr
        while True:   # a large rate can diverge on some data: halve it until training stays finite
            error = _fit_in_child(path, os.path.join(tmp, "model.bin"), dict(
                epoch=settings.epochs, lr=lr, wordNgrams=settings.word_ngrams, dim=settings.dim,
                bucket=settings.bucket, minCount=settings.min_count, seed=settings.seed, thread=1, verbose=0))
            if error is None:
                break
            if "NaN" not in error or lr < 1e-3:
                raise RuntimeError(f"fastText training failed: {error}")
            lr /= 2
        model = fasttext.load_model(os.path.join(tmp, "model.bin"))
    metrics = {"train_pages": int((~held).sum()), "heldout_pages": int(held.sum()), "lr": lr}
    if held.any():
        predicted = predict_include(model, [t for t, h in zip(texts, held) if h]) >= 0.5
        metrics.update(binary_metrics(include[held], predicted))
    return model, metrics


# fastText's training is run in a process of its own: once a training diverges ("Encountered NaN"),
# every later training in the same process diverges or returns a model of garbage, even at a small rate.
_FIT = """
import json, sys
import fasttext
path, out, kwargs = json.loads(sys.argv[1])
try:
    fasttext.train_supervised(path, **kwargs).save_model(out)
except RuntimeError as e:
    print(e, file=sys.stderr)
    sys.exit(3)
"""


def _fit_in_child(path: str, out: str, kwargs: dict) -> str | None:
    """Train in a fresh Python process and save the model to `out`; the error's text, or None."""
    done = subprocess.run([sys.executable, "-c", _FIT, json.dumps([path, out, kwargs])],
                          capture_output=True, text=True)
    if done.returncode == 0:
        return None
    return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}"


def predict_include(model, texts: list[str]) -> np.ndarray:
    """P(include) of each text."""
    if not texts:
        return np.array([], dtype=np.float64)
    labels, probs = model.predict([clean(t) for t in texts], k=2)
    return np.array([dict(zip(ls, ps)).get(LABELS[0], 0.0) for ls, ps in zip(labels, probs)], dtype=np.float64)


def binary_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict:
    truth, predicted = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    tp = int((truth & predicted).sum())
    precision = tp / predicted.sum() if predicted.any() else float("nan")
    recall = tp / truth.sum() if truth.any() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1),
            "accuracy": float((truth == predicted).mean())}
