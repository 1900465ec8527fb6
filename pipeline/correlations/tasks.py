"""Multiple-choice tasks scored the way lm-evaluation-harness scores them, and a cloze task built from
held-out text so that benchmark errors can be measured offline.

An item is (context, choices, gold). A model scores each choice by the sum of the log-probabilities of
the choice's tokens given the context (the context's own tokens are not scored); `acc` picks the
choice with the largest sum, `acc_norm` the largest sum per UTF-8 byte of the choice. Choices carry
their leading space. Error = 1 - accuracy.

The cloze task: a passage of the target set is cut at a sentence boundary; the true next sentence is
the gold choice, and sentences of about its length taken from other passages are the distractors
(seeded). A model that has learnt the target's kind of text tells them apart.
"""
from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A sentence ends at . ! or ? (and closing quotes) followed by whitespace and a capital or a digit.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(])")


@dataclass(frozen=True)
class TaskItem:
    context: str
    choices: tuple[str, ...]
    gold: int

    def __post_init__(self) -> None:
        if len(self.choices) < 2:
            raise ValueError(f"an item needs at least 2 choices, got {len(self.choices)}")
        if not 0 <= self.gold < len(self.choices):
            raise ValueError(f"gold {self.gold} is not the index of one of the {len(self.choices)} choices")


def read_task(path: str | Path) -> list[TaskItem]:
    """A JSONL task file: one {"context": str, "choices": [str, ...], "gold": int} per line."""
    items = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            items.append(TaskItem(str(row["context"]), tuple(str(c) for c in row["choices"]), int(row["gold"])))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{number}: not a task item ({type(e).__name__}: {e}); expected "
                             '{"context": ..., "choices": [...], "gold": <index>}') from None
    if not items:
        raise ValueError(f"{path}: no task items")
    return items


def write_task(items: list[TaskItem], path: str | Path) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps({"context": i.context, "choices": list(i.choices), "gold": i.gold}) + "\n"
                            for i in items), encoding="utf-8")
    return path


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def cloze_task(passages: list[str], n_items: int, n_choices: int = 4, seed: int = 0,
               min_context_chars: int = 150) -> list[TaskItem]:
    """Up to `n_items` cloze items from `passages` (each used at most once as a context): the context
    is a passage's sentences up to a boundary after at least `min_context_chars` characters, the gold
    choice the next sentence, the distractors the sentences of other passages closest to it in length."""
    rng = random.Random(seed)
    split = [sentences(p) for p in passages]
    pool = [(len(s), i, s) for i, ss in enumerate(split) for s in ss if len(s) >= 10]
    pool.sort()
    lengths = np.array([n for n, _, _ in pool])
    items = []
    for i in rng.sample(range(len(passages)), len(passages)):
        if len(items) == n_items:
            break
        ss = split[i]
        cut = next((k for k in range(1, len(ss)) if len(" ".join(ss[:k])) >= min_context_chars), None)
        if cut is None or len(ss[cut]) < 10:
            continue
        gold_text = ss[cut]
        near = np.argsort(np.abs(lengths - len(gold_text)), kind="stable")
        others = [pool[j][2] for j in near[: 8 * n_choices] if pool[j][1] != i and pool[j][2] != gold_text]
        if len(set(others)) < n_choices - 1:
            continue
        distractors = rng.sample(sorted(set(others)), n_choices - 1)
        gold = rng.randrange(n_choices)
        choices = distractors[:gold] + [gold_text] + distractors[gold:]
        items.append(TaskItem(" ".join(ss[:cut]), tuple(" " + c for c in choices), gold))
    if not items:
        raise ValueError(f"no cloze item could be built from {len(passages)} passage(s): they need at least two "
                         f"sentences with {min_context_chars}+ characters before the second")
    return items


def accuracy(items: list[TaskItem], choice_logprobs: list[list[float]]) -> dict[str, float]:
    """acc and acc_norm (and their errors) from each choice's summed log-probability given its context;
    ties go to the first choice, as numpy's argmax does. bits_per_byte is the gold choices' NLL over
    their UTF-8 bytes (as lm-evaluation-harness reports for perplexity tasks): a model's fit to the
    task's text that does not need it to beat the distractors."""
    if len(items) != len(choice_logprobs):
        raise ValueError(f"{len(items)} items but {len(choice_logprobs)} score lists")
    hits, hits_norm, gold_nll, gold_bytes = 0, 0, 0.0, 0
    for item, scores in zip(items, choice_logprobs):
        scores = np.asarray(scores, dtype=np.float64)
        if len(scores) != len(item.choices):
            raise ValueError(f"an item has {len(item.choices)} choices but {len(scores)} scores")
        n_bytes = np.array([max(len(c.encode("utf-8")), 1) for c in item.choices])
        hits += int(np.argmax(scores) == item.gold)
        hits_norm += int(np.argmax(scores / n_bytes) == item.gold)
        gold_nll -= scores[item.gold]
        gold_bytes += int(n_bytes[item.gold])
    acc, acc_norm = hits / len(items), hits_norm / len(items)
    return {"acc": acc, "acc_norm": acc_norm, "error": 1 - acc, "error_norm": 1 - acc_norm,
            "bits_per_byte": gold_nll / (math.log(2) * gold_bytes), "items": len(items)}
