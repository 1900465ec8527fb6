"""Every hash the pipeline computes, in one place: document ids, seeded per-document numbers, short
digests of configurations, and file checksums.

Each function fixes one convention. The values end up in the store (doc_ids, scorer ids, reference
splits, shard order), so a convention never changes once written: a new need gets a new function.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def doc_id(normalized_text: str) -> str:
    """The stable id of a document: blake2b-128 of its normalised UTF-8 text, as 32 hex digits.
    The same text from two crawls is one document."""
    return hashlib.blake2b(normalized_text.encode("utf-8"), digest_size=16).hexdigest()


def seeded_keys(doc_ids: Iterable[str], seed: int | str) -> np.ndarray:
    """key(d) = the first 8 bytes, as a little-endian uint64, of blake2b(f"{seed}:{d}").

    A document's key depends on the seed and its doc_id alone, so anything ordered or drawn by it
    (export's shuffle, BERTIN's draws) is the same in every run, in any order or partitioning, and
    adding documents never changes the others' keys."""
    digests = b"".join(hashlib.blake2b(f"{seed}:{d}".encode(), digest_size=8).digest() for d in doc_ids)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def seeded_uniforms(doc_ids: Iterable[str], seed: int | str) -> np.ndarray:
    """One uniform number in [0, 1) per document: the top 53 bits of `seeded_keys` / 2**53
    (every float64 in the grid is exact)."""
    return (seeded_keys(doc_ids, seed) >> np.uint64(11)).astype(np.float64) / 2.0**53


def reference_split_key(doc_id: str, seed: int = 0) -> float:
    """u(seed, doc_id) in [0, 1) of the reference split: blake2b-64 of f"{seed}\\x00{doc_id}", read
    big-endian, / 2**64. A document is in the split iff u < fraction.

    Kept apart from `seeded_uniforms` because the split of every reference model already trained
    (and recorded in reference_splits/) was drawn with it."""
    digest = hashlib.blake2b(f"{seed}\x00{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def canonical_json(obj: Any) -> bytes:
    """JSON with sorted keys and no spaces: the same object always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def short_digest(obj: Any) -> str:
    """16 hex digits of sha256 over `canonical_json(obj)`: the id of a configuration (a scorer, a
    selection, an export, ingest settings)."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()[:16]


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 (64 hex) of a local file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def path_key(path: str) -> str:
    """16 hex digits naming a file by its path (ingest's per-input-file staging names)."""
    return hashlib.sha1(path.encode("utf-8")).hexdigest()[:16]
