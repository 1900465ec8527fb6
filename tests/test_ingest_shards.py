"""Deduplication and sharding (pipeline.ingest.shards) against brute force on random staged rows."""
from __future__ import annotations

import random

import numpy as np
import pyarrow as pa

import schemas
from pipeline.ingest.shards import OCCURRENCE_ORDER, PAST_LAST_ID, collapse, shard_boundaries, shard_of


def _staged(rng: random.Random, n_docs: int, max_copies: int) -> list[dict]:
    rows = []
    for d in range(n_docs):
        doc_id = f"{rng.getrandbits(128):032x}"
        text = "t" * rng.randint(1, 300)
        for _ in range(rng.choice([1, 1, 1, 2, max_copies])):
            url = rng.choice([None, f"https://e.com/{rng.randint(0, 9)}"])
            rows.append({"doc_id": doc_id, "text": text, "url": url,
                         "host": None, "domain": None, "source_id": rng.choice([None, "x"]),
                         "source_file": f"/in/{rng.randint(0, 3)}.jsonl", "source_offset": rng.randint(1, 50),
                         "source_format": "jsonl", "n_bytes": len(text), "n_chars": len(text), "language": "en",
                         "language_score": 0.9, "metadata": rng.choice([None, '{"a": 1}'])})
    rng.shuffle(rows)
    return rows


def _brute_force_collapse(rows: list[dict]) -> list[dict]:
    keys = [name for name, _ in OCCURRENCE_ORDER]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["doc_id"], []).append(row)
    out = []
    for doc_id in sorted(groups):
        occurrences = sorted(groups[doc_id], key=lambda r: tuple((r[k] is None, r[k] or "") for k in keys))
        out.append({**occurrences[0], "duplicate_count": len(occurrences),
                    "duplicate_sources": [{k: r[k] for k in ("source_file", "source_offset", "url")}
                                          for r in occurrences[: schemas.MAX_SOURCES]]})
    return out


def test_collapse_keeps_the_first_occurrence_and_lists_every_source():
    for seed in range(5):
        rng = random.Random(seed)
        rows = _staged(rng, 200, max_copies=schemas.MAX_SOURCES + 6)
        table = pa.Table.from_pylist(rows, schema=schemas.STAGED_DOCS)
        rows = table.to_pylist()  # float32 scores as the table holds them
        docs = collapse(table)
        assert docs.schema.equals(schemas.DOCS, check_metadata=False)
        assert docs.to_pylist() == [{k: r[k] for k in schemas.DOCS.names} for r in _brute_force_collapse(rows)]
        assert max(docs["duplicate_count"].to_pylist()) == schemas.MAX_SOURCES + 6
        assert max(len(s) for s in docs["duplicate_sources"].to_pylist()) == schemas.MAX_SOURCES
    assert collapse(schemas.STAGED_DOCS.empty_table()).num_rows == 0


def test_boundaries_split_distinct_bytes_as_the_rule_says():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        n, shards = int(rng.integers(0, 300)), int(rng.integers(1, 9))
        ids = np.array([f"{rng.integers(0, 2**63):016x}{rng.integers(0, 2**63):016x}" for _ in range(n)])
        sizes = rng.integers(1, 5000, size=n)
        copies = rng.integers(0, n, size=n // 3) if n else np.array([], dtype=int)  # duplicates across files
        all_ids, all_sizes = np.concatenate([ids, ids[copies]]), np.concatenate([sizes, sizes[copies]])
        boundaries = shard_boundaries(all_ids, all_sizes, shards)
        assert len(boundaries) == shards - 1 and boundaries == sorted(boundaries)
        # Brute force: shard(d) = min(n - 1, floor(n * bytes before d / total)) over distinct documents.
        order = np.argsort(ids)
        before, total, expected = 0, int(sizes.sum()), {}
        for i in order:
            expected[ids[i]] = min(shards - 1, before * shards // total) if total else 0
            before += int(sizes[i])
        got = shard_of(list(ids), boundaries)
        assert dict(zip(ids, got.tolist())) == expected
        # Every shard's bytes are within one document of an even split.
        per_shard = np.bincount(got, weights=sizes, minlength=shards) if n else np.zeros(shards)
        assert not n or per_shard.max() - per_shard.min() <= 2 * sizes.max()
    assert shard_boundaries(np.array([], dtype="S32"), np.array([], dtype=np.int64), 3) == [PAST_LAST_ID] * 2
