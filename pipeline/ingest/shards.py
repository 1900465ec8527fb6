"""Deduplication and sharding in one pass over the staged documents: pure functions on Arrow data.

Every staged file (one per input chunk) is sorted by doc_id. The shards split the doc_id range at
boundaries chosen so that each holds the same bytes of distinct documents: shard(d) =
min(n - 1, floor(n * B / total)), B = the bytes of the distinct documents before d in doc_id order
(doc_id is a hash, so that order is a fixed random order). A shard's task reads its doc_id range from
every staged file, collapses duplicates (`collapse`) and writes one sorted file: the staged files are
the shuffle's map outputs, and each shard is one reduce task. The boundaries come from the doc_id and
n_bytes columns alone, never the text.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import schemas

# Above every doc_id (hex digits sort before "~"): the bound of shards left empty when there are
# fewer distinct documents than shards.
PAST_LAST_ID = "~"
# The order in which occurrences of one document are ranked: the first is the document's row.
OCCURRENCE_ORDER = [("doc_id", "ascending"), ("source_file", "ascending"), ("source_offset", "ascending"),
                    ("url", "ascending"), ("source_id", "ascending"), ("metadata", "ascending")]


def shard_boundaries(doc_ids: np.ndarray, n_bytes: np.ndarray, num_shards: int) -> list[str]:
    """The `num_shards - 1` doc_ids at which shards 1.. start (PAST_LAST_ID for an empty shard).

    `doc_ids` may repeat (duplicates across staged files) and may be prefixes of doc_ids (buckets,
    with `n_bytes` their summed bytes): a document belongs to the last boundary <= its doc_id."""
    ids, first = np.unique(np.asarray(doc_ids, dtype="S"), return_index=True)
    sizes = np.asarray(n_bytes, dtype=np.int64)[first]
    total = int(sizes.sum())
    if total == 0:
        shard = np.zeros(len(ids), dtype=np.int64)
    else:
        before = np.cumsum(sizes) - sizes
        shard = np.minimum(num_shards - 1, before * num_shards // total)
    starts = np.searchsorted(shard, np.arange(1, num_shards), side="left")
    return [ids[i].decode() if i < len(ids) else PAST_LAST_ID for i in starts]


def shard_range(boundaries: list[str], shard: int) -> tuple[str | None, str | None]:
    """[low, high) of doc_ids in `shard`; None: unbounded on that side."""
    low = boundaries[shard - 1] if shard > 0 else None
    high = boundaries[shard] if shard < len(boundaries) else None
    return low, high


def shard_of(doc_ids: list[str], boundaries: list[str]) -> np.ndarray:
    """The shard of each doc_id under `boundaries`."""
    return np.searchsorted(np.asarray(boundaries, dtype="S"), np.asarray(doc_ids, dtype="S"), side="right")


def collapse(staged: pa.Table) -> pa.Table:
    """Staged rows (STAGED_DOCS, duplicates included) -> one DOCS row per doc_id, sorted by doc_id.

    A document's row is its first occurrence in OCCURRENCE_ORDER (the smallest source file, then
    offset); duplicate_count counts every occurrence and duplicate_sources lists them in that order,
    at most schemas.MAX_SOURCES."""
    n = staged.num_rows
    if n == 0:
        return schemas.DOCS.empty_table()
    # Indices, not a sorted copy: the text is copied once, into the output.
    order = pc.sort_indices(staged, sort_keys=OCCURRENCE_ORDER)
    ids = staged.column("doc_id").take(order).combine_chunks()
    new_doc = np.ones(n, dtype=bool)
    if n > 1:
        new_doc[1:] = pc.not_equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(new_doc)
    counts = np.diff(np.append(starts, n))
    rank = np.arange(n) - np.repeat(starts, counts)  # 0 for a document's first occurrence
    listed = order.filter(pa.array(rank < schemas.MAX_SOURCES))
    sources = pa.StructArray.from_arrays(
        [staged.column(name).take(listed).combine_chunks() for name in ("source_file", "source_offset", "url")],
        fields=list(schemas.SOURCE))
    offsets = np.concatenate([[0], np.cumsum(np.minimum(counts, schemas.MAX_SOURCES))]).astype(np.int32)
    duplicate_sources = pa.ListArray.from_arrays(pa.array(offsets), sources, type=pa.list_(schemas.SOURCE))
    docs = (staged.select(schemas.STAGED_DOCS.names).take(order.take(pa.array(starts)))
            .append_column("duplicate_count", pa.array(counts, pa.int64()))
            .append_column("duplicate_sources", duplicate_sources))
    return schemas.validate(docs, schemas.DOCS)

