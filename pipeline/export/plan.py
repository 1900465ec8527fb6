"""The export plan, pure: which documents go out, in what order, in which shard.

Functions of (doc_id, group, n_tokens, n_bytes) arrays, no text and no Spark: a seeded order that
does not depend on partitioning, the token-budget or mixture sample, the shard cuts, and the
fingerprints that let a re-run of the same plan reuse the shards already written.
"""
from __future__ import annotations

import hashlib
import math
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import schemas
from pipeline.hashing import seeded_keys, short_digest


def _strings(values: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.cast(pa.string()) if isinstance(values, pa.Array) else pa.array(values, pa.string())


def document_order(doc_ids: Sequence[str] | pa.Array | pa.ChunkedArray, shuffle: bool, seed: int) -> np.ndarray:
    """Indices of the documents in export order: ascending (shuffle key, doc_id), or doc_id alone
    when not shuffling. The key is `hashing.seeded_keys` (blake2b of seed:doc_id), so the order is
    the same however Spark partitioned the documents; doc_id breaks ties between 64-bit keys."""
    ids = _strings(doc_ids)
    if not shuffle:
        return pc.sort_indices(ids).to_numpy()
    table = pa.table({"key": seeded_keys(ids.to_pylist(), seed), "doc_id": ids})
    return pc.sort_indices(table, sort_keys=[("key", "ascending"), ("doc_id", "ascending")]).to_numpy()


def sample_to_budget(n_tokens: Sequence[int], budget: int | None) -> np.ndarray:
    """Keep documents in order while the tokens kept before them are below the budget:
    keep[i] = sum(n_tokens[:i]) < budget.

    The document that crosses the budget is kept, so the sample holds at least min(budget, total)
    tokens and overshoots by less than one document. No budget keeps everything."""
    n = np.asarray(n_tokens, dtype=np.int64)
    if budget is None:
        return np.ones(len(n), dtype=bool)
    return np.cumsum(n) - n < budget


def normalise_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Target token shares w_g / sum(w). Weights must be finite, non-negative and not all zero."""
    values = list(weights.values())
    if not values or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
                             and w >= 0 for w in values) or sum(values) <= 0:
        raise ValueError(f"weights must be finite numbers >= 0 with a positive sum, got {dict(weights)}")
    total = float(sum(values))
    return {g: w / total for g, w in weights.items()}


def sample_mixture(groups: Sequence[str | None] | pa.Array | pa.ChunkedArray, n_tokens: Sequence[int],
                   weights: Mapping[str, float], budget: int | None = None) -> np.ndarray:
    """Keep documents so that each group g fills its share w_g (normalised) of the tokens.

    Target T_g = budget * w_g. Without a budget, the largest budget that every weighted group can
    fill: B = min_g total_g / w_g (the scarcest group relative to its weight is taken whole). Within
    a group, documents are kept in order while the group's tokens kept before them are below T_g
    (the crossing document is kept, as in `sample_to_budget`); a group holding fewer than T_g tokens
    gives all it has. Groups without a positive weight are left out. A positively weighted group
    with no documents is a ValueError."""
    w = normalise_weights(weights)
    n = np.asarray(n_tokens, dtype=np.int64)
    encoded = _strings(groups).dictionary_encode()
    code = {g: i for i, g in enumerate(encoded.dictionary.to_pylist())}
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    weighted = {g: x for g, x in w.items() if x > 0}
    missing = sorted(g for g in weighted if g not in code)
    if missing:
        raise ValueError(f"weighted groups with no documents: {missing} (groups present: {sorted(code, key=str)})")
    members = {g: codes == code[g] for g in weighted}
    if budget is None:
        budget = min(n[m].sum() / weighted[g] for g, m in members.items())
    keep = np.zeros(len(n), dtype=bool)
    for g, m in members.items():
        tokens = n[m]
        keep[m] = np.cumsum(tokens) - tokens < budget * weighted[g]
    return keep


def assign_shards(sizes: Sequence[int], target_bytes: int) -> np.ndarray:
    """Shard index of each document, cutting the ordered documents consecutively: a shard closes
    with the first document that brings its size to >= target_bytes (so a document larger than the
    target closes a shard by itself, and only the last shard may be smaller than the target)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    ends = np.cumsum(sizes)
    shard = np.empty(len(sizes), dtype=np.int32)
    start, index = 0, 0
    while start < len(sizes):
        before = ends[start] - sizes[start]
        stop = int(np.searchsorted(ends, before + target_bytes, side="left")) + 1
        shard[start:stop] = index
        start, index = stop, index + 1
    return shard


def token_dtype(choice: str, vocab_size: int) -> str:
    """auto: uint16 when every token id fits (vocab_size <= 65536), else uint32."""
    if choice == "auto":
        return "uint16" if vocab_size <= 2**16 else "uint32"
    if choice == "uint16" and vocab_size > 2**16:
        raise ValueError(f"a vocabulary of {vocab_size} tokens does not fit uint16; use uint32 or auto")
    return choice


def plan_documents(candidates: pa.Table, *, shuffle: bool, seed: int, token_budget: int | None,
                   weights: Mapping[str, float] | None, shard_bytes: int, token_bytes: int | None) -> pa.Table:
    """The export plan (schemas.EXPORT_DOCUMENTS, in shard order) from candidates
    (doc_id, group, n_tokens, n_bytes): order them (`document_order`), sample (`sample_mixture` when
    weights are given, else `sample_to_budget`) and cut shards (`assign_shards`) by text bytes, or by
    token bytes n_tokens * token_bytes for token shards. position = order within the shard."""
    ordered = candidates.take(document_order(candidates["doc_id"], shuffle, seed))
    n_tokens = ordered["n_tokens"].to_numpy()
    keep = (sample_mixture(ordered["group"], n_tokens, weights, token_budget) if weights is not None
            else sample_to_budget(n_tokens, token_budget))
    plan = ordered.filter(pa.array(keep))
    sizes = plan["n_tokens"].to_numpy() * token_bytes if token_bytes else plan["n_bytes"].to_numpy()
    shard = assign_shards(sizes, shard_bytes)
    position = np.arange(len(shard)) - np.searchsorted(shard, shard, side="left")  # shards are contiguous
    plan = plan.append_column("shard", pa.array(shard, pa.int32())).append_column("position", pa.array(position))
    return schemas.validate(plan, schemas.EXPORT_DOCUMENTS)


def export_fingerprint(selection_id: str, export_config: dict, tokenizer_hash: str, mixture: dict | None) -> str:
    """16 hex of sha256 over everything that decides the export's content: the selection, the
    (resolved) export config, the tokenizer's files and the mixture's weights (not its file name)."""
    return short_digest({"selection_id": selection_id, "export": export_config, "tokenizer_hash": tokenizer_hash,
                    "mixture": mixture and {k: mixture[k] for k in ("group_by", "weights")}})


def plan_fingerprint(export_fp: str, plan: pa.Table) -> str:
    """16 hex of sha256 over the export fingerprint and the plan's (doc_id, shard, n_tokens): a shard
    written under the same plan fingerprint holds exactly the documents the plan puts there."""
    h = hashlib.sha256(export_fp.encode())
    h.update("\n".join(plan["doc_id"].to_pylist()).encode())
    for column in ("shard", "n_tokens"):
        h.update(plan[column].to_numpy().tobytes())
    return h.hexdigest()[:16]
