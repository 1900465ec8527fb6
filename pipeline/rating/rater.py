"""What every rater shares: its identity, the prompt's token ids for a document, and RATINGS rows.

A rater (the torch and vLLM raters, a distilled student, the service client) has `.identity` and
`.rate((doc_id, text) pairs) -> schemas.RATINGS rows`, in input order. Two decodings of an LLM:
`constrained` fills the answer's slots with their allowed tokens only (any instruct model; every
answer parses), `greedy` lets the model write its answer and parses it strictly (DataMan checkpoints,
trained on the format). Either way the expected scores come from the probabilities of "1".."5" at
the score slots, renormalised over those five.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

import schemas
from pipeline.hashing import short_digest
from pipeline.rating.answer import CRITERIA, SCORES, answer_text, expected_scores, parse_answer
from pipeline.rating.prompt import ELLIPSIS, build_prompt, fixed_texts, head_tail, instruction, template
from pipeline.scoring.core import CHARS_PER_TOKEN
from pipeline.scoring.identity import model_name, tokenizer_hash, weights_sha256
from pipeline.store import code_version

DECODINGS = ("constrained", "greedy")
COLUMNS = schemas.RATING_CRITERIA
assert len(COLUMNS) == len(CRITERIA)


@dataclass(frozen=True)
class RaterIdentity:
    """Everything that changes a rating; `rater_id` names the ratings/ partition (code_version excluded)."""
    model_name: str
    weights_sha256: str
    tokenizer: str
    backend: Literal["torch", "vllm", "student"]
    dtype: str | None
    decoding: Literal["constrained", "greedy", "student"]
    prompt_sha256: str
    text_tokens: int
    distilled: dict | None = None
    code_version: str = field(default="", compare=False)

    @property
    def rater_id(self) -> str:
        return short_digest({k: v for k, v in asdict(self).items()
                             if k != "code_version" and not (k == "distilled" and v is None)})

    def to_dict(self) -> dict[str, Any]:
        """For `ratings/rater=<id>/_rater.json` (schemas.sidecars.RATER) and the service's /v1/models."""
        out = {**asdict(self), "rater_id": self.rater_id}
        if self.distilled is None:
            del out["distilled"]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "RaterIdentity":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def prompt_sha256(decoding: str) -> str:
    """The prompt's fixed parts (instruction, answer template, and a constrained answer's fixed text):
    a new wording is a new rater."""
    fixed = fixed_texts() if decoding == "constrained" else []
    return hashlib.sha256("\0".join([instruction(), template(), *fixed]).encode()).hexdigest()


def llm_identity(model_dir: str | Path, backend: str, dtype: str, decoding: str, text_tokens: int) -> RaterIdentity:
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
    name = model_name(model_dir)
    return RaterIdentity(model_name=name, weights_sha256=weights_sha256(model_dir),
                         tokenizer=f"{name}@{tokenizer_hash(model_dir)}", backend=backend, dtype=dtype,
                         decoding=decoding, prompt_sha256=prompt_sha256(decoding), text_tokens=text_tokens,
                         code_version=code_version())


# --------------------------------------------------------------------------- prompts

@dataclass(frozen=True)
class RaterPrompt:
    ids: list[int]          # the chat-formatted prompt, up to where the answer starts
    n_text_tokens: int      # tokens of the text in it (after truncation)
    truncated: bool


def cut_text(text: str, text_tokens: int) -> str:
    """Head and tail of a huge text by characters before tokenizing (no token spans more than
    CHARS_PER_TOKEN characters, so `head_tail` sees the same head and tail tokens): a 50 MB page
    costs kilobytes of tokenizing."""
    room = text_tokens * CHARS_PER_TOKEN
    return text if len(text) <= 2 * room else f"{text[:room]}\n{text[-room:]}"


