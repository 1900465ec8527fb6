"""The rater's prompt and the slots of its answer (Peng et al., 2025).

The prompt asks for the fourteen ratings and the domain of a text, then gives the text, then the
answer's template: `Domain:_` and `[1]Accuracy:_/5` ... `[14]Overall Score:_/5`. A long text keeps its
head and its tail within a token budget, "..." between them (the reference caps texts near 1.9k tokens).

The answer is a domain letter and 14 scores, one per line. For a model not trained on the format,
constrained decoding fills `ANSWER_SLOTS` in order: only the letters A-O at the first slot, only the
digits 1-5 at the others, the newlines between them fixed, so every answer parses.
"""
from __future__ import annotations

from collections.abc import Sequence

from pipeline.rating.answer import CRITERIA, DOMAINS, SCORES

ELLIPSIS = "..."
SEPARATOR = "\n"
ANSWER_SLOTS: tuple[tuple[str, ...], ...] = (tuple(DOMAINS), *([SCORES] * len(CRITERIA)))


def template() -> str:
    return "\n".join(["Domain:_", *(f"[{i}]{name}:_/5" for i, name in enumerate(CRITERIA, 1))])


def instruction() -> str:
    domains = ", ".join(f"{letter} {name}" for letter, name in DOMAINS.items())
    criteria = ", ".join(f"[{i}] {name}" for i, name in enumerate(CRITERIA, 1))
    return ("Rate the quality of the text below for pre-training a language model. Give each of the "
            f"fourteen criteria an integer score from 1 (worst) to 5 (best): {criteria}; the Overall Score "
            "is your holistic judgement, not the mean of the others. Then name the text's domain with one "
            f"letter: {domains}. Answer with the domain letter and then the 14 scores, one per line.")


def head_tail(ids: Sequence[int], budget: int, ellipsis_ids: Sequence[int]) -> list[int]:
    """`ids` when they fit in `budget` tokens; else their head and tail with `ellipsis_ids` between,
    `budget` tokens in all (the head gets the odd token)."""
    if budget < len(ellipsis_ids) + 2:
        raise ValueError(f"a budget of {budget} tokens cannot hold a head, {ELLIPSIS!r} and a tail")
    ids = list(ids)
    if len(ids) <= budget:
        return ids
    room = budget - len(ellipsis_ids)
    head = (room + 1) // 2
    return ids[:head] + list(ellipsis_ids) + ids[len(ids) - (room - head):]


def build_prompt(text: str) -> str:
    """The user message of the rater (the text already cut to its budget by `head_tail`)."""
    return f"{instruction()}\n\nText:\n{text}\n\n{template()}"



def fixed_texts() -> list[str]:
    """The fixed text before each slot of a constrained answer: the answer DataMan raters write (the
    letter, then one score per line). Tried here on SmolLM2-135M: filling in the labelled template
    instead (`Domain:E`, `[1]Accuracy:4/5`, or `Accuracy: 4`) makes it repeat its first score down all
    fourteen slots (and copy digits from a table); bare lines rank documentation above junk."""
    return ["", *([SEPARATOR] * len(CRITERIA))]
