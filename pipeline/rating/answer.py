"""What a DataMan rater answers and how it is read (Peng et al., 2025).

The answer is the domain letter (A-O) and then the 14 scores (integers 1-5), one per line: 15 lines,
the Overall Score last (a holistic rating, not the mean of the other 13). `parse_answer` is strict: a
line too many or too few, a letter outside A-O or a score outside 1-5 is an error that says which, and
the row keeps it (nothing is dropped silently). `expected_scores` turns the probabilities of the
tokens "1".."5" at each score slot into expected scores: smoother than the greedy answer, and tie-free.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CRITERIA = ("Accuracy", "Coherence", "Language Consistency", "Semantic Density", "Knowledge Novelty",
            "Topic Focus", "Creativity", "Professionalism", "Style Consistency", "Grammatical Diversity",
            "Structural Standardization", "Originality", "Sensitivity", "Overall Score")
DOMAINS = {"A": "Medicine", "B": "Finance", "C": "Law", "D": "Education", "E": "Technology",
           "F": "Entertainment", "G": "Mathematics", "H": "Coding", "I": "Government", "J": "Culture",
           "K": "Transportation", "L": "Retail E-commerce", "M": "Telecommunication", "N": "Agriculture",
           "O": "Other"}
SCORES = ("1", "2", "3", "4", "5")


@dataclass(frozen=True)
class Answer:
    domain: str | None            # a letter of DOMAINS
    scores: tuple[int, ...] | None  # 14 integers 1-5, in CRITERIA order
    error: str | None             # why the answer could not be read; None when it parsed

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_answer(text: str) -> Answer:
    """The domain letter and the 14 scores of a rater's answer, one per non-empty line."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    expected = 1 + len(CRITERIA)
    if len(lines) != expected:
        return Answer(None, None, f"expected {expected} lines (a domain letter, then {len(CRITERIA)} scores), "
                                  f"got {len(lines)}")
    domain, *scores = lines
    if domain not in DOMAINS:
        return Answer(None, None, f"domain {domain[:20]!r} is not a letter A-O")
    bad = [(CRITERIA[i], s) for i, s in enumerate(scores) if s not in SCORES]
    if bad:
        name, value = bad[0]
        return Answer(domain, None, f"{name}: {value[:20]!r} is not an integer 1-5"
                                    f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}")
    return Answer(domain, tuple(int(s) for s in scores), None)


def answer_text(domain: str, scores) -> str:
    """The answer a rater gives for this domain and these scores (what parse_answer reads)."""
    return "\n".join([domain, *(str(int(s)) for s in scores)])


def expected_scores(probabilities) -> np.ndarray:
    """sum_s s * p(s) / sum_s p(s) per slot, from the probabilities (or any non-negative weights) of
    the tokens "1".."5" at each score slot: an (n_slots x 5) array -> n_slots expected scores."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(SCORES) or np.any(p < 0) or np.any(p.sum(axis=1) <= 0):
        raise ValueError(f"expected an (n x 5) array of non-negative weights with positive rows, got shape {p.shape}")
    return (p / p.sum(axis=1, keepdims=True)) @ np.arange(1, len(SCORES) + 1)
