"""A model's log-likelihood of each choice of a multiple-choice item given its context, as
lm-evaluation-harness computes it: the context and context + choice are tokenized (the document start
token first, `pipeline.scoring.core.encode`), the choice's tokens are those after the context's, and
their log-probabilities are summed. Sequences longer than the model's context keep their last tokens.
`tasks.accuracy` turns the sums into acc and acc_norm.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from pipeline.correlations.tasks import TaskItem
from pipeline.scoring import core


def choice_logprobs(model_dir: str | Path, items: list[TaskItem], device: str = "cpu",
                    progress: Callable[[int, int], None] | None = None) -> list[list[float]]:
    """Per item, the summed log-probability of each choice's tokens given the context."""
    import torch
    from transformers import AutoModelForCausalLM
    core.quiet_transformers()
    tokenizer = core.load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).to(device).eval()
    limit = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    with torch.inference_mode():
        for n, item in enumerate(items):
            n_context = len(core.encode(tokenizer, item.context).ids)
            seqs, firsts = [], []
            for choice in item.choices:
                ids = core.encode(tokenizer, item.context + choice).ids
                first = min(n_context, len(ids) - 1)          # a choice has at least its last token
                cut = max(0, len(ids) - limit)                # keep the last `limit` tokens
                seqs.append(ids[cut:])
                firsts.append(max(first - cut, 1))
            width = max(map(len, seqs))
            input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
            logprobs = torch.log_softmax(model(input_ids=input_ids, attention_mask=mask).logits.float(), dim=-1)
            sums = []
            for row, (seq, first) in enumerate(zip(seqs, firsts)):
                positions = torch.arange(first, len(seq), device=device)
                targets = input_ids[row, positions]
                sums.append(float(logprobs[row, positions - 1, targets].sum()))
            out.append(sums)
            if progress:
                progress(n + 1, len(items))
    return out


def leaderboard_row(model: str, benchmark: str, result: dict) -> dict:
    """A leaderboard row from `tasks.accuracy`'s result."""
    return {"model": model, "benchmark": benchmark, "accuracy": result["acc"], "accuracy_norm": result["acc_norm"],
            "error": result["error"], "bits_per_byte": result["bits_per_byte"], "items": result["items"]}


def leaderboard(models: dict[str, str | Path], items: list[TaskItem], benchmark: str, device: str = "cpu",
                progress: Callable[[str, int, int], None] | None = None):
    """A leaderboard-shaped table (model, benchmark, accuracy, accuracy_norm, error, bits_per_byte, items):
    each model (name -> directory) on the task, `accuracy` being lm-evaluation-harness's acc and
    `accuracy_norm` its acc_norm."""
    import pyarrow as pa
    from pipeline.correlations.tasks import accuracy
    rows = []
    for name, model_dir in models.items():
        report = (lambda done, total, name=name: progress(name, done, total)) if progress else None
        rows.append(leaderboard_row(name, benchmark, accuracy(items, choice_logprobs(model_dir, items, device=device,
                                                                                      progress=report))))
    return pa.Table.from_pylist(rows)
