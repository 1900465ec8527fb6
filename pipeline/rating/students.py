"""Students of an LLM rater: one cheap model per rating of interest (pipeline.distill.student's stacked
ridge on hashed n-grams and text features), fitted to the rater's expected scores on a sample, rating
every document at ingest-like speed as a rater of its own (backend `student`).

A students' directory holds `<rating>.npz` per rating, the rater's tokenizer (the text features count
tokens as the rater does) and its card, curate_model.json (kind `rating_student`), from which the
rater identity is read without loading anything.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pipeline.distill.engine import teacher_tokens
from pipeline.distill.model import CARD, copy_tokenizer, replace_dir
from pipeline.distill.student import Student, StudentSettings, fold_ids, spearman
from pipeline.hashing import file_sha256
from pipeline.rating.rater import RaterIdentity, rating_row
from pipeline.scoring import core
from pipeline.store import code_version
from schemas import sidecars

KIND = "rating_student"


def is_rating_student(model_dir: str | Path) -> bool:
    card = Path(model_dir) / CARD
    return card.is_file() and json.loads(card.read_text()).get("kind") == KIND


def read_card(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / CARD).read_text())


def student_identity(card: dict) -> RaterIdentity:
    rater = card["rater"]
    return RaterIdentity(model_name=card["name"], weights_sha256=card["weights_sha256"], tokenizer=rater["tokenizer"],
                         backend="student", dtype=None, decoding="student", prompt_sha256=rater["prompt_sha256"],
                         text_tokens=rater["text_tokens"], code_version=code_version(),
                         distilled={"rater": rater["rater_id"], "rater_model": rater["model_name"],
                                    "targets": card["targets"], "sample": card["sample"], "features": card["features"]})


def tokens_of(tokenizer, texts: list[str], text_tokens: int, settings: StudentSettings):
    """The rater-tokenizer features of each text (its first `text_tokens` tokens)."""
    encoded = [core.encode(tokenizer, text[:text_tokens * core.CHARS_PER_TOKEN]) for text in texts]
    return [teacher_tokens(e, settings.max_chars, text_tokens + int(e.has_bos)) for e in encoded]


def agreement(texts, tokens, expected: np.ndarray, scores: np.ndarray, settings: StudentSettings, folds: int,
              seed: int) -> dict:
    """Out-of-fold agreement of a student with the rater: Spearman with its expected scores, and the share
    of documents whose rounded prediction equals the rater's integer score (accuracy) or is within one."""
    n = len(expected)
    if n < 2 * folds:
        raise ValueError(f"{folds}-fold agreement needs at least {2 * folds} rated documents, got {n}")
    fold, predicted = fold_ids(n, folds, seed), np.empty(n)
    for k in range(folds):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        student = Student.fit([texts[i] for i in train], [tokens[i] for i in train], expected[train], settings)
        predicted[test] = student.predict([texts[i] for i in test], [tokens[i] for i in test])
    rounded = np.clip(np.rint(predicted), 1, 5)
    constant = np.clip(np.rint(expected.mean()), 1, 5)   # the baseline: always the rater's mean
    return {"spearman": spearman(expected, predicted), "accuracy": float(np.mean(rounded == scores)),
            "within_one": float(np.mean(np.abs(rounded - scores) <= 1)),
            "constant_accuracy": float(np.mean(constant == scores)), "folds": folds, "n_docs": int(n),
            "rater_mean": float(expected.mean()), "rater_std": float(expected.std())}


def write_students(out: Path, students: dict[str, Student], rater_dir: Path, card: dict) -> Path:
    """The students, the rater's tokenizer and the card (schemas.sidecars.RATING_STUDENT), swapped in whole."""
    def fill(tmp: Path) -> None:
        digest = hashlib.sha256()
        for name, student in sorted(students.items()):
            (tmp / f"{name}.npz").write_bytes(student.to_bytes())
            digest.update(f"{name} {file_sha256(tmp / f'{name}.npz')}\n".encode())
        copy_tokenizer(rater_dir, tmp)
        checked = sidecars.RATING_STUDENT.validate({**card, "kind": KIND, "weights_sha256": digest.hexdigest()})
        (tmp / CARD).write_text(json.dumps(checked, indent=2) + "\n")
    return replace_dir(out, fill)


class StudentRater:
    """Rows of RATINGS for every document: each student's rating (expected = the prediction clipped to
    1-5, the score its rounding); the other ratings and the domain null; `parsed` true."""

    def __init__(self, model_dir: str | Path):
        self.model_dir = Path(model_dir)
        card = read_card(model_dir)
        self.identity = student_identity(card)
        self.students = {name: Student.from_bytes((self.model_dir / f"{name}.npz").read_bytes())
                         for name in card["targets"]}
        self.tokenizer = core.load_tokenizer(self.model_dir)

    def rate(self, docs: list[tuple[str, str]]) -> list[dict]:
        texts = [text for _, text in docs]
        settings = next(iter(self.students.values())).settings
        tokens = tokens_of(self.tokenizer, texts, self.identity.text_tokens, settings)
        predicted = {name: np.clip(s.predict(texts, tokens), 1.0, 5.0) for name, s in self.students.items()}
        rows = []
        for k, ((doc_id, _), tok) in enumerate(zip(docs, tokens)):
            row = rating_row(doc_id, self.identity, None, error="")
            row.update(parsed=True, error=None, n_text_tokens=len(tok.window))
            for name, values in predicted.items():
                row[name], row[f"{name}_expected"] = int(np.rint(values[k])), float(values[k])
            rows.append(row)
        return rows

