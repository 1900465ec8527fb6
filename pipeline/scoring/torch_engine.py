"""The torch engine: a HF causal LM on CPU or one GPU, scoring documents with the pure core.

Per call: tokenize (`core.encode`: BOS + document tokens), cut each sequence into windows
(`core.plan_windows`), run the windows in length-sorted, right-padded batches under a token
budget, and compute each predicted token's NLL from the base model's hidden states in chunks of
positions, so the batch x seq x vocab logits tensor is never built (for SmolLM2 at 16k tokens that
would be 3 GB in fp32). Rows come back in input order.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import UserError
from pipeline.scoring import core
from pipeline.scoring.identity import engine_settings, scorer_identity

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def available_cpus() -> int:
    """CPUs this process may run on (cgroup/affinity aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class TorchEngine:
    """Score documents with a Hugging Face causal LM directory.

    dtype defaults to float32 on CPU and bfloat16 on CUDA; NLLs are always computed from float32
    logits. `token_budget` bounds padded tokens per forward pass (max length x batch size);
    `ce_chunk` bounds the positions whose logits exist at once.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str | None = None,
                 max_tokens: int | None = None, truncation: str = "first_n", stride: int = 512,
                 token_budget: int = 16384, ce_chunk: int = 2048, num_threads: int | None = None):
        from transformers import AutoModelForCausalLM

        self.model_dir = Path(model_dir)
        dtype, max_tokens = engine_settings(self.model_dir, device, dtype, max_tokens, truncation, stride)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device {device!r} requested but torch sees no CUDA GPU")
        if device == "cpu":
            # torch's default may count hyperthreads or the host, not this container's CPUs.
            torch.set_num_threads(num_threads or available_cpus())

        self.device = torch.device(device)
        self.max_tokens, self.truncation, self.stride = max_tokens, truncation, stride
        self.token_budget, self.ce_chunk = token_budget, ce_chunk
        self.tokenizer = core.load_tokenizer(self.model_dir)
        if not self.tokenizer.is_fast:
            raise UserError(f"{self.model_dir}: needs a fast tokenizer (tokenizer.json) for byte offsets")
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=_DTYPES[dtype])
        self.model = model.to(self.device).eval()
        context = getattr(model.config, "max_position_embeddings", None)
        if context is not None and max_tokens > context:
            raise UserError(f"max_tokens {max_tokens} exceeds the model's context of {context} tokens")
        # The transformer body (embeddings .. final norm) and the vocabulary projection, apart.
        self.body = model.base_model
        self.lm_head = model.get_output_embeddings()

        self.identity = scorer_identity(self.model_dir, "torch", dtype, max_tokens, truncation, stride)

    # ------------------------------------------------------------------ public

    def score(self, docs: list[tuple[str, str]]) -> list[dict]:
        """(doc_id, text) pairs in, one `schemas.SCORES` row per document out, in input order."""
        return core.score_documents(docs, self.tokenizer, self.identity, self._score_windows)

    # ------------------------------------------------------------------ internals

    @torch.inference_mode()
    def _score_windows(self, seqs: list[list[int]], first_scored: list[int]) -> list[np.ndarray]:
        """NLL (nats, float64) of positions first_scored[i] .. len(seqs[i]) - 1 of each sequence."""
        out: list[np.ndarray] = [np.empty(0)] * len(seqs)
        for batch in core.length_sorted_batches([len(s) for s in seqs], self.token_budget):
            width = len(seqs[batch[0]])   # longest first
            ids = torch.zeros((len(batch), width), dtype=torch.long)   # pad id is irrelevant: masked
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, :len(seqs[i])] = torch.tensor(seqs[i])
                mask[row, :len(seqs[i])] = 1
            # Right padding keeps real tokens at positions 0..len-1, so default position ids and
            # the causal mask are the same as for the sequence alone.
            ids, mask = ids.to(self.device), mask.to(self.device)
            hidden = self.body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state

            # Hidden state at p predicts token p + 1: gather the predicting positions of all rows.
            rows, pos, counts = [], [], []
            for row, i in enumerate(batch):
                p = torch.arange(first_scored[i] - 1, len(seqs[i]) - 1)
                rows.append(torch.full_like(p, row))
                pos.append(p)
                counts.append(len(p))
            rows_t, pos_t = torch.cat(rows).to(self.device), torch.cat(pos).to(self.device)
            h = hidden[rows_t, pos_t]                              # (n_predicted, hidden)
            targets = ids[rows_t, pos_t + 1]
            nll = torch.cat([self._chunk_nll(h[s:s + self.ce_chunk], targets[s:s + self.ce_chunk])
                             for s in range(0, len(targets), self.ce_chunk)])
            for i, part in zip(batch, torch.split(nll.cpu(), counts)):
                out[i] = part.numpy().astype(np.float64)
        return out

    def _chunk_nll(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """-log softmax(lm_head(h))[target], from float32 logits of at most ce_chunk positions."""
        logits = self.lm_head(h).float()
        return F.cross_entropy(logits, targets, reduction="none")
