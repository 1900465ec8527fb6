"""Constrained decoding of a rater's answer with a torch causal LM: every answer parses.

The answer is slots separated by fixed text (`prompt.ANSWER_SLOTS`, newlines between). At each slot
only the allowed tokens compete: the greedy answer takes the likeliest of them, and their probabilities,
renormalised over the allowed tokens, give the expected score (`answer.expected_scores`). One pass with
a KV cache: the prompt once, then per slot the fixed text and the chosen token.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.rating.prompt import SEPARATOR


def slot_token_ids(tokenizer, slots: Sequence[Sequence[str]]) -> list[list[int]]:
    """The token id of every allowed string of every slot; each must be exactly one token."""
    out = []
    for allowed in slots:
        ids = []
        for text in allowed:
            encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(encoded) != 1:
                raise ValueError(f"{text!r} is {len(encoded)} tokens under this tokenizer; constrained decoding "
                                 "needs each allowed answer to be one token")
            ids.append(int(encoded[0]))
        out.append(ids)
    return out


def constrained_answer(model, tokenizer, prompt_ids: Sequence[int], slots: Sequence[Sequence[str]],
                       device: str = "cpu") -> tuple[list[str], list[np.ndarray]]:
    """(the chosen string of each slot, each slot's probabilities over its allowed strings) after
    `prompt_ids` (the prompt already in the model's chat format, up to where the answer starts)."""
    import torch
    allowed = slot_token_ids(tokenizer, slots)
    separator = tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"]
    chosen, probabilities = [], []
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([list(prompt_ids)], device=device), use_cache=True)
        for k, ids in enumerate(allowed):
            if k:   # the fixed text between slots
                out = model(input_ids=torch.tensor([separator], device=device), past_key_values=out.past_key_values,
                            use_cache=True)
            logits = out.logits[0, -1, ids].float()
            p = torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float64)
            pick = int(np.argmax(p))
            chosen.append(slots[k][pick])
            probabilities.append(p)
            out = model(input_ids=torch.tensor([[ids[pick]]], device=device), past_key_values=out.past_key_values,
                        use_cache=True)
    return chosen, probabilities
