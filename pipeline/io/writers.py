"""Training-shard writers: one shard's rows (in plan order) -> its files, written atomically.

    parquet     shard-NNNNN.parquet, the chosen docs columns, fixed row groups
    jsonl.zst   shard-NNNNN.jsonl.zst, one JSON object per line
    tokens      shard-NNNNN.bin (flat little-endian uint16/uint32 token ids, EOS after each document)
                + shard-NNNNN.idx (n_docs + 1 uint64 document start offsets)
"""
from __future__ import annotations

import json
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import schemas
from pipeline.errors import UserError
from pipeline.store import Store

TOKENIZE_BATCH = 256          # texts per tokenizer call: bounds the memory of token lists
PARQUET_ROW_GROUP = 1024      # fixed row groups: a shard's bytes do not depend on Spark's batch cuts


def token_ids(tokenizer, texts: list[str], eos_id: int | None) -> Iterator[list[int]]:
    """Each text's token ids without special tokens, then `eos_id` unless None."""
    tail = [] if eos_id is None else [eos_id]
    for i in range(0, len(texts), TOKENIZE_BATCH):
        batch = tokenizer(texts[i:i + TOKENIZE_BATCH], add_special_tokens=False, return_attention_mask=False)
        for ids in batch["input_ids"]:
            yield list(ids) + tail


def write_shard(store: Store, out: tuple[str, ...], fmt: str, columns: list[str], shard: int,
                chunks: Iterator[pa.RecordBatch], *, tokenizer=None, eos_id: int | None = None,
                dtype: str = "uint32") -> dict:
    """Write one shard's files atomically, in format `fmt`, from its rows in plan order (the docs
    `columns`, or text for tokens, plus n_tokens and n_bytes); returns its stats: shard, docs,
    tokens, text_bytes and files [{name, bytes, sha256}]."""
    stem = f"shard-{shard:05d}"
    tally = {"docs": 0, "tokens": 0, "text_bytes": 0}

    def counted() -> Iterator[pa.RecordBatch]:
        for chunk in chunks:
            tally["docs"] += chunk.num_rows
            tally["tokens"] += pc.sum(chunk.column("n_tokens")).as_py()
            tally["text_bytes"] += pc.sum(chunk.column("n_bytes")).as_py()
            yield chunk

    if fmt == "parquet":
        names = [_write_parquet(store, out, stem + ".parquet", counted(), columns)]
    elif fmt == "jsonl.zst":
        names = [_write_jsonl_zst(store, out, stem + ".jsonl.zst", counted(), columns)]
    elif fmt == "tokens":
        names = _write_tokens(store, out, stem, counted(), tokenizer, eos_id, dtype)
    else:
        raise ValueError(f"unknown shard format {fmt!r}")
    return {"shard": shard, **tally, "files": [{"name": n, **store.file_digest(*out, n)} for n in names]}


def _write_parquet(store: Store, out, name: str, chunks, columns: list[str]) -> str:
    schema = pa.schema([schemas.DOCS.field(c) for c in columns])

    def write(path):
        pending = schema.empty_table()
        with pq.ParquetWriter(path, schema, filesystem=store.fs, compression="zstd") as writer:
            for chunk in chunks:
                pending = pa.concat_tables([pending, pa.Table.from_batches([chunk.select(columns)]).cast(schema)])
                while pending.num_rows >= PARQUET_ROW_GROUP:
                    writer.write_table(pending.slice(0, PARQUET_ROW_GROUP))
                    pending = pending.slice(PARQUET_ROW_GROUP)
            if pending.num_rows:
                writer.write_table(pending)
    store.atomic_write((*out, name), write)
    return name


def _write_jsonl_zst(store: Store, out, name: str, chunks, columns: list[str]) -> str:
    import zstandard

    def write(path):
        # compression=None: pyarrow would otherwise compress a second time, detecting .zst in the name
        with store.fs.open_output_stream(path, compression=None) as raw, \
                zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False) as zf:
            for chunk in chunks:
                for row in chunk.select(columns).to_pylist():
                    zf.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    store.atomic_write((*out, name), write)
    return name


def _write_tokens(store: Store, out, stem: str, chunks, tokenizer, eos_id: int | None, dtype: str) -> list[str]:
    offsets = [0]
    little_endian = np.dtype(dtype).newbyteorder("<")

    def write(path):
        with store.fs.open_output_stream(path, compression=None) as f:
            for chunk in chunks:
                planned = chunk.column("n_tokens").to_pylist()
                texts = chunk.column("text").to_pylist()
                for ids, n, doc_id in zip(token_ids(tokenizer, texts, eos_id), planned,
                                          chunk.column("doc_id").to_pylist()):
                    if len(ids) != n:  # the tokenizer files changed between the count and the write
                        raise UserError(f"document {doc_id}: {len(ids)} tokens now, {n} when planned")
                    f.write(np.asarray(ids, dtype=little_endian).tobytes())
                    offsets.append(offsets[-1] + n)
    store.atomic_write((*out, stem + ".bin"), write)

    def write_index(path):
        with store.fs.open_output_stream(path, compression=None) as f:
            f.write(np.asarray(offsets, dtype="<u8").tobytes())
    store.atomic_write((*out, stem + ".idx"), write_index)
    return [stem + ".bin", stem + ".idx"]
