"""The student as a scoring engine: the score stage, `curate score --model <student dir>` and the
service run it like any model, and its rows are the teacher's rows as the student estimates them.

A row has the teacher's token accounting (its tokenizer, window and scored bytes, from
`pipeline.scoring.core`) and the student's prediction of the teacher's target: nll_mean (or
bits_per_byte), with perplexity, nll_sum and bits_per_byte derived from it as a language model's
would be. Token-level columns (nll_p50, nll_p90, surprise_fraction) have no estimate: null.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline.distill.model import STUDENT_FILE, student_identity
from pipeline.distill.student import Student, TeacherTokens
from pipeline.scoring import core


class StudentEngine:
    def __init__(self, model_dir: str | Path):
        self.model_dir = Path(model_dir)
        self.identity = student_identity(model_dir)
        self.target = self.identity.distilled["target"]
        self.student = Student.from_bytes((self.model_dir / STUDENT_FILE).read_bytes())
        self.tokenizer = core.load_tokenizer(self.model_dir)

    def score(self, docs: list[tuple[str, str]]) -> list[dict]:
        texts = [core.truncate_text(text, self.identity) for _, text in docs]
        encoded = [core.encode(self.tokenizer, text) for text in texts]
        predicted = self.student.predict(texts, [teacher_tokens(e, self.student.settings.max_chars,
                                                                self.identity.max_tokens) for e in encoded])
        rows = []
        for (doc_id, _), text, enc, value in zip(docs, texts, encoded, predicted):
            plan = core.plan_windows(len(enc.ids), self.identity.max_tokens)
            n_bytes = core.scored_bytes(text, enc, plan)
            if not plan:
                rows.append(core.error_row(doc_id, self.identity, enc.n_tokens, n_bytes,
                                           f"too_short: {enc.n_tokens} token(s)"))
                continue
            rows.append(student_row(doc_id, self.identity, float(value), self.target, enc.n_tokens,
                                    sum(end - first for _, end, first in plan), n_bytes))
        return rows


def teacher_tokens(encoded: core.EncodedDoc, max_chars: int, max_tokens: int) -> TeacherTokens:
    return TeacherTokens.of(encoded.ids, encoded.char_ends, encoded.has_bos, max_chars, max_tokens)


def student_row(doc_id: str, identity, value: float, target: str, n_tokens: int, n_predicted: int,
                n_bytes: int) -> dict:
    """A SCORES row from a predicted nll_mean or bits_per_byte, the other columns derived from it
    (nll_sum = nll_mean * n_predicted = bits_per_byte * ln 2 * n_bytes)."""
    nll_sum = value * n_predicted if target == "nll_mean" else value * math.log(2) * n_bytes
    nll_mean = nll_sum / n_predicted
    with np.errstate(over="ignore"):
        perplexity = float(np.exp(nll_mean))
    return {**core.error_row(doc_id, identity, n_tokens, n_bytes, ""), "n_predicted": int(n_predicted),
            "nll_sum": nll_sum, "nll_mean": nll_mean, "perplexity": perplexity,
            "bits_per_byte": nll_sum / (math.log(2) * n_bytes) if n_bytes > 0 else None, "error": None}
