"""A proxy model trained on a mixture of groups: the reference trainer's model, optimiser and schedule
(`pipeline.train.reference`), with batches drawn from groups by given proportions.

`train(proportions, steps)` and `evaluate()` (per-group held-out loss) are the two calls a mixing method
needs (`pipeline.mixing.aioli.run_aioli` drives them); `evaluate_rows` gives the loss on any other rows
(a target set). Each batch's rows are dealt to the groups by `GroupAllocator` (the rows drawn track the
proportions), and each group's rows come in a seeded order, a fresh permutation every pass over the group.
`save` / `load` checkpoint everything the next step depends on (weights, optimiser, the allocator's
credit, every group's position, the step), so a resumed run continues exactly as an unbroken one.
On CUDA the forward pass runs in bfloat16 autocast; the weights and optimiser stay float32.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from pipeline.config import ProxyModelConfig, ReferenceConfig
from pipeline.mixing.groups import GroupAllocator
from pipeline.train.reference import build_model, lr_at, mean_token_nll

if TYPE_CHECKING:
    import torch


def proxy_reference_config(proxy: ProxyModelConfig, seed: int, total_steps: int) -> ReferenceConfig:
    """The reference trainer's settings for a proxy of `proxy`'s size trained `total_steps` steps."""
    warmup = proxy.warmup_steps if proxy.warmup_steps is not None else max(1, total_steps // 10)
    return ReferenceConfig(vocab_size=proxy.vocab_size, hidden_size=proxy.hidden_size, num_layers=proxy.num_layers,
                           num_heads=proxy.num_heads, max_seq_len=proxy.max_seq_len, batch_size=proxy.batch_size,
                           lr=proxy.lr, warmup_steps=warmup, device=proxy.device, seed=seed)


class GroupRows:
    """One group's training rows in a seeded order, a new permutation on every pass."""

    def __init__(self, rows: "torch.Tensor", seed: int):
        import torch
        self.rows, self.seed, self.epoch, self.position = rows, seed, 0, 0
        self._order = self._permutation(torch)

    def _permutation(self, torch):
        return torch.randperm(len(self.rows), generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))

    def take(self, n: int) -> "torch.Tensor":
        import torch
        picked = []
        while n > 0:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(torch)
            k = min(n, len(self._order) - self.position)
            picked.append(self._order[self.position:self.position + k])
            self.position, n = self.position + k, n - k
        return self.rows[torch.cat(picked)] if picked else self.rows[:0]


class ProxyTrainer:
    """Train `config`'s Llama for `total_steps` steps on rows of m groups (`train_rows[g]`, packed by
    `reference.pack_sequences`), evaluating on each of `heldout_rows` (a mixture: the same groups' held-out
    rows; an evaluation: one training group, any held-out sets)."""

    def __init__(self, tokenizer, train_rows: list, heldout_rows: list, config: ReferenceConfig, total_steps: int,
                 model=None, on_step: Callable[[], None] | None = None):
        import torch
        if not train_rows or not heldout_rows:
            raise ValueError("a proxy needs training rows and held-out rows")
        empty = [g for g, rows in enumerate(train_rows) if len(rows) == 0]
        if empty:
            raise ValueError(f"group(s) {empty} have no training rows")
        self.config, self.total_steps = config, total_steps
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)
        self.model = (model or build_model(config, tokenizer)).to(self.device)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}],
                                           lr=config.lr, betas=(0.9, 0.95), eps=1e-8)
        self.groups = [GroupRows(rows, config.seed + g) for g, rows in enumerate(train_rows)]
        self.heldout_rows = heldout_rows
        self.allocator = GroupAllocator(len(train_rows))
        self.step, self.tokens, self.train_seconds = 0, 0, 0.0
        self.last_loss: float | None = None
        self.on_step = on_step   # called after every optimiser step (progress)

    @property
    def m(self) -> int:
        return len(self.groups)

    def train(self, proportions, steps: int) -> None:
        """`steps` optimiser steps on batches whose rows are dealt to the groups by `proportions`."""
        import torch
        started = time.perf_counter()
        self.model.train()
        for _ in range(steps):
            if self.step >= self.total_steps:
                raise ValueError(f"the proxy's {self.total_steps} steps are spent")
            counts = self.allocator.allocate(proportions, self.config.batch_size)
            ids = torch.cat([self.groups[g].take(int(n)) for g, n in enumerate(counts) if n]).to(self.device)
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step, self.total_steps, self.config)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                loss = self.model(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.last_loss = loss.item()
            self.step += 1
            self.tokens += ids.numel()
            if self.on_step:
                self.on_step()
        self.train_seconds += time.perf_counter() - started

    def evaluate_rows(self, rows) -> float:
        return mean_token_nll(self.model, rows, 4 * self.config.batch_size)   # no gradients: larger batches

    def evaluate(self) -> np.ndarray:
        """Mean next-token loss (nats) on each held-out set."""
        return np.array([self.evaluate_rows(rows) for rows in self.heldout_rows])

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    # ---------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "credit": self.allocator.credit.copy(), "dealt": self.allocator.dealt.copy(),
                "groups": [(g.epoch, g.position) for g in self.groups], "step": self.step, "tokens": self.tokens,
                "train_seconds": self.train_seconds}

    def save(self, path: str | Path) -> None:
        """A checkpoint, written aside and renamed (a killed save leaves the previous one)."""
        import torch
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)

    def load(self, path: str | Path) -> None:
        import torch
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.allocator.credit, self.allocator.dealt = state["credit"], state["dealt"]
        for group, (epoch, position) in zip(self.groups, state["groups"]):
            group.epoch, group.position = epoch, position
            group._order = group._permutation(torch)
        self.step, self.tokens, self.train_seconds = state["step"], state["tokens"], state["train_seconds"]
