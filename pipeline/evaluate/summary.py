"""The arithmetic of a curated-vs-random comparison, pure: each arm (the random subset, each curated set)
trains one proxy per seed on exactly the same number of tokens, and is judged by its held-out losses.

Per arm: the mean and standard deviation (n - 1) of the loss over seeds. Against the baseline arm, the
difference is taken seed by seed (the same seed gives both arms the same initial weights and batch
order), and an arm `beats` the baseline when it is lower on every seed and its mean difference exceeds
the standard deviation of the differences (with one seed: never, there is no spread to compare with).
"""
from __future__ import annotations

import math

import numpy as np


def training_rows(available: int, steps: int, batch_size: int) -> tuple[int, float]:
    """(rows an arm trains on, epochs over its own rows): every arm takes steps x batch_size rows of the
    same length, so every arm sees exactly the same number of tokens; a small arm repeats its rows."""
    if available < 1:
        raise ValueError("an arm without a training row cannot be trained")
    needed = steps * batch_size
    return needed, needed / available


def tokens_prefix(lengths, needed: int) -> int:
    """How many documents, taken in order, first hold at least `needed` tokens (all of them when they hold
    fewer): an arm reads no more documents than its proxy trains on, and the random arm as many tokens as
    the curated one."""
    if needed <= 0:
        return 0
    total = np.cumsum(np.asarray(lengths, dtype=np.int64))
    return int(min(np.searchsorted(total, needed) + 1, len(total)))


def compare_arms(losses: dict[str, list[float]], baseline: str) -> list[dict]:
    """One row per arm: seeds, mean, std, and against `baseline` (same seeds, same order): the mean and std
    of the per-seed differences (arm - baseline; negative is better) and whether the arm beats it."""
    if baseline not in losses:
        raise ValueError(f"no baseline arm {baseline!r} among {sorted(losses)}")
    base = np.asarray(losses[baseline], dtype=np.float64)
    rows = []
    for arm, values in losses.items():
        v = np.asarray(values, dtype=np.float64)
        if len(v) != len(base):
            raise ValueError(f"arm {arm!r} has {len(v)} seeds, the baseline {len(base)}: compare the same seeds")
        diff = v - base
        spread = float(diff.std(ddof=1)) if len(v) > 1 else math.nan
        beats = bool(arm != baseline and len(v) > 1 and np.all(diff < 0) and -diff.mean() > spread)
        rows.append({"arm": arm, "seeds": int(len(v)), "mean": float(v.mean()),
                     "std": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
                     "diff_mean": float(diff.mean()), "diff_std": spread, "beats_baseline": beats})
    return rows