def prompt_ids(tokenizer, text: str, text_tokens: int) -> RaterPrompt:
    """The rater's prompt for `text` in the model's chat template: the text's tokens cut to their head
    and tail within `text_tokens` ("..." between), the user message of `build_prompt`, and the
    generation prompt (where the assistant's answer starts)."""
    ids = tokenizer(cut_text(text, text_tokens), add_special_tokens=False)["input_ids"]
    ellipsis = tokenizer(ELLIPSIS, add_special_tokens=False)["input_ids"]
    kept = head_tail(ids, text_tokens, ellipsis)
    body = tokenizer.decode(kept) if len(kept) < len(ids) else text
    messages = [{"role": "user", "content": build_prompt(body)}]
    chat = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The template's text already holds its special tokens: encoding must not add more.
    return RaterPrompt(list(tokenizer(chat, add_special_tokens=False)["input_ids"]), len(kept), len(kept) < len(ids))


def end_of_turn_ids(tokenizer) -> list[int]:
    """The tokens that end a greedy answer: the tokenizer's EOS and, in a ChatML template, <|im_end|>."""
    ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
    return sorted(t for t in ids if isinstance(t, int) and t >= 0)


def check_chat_model(tokenizer, model_dir) -> None:
    from pipeline.errors import UserError
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{model_dir}: the rater needs an instruct model with a chat template "
                        "(e.g. `curate models fetch smollm2-135m`); this tokenizer has none")


# --------------------------------------------------------------------------- rows

def rating_row(doc_id: str, identity: RaterIdentity, answer: str | None, score_probabilities=None,
               prompt: RaterPrompt | None = None, error: str | None = None) -> dict[str, Any]:
    """One RATINGS row from a rater's answer (parsed strictly; an unparseable one is kept with the
    parser's error) and the 14 x 5 probabilities of "1".."5" at its score slots (expected scores)."""
    row: dict[str, Any] = {"doc_id": doc_id, "rater_id": identity.rater_id, "model_name": identity.model_name,
                           "decoding": identity.decoding, "domain": None, "answer": answer, "parsed": False,
                           "error": error, "n_text_tokens": prompt.n_text_tokens if prompt else None,
                           "truncated": prompt.truncated if prompt else None}
    row.update({name: None for name in COLUMNS})
    row.update({f"{name}_expected": None for name in COLUMNS})
    if error is not None:
        return row
    parsed = parse_answer(answer or "")
    row["domain"], row["error"] = parsed.domain, parsed.error
    if parsed.ok:
        row["parsed"] = True
        row.update(zip(COLUMNS, parsed.scores))
        if score_probabilities is not None:
            row.update(zip((f"{name}_expected" for name in COLUMNS), expected_scores(score_probabilities).tolist()))
    return row


def constrained_row(doc_id: str, identity: RaterIdentity, chosen: Sequence[str], probabilities: Sequence,
                    prompt: RaterPrompt) -> dict[str, Any]:
    """The row of a constrained answer: slot 0 the domain, slots 1-14 the scores with their probabilities."""
    return rating_row(doc_id, identity, answer_text(chosen[0], chosen[1:]), np.asarray(probabilities[1:]), prompt)


def score_slot_probabilities(pieces: Sequence[str], step_probabilities: Sequence) -> np.ndarray | None:
    """The probabilities of "1".."5" at the 14 score slots of a freely generated answer: `pieces` are its
    tokens' texts, `step_probabilities[i]` the (unnormalised) probabilities of "1".."5" when token i was
    chosen. A score slot is the first token of answer lines 2-15 when it is a digit 1-5; None unless all
    14 are found (the answer then did not parse either)."""
    found, line, line_started = [], 0, False
    for piece, p in zip(pieces, step_probabilities):
        if piece.strip() in SCORES and "\n" not in piece and line >= 1 and not line_started:
            found.append(np.asarray(p, dtype=np.float64))
        for k, chunk in enumerate(piece.split("\n")):
            if k and line_started:      # a line with content ended
                line, line_started = line + 1, False
            line_started = line_started or bool(chunk.strip())
    if len(found) != len(CRITERIA) or any(f.sum() <= 0 for f in found):
        return None
    return np.stack(found)
