"""The torch rater: an instruct model (HF directory) rating documents in left-padded batches with a KV cache.

Prompts are sorted by length and batched under a token budget, left-padded so every row's answer starts
at the last column (position ids follow the attention mask, so padding changes nothing).

constrained: one forward over the prompts, then per slot one forward over [chosen token, separator]:
    at each slot only the allowed tokens compete (A-O, then 1-5), so every answer parses.
greedy: `generate` (greedy, KV cache) up to the answer's length, stopping at the end-of-turn token;
    the answer is parsed strictly, and the probabilities of "1".."5" at each step give expected scores.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.errors import UserError
from pipeline.rating.constrained import slot_token_ids
from pipeline.rating.prompt import ANSWER_SLOTS, fixed_texts
from pipeline.rating.rater import (check_chat_model, constrained_row, end_of_turn_ids, llm_identity, prompt_ids,
                                   rating_row, score_slot_probabilities)
from pipeline.scoring import core
from pipeline.scoring.identity import default_dtype
from pipeline.scoring.torch_engine import _DTYPES, available_cpus

ANSWER_MAX_TOKENS = 48   # 15 short lines and an end-of-turn token; a model writing prose is cut here


class TorchRater:
    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str | None = None,
                 decoding: str = "constrained", text_tokens: int = 1024, token_budget: int = 8192,
                 num_threads: int | None = None, model=None):
        """`model`: an already loaded causal LM of `model_dir` to share (the service's scoring engine's)."""
        from transformers import AutoModelForCausalLM
        self.model_dir = Path(model_dir)
        dtype = dtype or default_dtype(device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device {device!r} requested but torch sees no CUDA GPU")
        if device == "cpu" and model is None:
            torch.set_num_threads(num_threads or available_cpus())
        self.device, self.decoding = torch.device(device), decoding
        self.text_tokens, self.token_budget = text_tokens, token_budget
        self.tokenizer = core.load_tokenizer(self.model_dir)
        check_chat_model(self.tokenizer, self.model_dir)
        self.identity = llm_identity(self.model_dir, "torch", dtype, decoding, text_tokens)
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=_DTYPES[dtype]).to(self.device).eval()
        self.model = model
        self.slots = slot_token_ids(self.tokenizer, ANSWER_SLOTS)
        self.fixed = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in fixed_texts()]
        self.stop_ids = end_of_turn_ids(self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    def rate(self, docs: list[tuple[str, str]]) -> list[dict]:
        """(doc_id, text) pairs in, one `schemas.RATINGS` row per document out, in input order."""
        prompts = [prompt_ids(self.tokenizer, text, self.text_tokens) for _, text in docs]
        rows: list[dict | None] = [None] * len(docs)
        for batch in core.length_sorted_batches([len(p.ids) for p in prompts], self.token_budget):
            if self.decoding == "constrained":
                chosen, probabilities = self._constrained([prompts[i].ids for i in batch])
                for k, i in enumerate(batch):
                    rows[i] = constrained_row(docs[i][0], self.identity, chosen[k], probabilities[k], prompts[i])
            else:
                for i, (answer, probs) in zip(batch, self._greedy([prompts[i].ids for i in batch])):
                    rows[i] = rating_row(docs[i][0], self.identity, answer, probs, prompts[i])
        return rows   # type: ignore[return-value]

    # ------------------------------------------------------------------ internals

    def _left_padded(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, width - len(s):] = torch.tensor(s)
            mask[row, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def _constrained(self, seqs: list[list[int]]) -> tuple[list[list[str]], list[list[np.ndarray]]]:
        seqs = [s + self.fixed[0] for s in seqs]
        # The prompts share their start (the chat template and the instruction, most of a prompt): it runs
        # once and its KV cache is repeated for the batch; the rest follows, left-padded after it.
        shared, cache = _common_prefix(seqs), None
        if shared:
            cache = self.model(input_ids=torch.tensor([seqs[0][:shared]], device=self.device),
                               use_cache=True).past_key_values
            cache.batch_repeat_interleave(len(seqs))
        ids, rest_mask = self._left_padded([s[shared:] for s in seqs])
        mask = torch.cat([torch.ones((len(seqs), shared), dtype=torch.long, device=self.device), rest_mask], 1)
        positions = (mask.cumsum(-1) - 1)[:, shared:].clamp(min=shared)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True)
        n = len(seqs)
        chosen: list[list[str]] = [[] for _ in range(n)]
        probabilities: list[list[np.ndarray]] = [[] for _ in range(n)]
        for k, allowed in enumerate(self.slots):
            p = torch.softmax(out.logits[:, -1, allowed].float(), dim=-1).cpu().numpy().astype(np.float64)
            pick = p.argmax(axis=1)
            for row in range(n):
                chosen[row].append(ANSWER_SLOTS[k][pick[row]])
                probabilities[row].append(p[row])
            if k + 1 == len(self.slots):
                break
            fixed = torch.tensor(self.fixed[k + 1], dtype=torch.long, device=self.device).expand(n, -1)
            step = torch.cat([torch.tensor([allowed[j] for j in pick], device=self.device)[:, None], fixed], 1)
            mask = torch.cat([mask, torch.ones_like(step)], 1)
            positions = positions[:, -1:] + torch.arange(1, step.shape[1] + 1, device=self.device)
            out = self.model(input_ids=step, attention_mask=mask, position_ids=positions,
                             past_key_values=out.past_key_values, use_cache=True)
        return chosen, probabilities

    @torch.inference_mode()
    def _greedy(self, seqs: list[list[int]]) -> list[tuple[str, np.ndarray | None]]:
        ids, mask = self._left_padded(seqs)
        stop = self.stop_ids
        out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=ANSWER_MAX_TOKENS,
                                  do_sample=False, num_beams=1, eos_token_id=stop, pad_token_id=self.pad_id,
                                  output_scores=True, return_dict_in_generate=True, temperature=None,
                                  top_p=None, top_k=None)
        generated = out.sequences[:, ids.shape[1]:].cpu().tolist()
        scores = [torch.softmax(s.float(), dim=-1)[:, self.slots[1]].cpu().numpy() for s in out.scores]
        results = []
        for row, tokens in enumerate(generated):
            end = next((j for j, t in enumerate(tokens) if t in stop), len(tokens))
            tokens = tokens[:end]
            pieces = [self.tokenizer.decode([t]) for t in tokens]
            probs = score_slot_probabilities(pieces, [scores[j][row] for j in range(len(tokens))])
            results.append((self.tokenizer.decode(tokens, skip_special_tokens=True), probs))
        return results


def _common_prefix(seqs: list[list[int]]) -> int:
    """Tokens all of `seqs` start with, leaving each at least one token of its own."""
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for s in seqs[1:]:
        n = next((i for i in range(n) if s[i] != first[i]), n)
    return max(n, 0)
