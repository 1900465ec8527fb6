"""The vLLM rater: `generate` with logprobs over token-id prompts (the torch rater's prompts).

greedy: temperature 0 up to the answer's length, stopping at the end-of-turn token; parsed strictly.
constrained: the same, under vLLM's structured outputs with the answer's regular expression (a letter
    A-O, then fourteen lines of one digit 1-5), so every answer parses.
Expected scores come from the step logprobs (the top `LOGPROBS` tokens, which always hold the chosen
one): the probabilities of "1".."5" among them, renormalised; a digit outside the top ones counts 0.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.rating.answer import CRITERIA, SCORES
from pipeline.rating.constrained import slot_token_ids
from pipeline.rating.rater import (check_chat_model, end_of_turn_ids, llm_identity, prompt_ids, rating_row,
                                   score_slot_probabilities)
from pipeline.rating.torch_rater import ANSWER_MAX_TOKENS
from pipeline.scoring import core
from pipeline.scoring.identity import default_dtype
from pipeline.scoring.vllm_engine import _accepted_kwargs, _import_vllm

LOGPROBS = 20
ANSWER_REGEX = "[A-O]" + r"\n[1-5]" * len(CRITERIA)


class VllmRater:
    def __init__(self, model_dir: str | Path, device: str = "cuda", dtype: str | None = None,
                 decoding: str = "constrained", text_tokens: int = 1024, token_budget: int = 16384,
                 **vllm_kwargs: Any):
        self.model_dir = Path(model_dir)
        dtype = dtype or default_dtype(device)
        if device == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        vllm, LLM, SamplingParams, TokensPrompt = _import_vllm()
        self._tokens_prompt = TokensPrompt
        self.decoding, self.text_tokens = decoding, text_tokens
        self.tokenizer = core.load_tokenizer(self.model_dir)
        check_chat_model(self.tokenizer, self.model_dir)
        self.identity = llm_identity(self.model_dir, "vllm", dtype, decoding, text_tokens)
        # The prompt around the text (chat template, instruction, answer template), the text's budget and the answer.
        max_len = len(prompt_ids(self.tokenizer, "", text_tokens).ids) + text_tokens + ANSWER_MAX_TOKENS
        try:
            self.llm = LLM(model=str(self.model_dir), dtype=dtype, max_model_len=max_len, seed=0,
                           max_num_batched_tokens=max(token_budget, max_len), **vllm_kwargs)
        except (ValueError, TypeError) as e:
            raise UserError(f"vLLM could not load {self.model_dir}: {e}") from e
        self.score_ids = slot_token_ids(self.tokenizer, [SCORES])[0]
        wanted: dict[str, Any] = {"temperature": 0.0, "max_tokens": ANSWER_MAX_TOKENS, "logprobs": LOGPROBS,
                                  "stop_token_ids": end_of_turn_ids(self.tokenizer)}
        if decoding == "constrained":
            wanted.update(_structured(vllm))
        self.sampling_params = SamplingParams(**_accepted_kwargs(SamplingParams, wanted))

    def rate(self, docs: list[tuple[str, str]]) -> list[dict]:
        """(doc_id, text) pairs in, one `schemas.RATINGS` row per document out, in input order."""
        prompts = [prompt_ids(self.tokenizer, text, self.text_tokens) for _, text in docs]
        outputs = self.llm.generate([self._tokens_prompt(prompt_token_ids=p.ids) for p in prompts],
                                    self.sampling_params, use_tqdm=False)
        rows = []
        for (doc_id, _), prompt, out in zip(docs, prompts, outputs):
            completion = out.outputs[0]
            tokens = list(completion.token_ids)
            steps = [self._score_probabilities(entry) for entry in (completion.logprobs or [])]
            pieces = [self.tokenizer.decode([t]) for t in tokens]
            probs = score_slot_probabilities(pieces, steps) if len(steps) == len(tokens) else None
            rows.append(rating_row(doc_id, self.identity, self.tokenizer.decode(tokens, skip_special_tokens=True),
                                   probs, prompt))
        return rows

    def _score_probabilities(self, entry) -> np.ndarray:
        """exp(logprob) of "1".."5" at one step (0 for a digit outside the returned top tokens)."""
        def logprob(token_id):
            value = entry.get(token_id) if entry else None
            return -math.inf if value is None else float(getattr(value, "logprob", value))
        return np.exp([logprob(t) for t in self.score_ids])


def _structured(vllm) -> dict[str, Any]:
    """The SamplingParams argument of a regular-expression constraint, in this vLLM's spelling."""
    try:
        from vllm.sampling_params import StructuredOutputsParams
        return {"structured_outputs": StructuredOutputsParams(regex=ANSWER_REGEX)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams
        return {"guided_decoding": GuidedDecodingParams(regex=ANSWER_REGEX)}
