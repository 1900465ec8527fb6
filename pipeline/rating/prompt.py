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


# What each criterion asks, in a few words (the spec's glosses; DataMan's reference prompt describes them at length).
CRITERION_HINTS = {
    "Accuracy": "few grammar, spelling or factual errors", "Coherence": "ideas follow logically",
    "Language Consistency": "one language, no garbled characters", "Semantic Density": "share of useful information",
    "Knowledge Novelty": "teaches something", "Topic Focus": "stays on one topic", "Creativity": "original expression",
    "Professionalism": "expert, careful writing", "Style Consistency": "one consistent style",
    "Grammatical Diversity": "varied, well-formed sentences",
    "Structural Standardization": "clear, conventional structure", "Originality": "not repetitive or templated",
    "Sensitivity": "no offensive or harmful content", "Overall Score": "holistic value for training a language model",
}


def instruction() -> str:
    """The rater's instruction: the criteria with a gloss each, the scale anchored at both ends (kinds of
    web junk at 1-2, documentation-like prose at 4-5), and the domains. Measured with SmolLM2-135M on the
    demo's hosts (8 pages each): without the glosses and anchors, generated tables and mojibake pages
    outscore the Python documentation; with them every documentation host has a higher mean Overall Score
    than every junk host, greedy and expected."""
    domains = ", ".join(f"{letter} {name}" for letter, name in DOMAINS.items())
    criteria = "; ".join(f"[{i}] {name}: {CRITERION_HINTS[name]}" for i, name in enumerate(CRITERIA, 1))
    return ("You are a strict data-quality rater for language-model pre-training data. Score the text below on "
            f"fourteen criteria, each an integer from 1 (worst) to 5 (best): {criteria}. Spam, advertising, "
            "boilerplate, machine-generated tables of numbers, lists of links, pages with little content, and text "
            "with broken encoding (mojibake such as 'Ã©' or 'â€™') score 1 or 2; clear, informative, well-written "
            "prose such as good documentation, textbooks or encyclopedia articles scores 4 or 5. The Overall Score "
            f"is your holistic judgement, not the mean of the others. Then name the text's domain with one letter: "
            f"{domains}. Answer with the domain letter and then the 14 scores, one per line.")


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
