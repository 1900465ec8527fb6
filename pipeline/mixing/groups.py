"""Groups of a mixture, pure: each group's held-out validation split, and how many rows of each batch each
group gets so that the rows drawn track the proportions exactly over time.

`heldout_split` takes, in every group, the documents with the smallest seeded keys (a share of the group,
at least `min_docs`, never the whole group): the same documents in any order or partitioning.
`GroupAllocator` deals the rows of each batch by accumulated credit (every row, every group earns its
proportion; the group with the most credit gets the row and pays 1). The credits sum to 0 and none falls
to -1, so no group is ever a row ahead of its share (and none more than m - 1 behind; in the tests, with
proportions changing every batch, never more than 1.1 rows), whatever the proportions do between batches.
"""
from __future__ import annotations

import numpy as np

from pipeline.hashing import seeded_keys


def largest_groups(groups, max_groups: int, min_docs: int) -> list[str]:
    """The (at most) `max_groups` groups with the most documents, each of at least `min_docs`, sorted by name;
    ties in size go to the name first in order. A null group (None) is never chosen."""
    present = [g for g in groups if g is not None]
    names, counts = np.unique(np.asarray(present, dtype=str), return_counts=True) if present else ([], [])
    order = np.argsort(-np.asarray(counts), kind="stable")
    return sorted([str(names[i]) for i in order if counts[i] >= min_docs][:max_groups])


def heldout_split(doc_ids, groups, fraction: float, seed: int | str = 0, min_docs: int = 1) -> np.ndarray:
    """True for the held-out documents: in each group, the ceil(fraction x size) (at least `min_docs`, at
    most size - 1) with the smallest seeded keys."""
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    doc_ids = np.asarray(doc_ids, dtype=object)
    groups = np.asarray(groups, dtype=object)
    keys = seeded_keys(doc_ids.tolist(), f"heldout:{seed}")
    heldout = np.zeros(len(doc_ids), dtype=bool)
    for group in set(groups.tolist()):
        members = np.flatnonzero(groups == group)
        n = min(len(members) - 1, max(min_docs, int(np.ceil(fraction * len(members)))))
        if n > 0:
            order = np.lexsort((doc_ids[members].astype(str), keys[members]))   # ties (never, in practice) by id
            heldout[members[order[:n]]] = True
    return heldout


class GroupAllocator:
    """Rows per group for each batch, tracking the proportions given for each batch (`dealt`: rows so far)."""

    def __init__(self, m: int):
        self.credit = np.zeros(m)
        self.dealt = np.zeros(m, dtype=np.int64)

    def allocate(self, proportions, rows: int) -> np.ndarray:
        p = np.asarray(proportions, dtype=np.float64)
        if p.shape != self.credit.shape or np.any(p < 0) or not np.isclose(p.sum(), 1):
            raise ValueError(f"expected {len(self.credit)} non-negative proportions summing to 1, got {p}")
        counts = np.zeros(len(p), dtype=np.int64)
        for _ in range(rows):
            self.credit += p
            g = int(np.argmax(self.credit))
            self.credit[g] -= 1
            counts[g] += 1
        self.dealt += counts
        return counts
