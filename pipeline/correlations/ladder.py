"""The offline ladder: small reference models trained on the store so that the estimators have models
that differ in what they fit, where no public ladder is at hand.

Perplexity correlations need models whose losses differ across domains in ways that go with their
benchmark errors. Rungs that differ only in size share one ranking of the domains; so every rung after
the first trains on its own seeded subset of the domains, and widths and steps vary across rungs too.
The first rung trains on every domain; with domain_fraction 0.5 the others come in pairs, a random half
of the domains and its complement, so that every domain is in as many rungs as it is not (a foldover
design: a domain's estimate is less confounded with the domains it happened to share rungs with).
Rung i takes hidden_sizes[i mod W] and steps[(i div W) mod S], W and S the lengths of those lists.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import LadderConfig, ReferenceConfig
from pipeline.scoring.identity import MANIFEST


@dataclass(frozen=True)
class Rung:
    name: str
    domains: tuple[str, ...]
    hidden_size: int
    steps: int
    seed: int


def plan_ladder(domains: list[str], cfg: LadderConfig) -> list[Rung]:
    """The rungs for these domains: the same plan for the same domains (in any order) and seed."""
    domains = sorted(set(domains))
    if cfg.rungs and not domains:
        raise ValueError("the ladder needs at least one domain to train on")
    rng = np.random.default_rng(cfg.seed)
    rungs = []
    for i in range(cfg.rungs):
        width = cfg.hidden_sizes[i % len(cfg.hidden_sizes)]
        steps = cfg.steps[(i // len(cfg.hidden_sizes)) % len(cfg.steps)]
        if i == 0:
            subset = domains
        elif i % 2 == 1 or cfg.domain_fraction != 0.5:
            k = min(len(domains), max(1, round(cfg.domain_fraction * len(domains))))
            subset = sorted(rng.choice(domains, size=k, replace=False).tolist())
        else:  # a half and then its complement: every domain in as many rungs as not
            subset = sorted(set(domains) - set(rungs[-1].domains)) or domains
        rungs.append(Rung(f"ladder-{i:02d}-h{width}-s{steps}", tuple(subset), width, steps, cfg.seed + i))
    return rungs


def rung_config(rung: Rung, cfg: LadderConfig, device: str = "cpu") -> ReferenceConfig:
    """The trainer's settings of a rung: two layers of 32-wide heads, warmup a fifth of the steps."""
    return ReferenceConfig(name=rung.name, hidden_size=rung.hidden_size, num_layers=2,
                           num_heads=max(1, rung.hidden_size // 32), vocab_size=cfg.vocab_size,
                           max_seq_len=cfg.seq_len, batch_size=8, max_steps=rung.steps, lr=cfg.lr,
                           warmup_steps=max(1, rung.steps // 5), eval_every=rung.steps, eval_max_rows=16,
                           seed=rung.seed, device=device)


LADDER_FILE = "curate_ladder.json"   # beside the model's card: what the rung was trained on


def is_trained(out: Path, training_key: str) -> bool:
    """A rung at `out` trained with these settings on these documents (`training_key` says both)."""
    try:
        return (out / MANIFEST).is_file() and json.loads((out / LADDER_FILE).read_text()).get("key") == training_key
    except (OSError, ValueError):
        return False


def train_rung(rung: Rung, texts: list[str], out: Path, cfg: LadderConfig, training_key: str,
               device: str = "cpu", progress=None) -> dict:
    """Train one rung on `texts` into `out`; returns the trainer's summary."""
    from pipeline.train.reference import train_reference
    summary = train_reference(texts, out, rung_config(rung, cfg, device), progress=progress)
    (out / LADDER_FILE).write_text(json.dumps({
        "key": training_key, "domains": list(rung.domains), "docs": len(texts)}, indent=1))
    return summary
