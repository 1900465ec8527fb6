"""Export stage: the kept documents of a selection -> training shards + manifest, in `exports/<name>/`.

    shard-00000.parquet | shard-00000.jsonl.zst | shard-00000.bin + shard-00000.idx
    documents.parquet          the plan: every exported doc_id with its shard and position
    manifest.json              lineage, counts, group shares and every file's sha256 (written last)
    _export.json               the export's fingerprint (written first, so an unfinished export has one)
    _shards/shard-00000.json   a finished shard's stats (resume)

Three passes. (1) Spark counts each kept document's tokens under the export tokenizer. (2) The driver
plans with the pure functions below over (doc_id, group, n_tokens, n_bytes), no text: the order (a
seeded hash, independent of partitioning), the token-budget or mixture sample, and the shard cuts.
(3) Spark joins the text back to the plan and writes each shard whole inside one task, atomically;
a re-run of the same plan skips the shards already finished.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import schemas
from pipeline.config import Config, ExportConfig
from pipeline.errors import UserError
from pipeline.spark import run_action
from pipeline.store import Store, code_version, new_run_record, utc_now

STAGE = "export"
TOKENIZE_BATCH = 256          # texts per tokenizer call: bounds the memory of token lists
PARQUET_ROW_GROUP = 1024      # fixed row groups: a shard's bytes do not depend on Spark's batch cuts
_CANDIDATES_DDL = "doc_id string, group string, n_tokens long, n_bytes long"


# --------------------------------------------------------------------------- the plan (pure)

def _strings(values: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.cast(pa.string()) if isinstance(values, pa.Array) else pa.array(values, pa.string())


def shuffle_keys(doc_ids: Sequence[str], seed: int) -> np.ndarray:
    """key(d) = the first 8 bytes (little-endian uint64) of blake2b(f"{seed}:{d}").

    A document's key depends only on the seed and its doc_id, so the shuffled order is the same
    however Spark partitioned the documents, and adding documents never reorders the others."""
    digests = b"".join(hashlib.blake2b(f"{seed}:{d}".encode(), digest_size=8).digest() for d in doc_ids)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def document_order(doc_ids: Sequence[str] | pa.Array | pa.ChunkedArray, shuffle: bool, seed: int) -> np.ndarray:
    """Indices of the documents in export order: ascending (shuffle key, doc_id), or doc_id alone
    when not shuffling. doc_id breaks ties between 64-bit keys, so the order is total."""
    ids = _strings(doc_ids)
    if not shuffle:
        return pc.sort_indices(ids).to_numpy()
    table = pa.table({"key": shuffle_keys(ids.to_pylist(), seed), "doc_id": ids})
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


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def export_fingerprint(selection_id: str, export_config: dict, tokenizer_hash: str, mixture: dict | None) -> str:
    """16 hex of sha256 over everything that decides the export's content: the selection, the
    (resolved) export config, the tokenizer's files and the mixture's weights (not its file name)."""
    return _digest({"selection_id": selection_id, "export": export_config, "tokenizer_hash": tokenizer_hash,
                    "mixture": mixture and {k: mixture[k] for k in ("group_by", "weights")}})


def plan_fingerprint(export_fp: str, plan: pa.Table) -> str:
    """16 hex of sha256 over the export fingerprint and the plan's (doc_id, shard, n_tokens): a shard
    written under the same plan fingerprint holds exactly the documents the plan puts there."""
    h = hashlib.sha256(export_fp.encode())
    h.update("\n".join(plan["doc_id"].to_pylist()).encode())
    for column in ("shard", "n_tokens"):
        h.update(plan[column].to_numpy().tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- inputs

def read_selection(store: Store, name: str) -> dict:
    """The selection's `_selection.json`; a UserError naming `curate select` when it is missing."""
    if not store.exists("selections", name, "_selection.json") or \
            not store.list_files("selections", name, suffix=".parquet"):
        raise UserError(f"selection {name!r} not found in {store.uri}/selections: run `curate select` first "
                        "(or set export.selection to an existing one)")
    info = store.read_json("selections", name, "_selection.json")
    return {**info, "name": name}


def read_mixture(store: Store, ref: str, default_group_by: str) -> dict:
    """A mixture {"group_by", "weights"} from a JSON file path or store/mixtures/<ref>.json,
    with its weights normalised."""
    try:
        if os.path.isfile(ref):
            source, obj = ref, json.loads(Path(ref).read_text(encoding="utf-8"))
        elif store.exists("mixtures", f"{ref}.json"):
            source, obj = store.spark_path("mixtures", f"{ref}.json"), store.read_json("mixtures", f"{ref}.json")
        else:
            raise UserError(f"export.mixture {ref!r} is neither a file nor {store.uri}/mixtures/{ref}.json")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"export.mixture {ref!r}: not valid JSON: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("weights"), dict) or \
            not isinstance(obj.get("group_by") or default_group_by, str):
        raise UserError(f"export.mixture {source}: expected {{\"group_by\": \"domain\", \"weights\": "
                        f"{{\"a.org\": 0.7, ...}}}}")
    try:
        weights = normalise_weights(obj["weights"])
    except ValueError as e:
        raise UserError(f"export.mixture {source}: {e}") from None
    return {"source": source, "group_by": obj.get("group_by") or default_group_by, "weights": weights}


_TOKENIZERS: dict[str, Any] = {}  # one tokenizer per Python worker (and one on the driver)


def _tokenizer(path: str):
    if path not in _TOKENIZERS:
        from pipeline.scoring.core import load_tokenizer
        _TOKENIZERS[path] = load_tokenizer(path)
    return _TOKENIZERS[path]


def load_export_tokenizer(path: str | None):
    if not path:
        raise UserError("export: set export.tokenizer (a model or tokenizer directory) or score.model")
    if not os.path.isdir(path):
        raise UserError(f"export.tokenizer {path!r} is not a directory")
    try:
        return _tokenizer(path)
    except Exception as e:  # transformers raises many kinds for a folder without tokenizer files
        raise UserError(f"export.tokenizer {path!r}: no tokenizer could be loaded from it: "
                        f"{(str(e).splitlines() or [type(e).__name__])[0]}") from None


def token_ids(tokenizer, texts: list[str], eos_id: int | None) -> Iterator[list[int]]:
    """Each text's token ids without special tokens, then `eos_id` unless None."""
    tail = [] if eos_id is None else [eos_id]
    for i in range(0, len(texts), TOKENIZE_BATCH):
        batch = tokenizer(texts[i:i + TOKENIZE_BATCH], add_special_tokens=False, return_attention_mask=False)
        for ids in batch["input_ids"]:
            yield list(ids) + tail


# --------------------------------------------------------------------------- Spark tasks

def count_tokens(tokenizer_dir: str, eos_id: int | None, docs_done) -> Callable:
    """mapInArrow function: (doc_id, group, text, n_bytes) -> (doc_id, group, n_tokens, n_bytes)."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        tokenizer = _tokenizer(tokenizer_dir)
        for batch in batches:
            n_tokens = [len(ids) for ids in token_ids(tokenizer, batch.column("text").to_pylist(), eos_id)]
            docs_done.add(batch.num_rows)
            yield pa.RecordBatch.from_arrays(
                [batch.column("doc_id").cast(pa.string()), batch.column("group").cast(pa.string()),
                 pa.array(n_tokens, pa.int64()), batch.column("n_bytes")],
                names=["doc_id", "group", "n_tokens", "n_bytes"])
    return run


def _by_shard(batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Split batches sorted by (shard, position) where the shard changes."""
    for batch in batches:
        if not batch.num_rows:
            continue
        shard = batch.column("shard").to_numpy()
        cuts = [0, *(np.flatnonzero(np.diff(shard)) + 1), len(shard)]
        for start, stop in zip(cuts, cuts[1:]):
            yield int(shard[start]), batch.slice(start, stop - start)


def write_shards(store_uri: str, name: str, cfg_json: str, tokenizer_dir: str, eos_id: int | None,
                 dtype: str, plan_fp: str, shards_done) -> Callable:
    """mapInArrow function: write every shard of this partition (rows sorted by shard, position) and
    return one (shard, stats JSON) row per shard; each shard's stats also go to _shards/."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        cfg = ExportConfig.model_validate_json(cfg_json)
        store = Store(store_uri)
        tokenizer = _tokenizer(tokenizer_dir) if cfg.format == "tokens" else None
        for shard, chunks in itertools.groupby(_by_shard(batches), key=lambda c: c[0]):
            stats = write_shard(store, ("exports", name), cfg, shard, (c for _, c in chunks),
                                tokenizer=tokenizer, eos_id=eos_id, dtype=dtype)
            store.write_json({**stats, "plan_fingerprint": plan_fp}, "exports", name, "_shards",
                             f"shard-{shard:05d}.json")
            shards_done.add(1)
            yield pa.RecordBatch.from_pydict({"shard": [shard], "stats": [json.dumps(stats)]},
                                             schema=pa.schema([("shard", pa.int32()), ("stats", pa.string())]))
    return run


def write_shard(store: Store, out: tuple[str, ...], cfg: ExportConfig, shard: int,
                chunks: Iterator[pa.RecordBatch], *, tokenizer=None, eos_id: int | None = None,
                dtype: str = "uint32") -> dict:
    """Write one shard's files atomically from its rows in plan order; returns its stats:
    shard, docs, tokens, text_bytes and files [{name, bytes, sha256}]."""
    stem = f"shard-{shard:05d}"
    tally = {"docs": 0, "tokens": 0, "text_bytes": 0}

    def counted() -> Iterator[pa.RecordBatch]:
        for chunk in chunks:
            tally["docs"] += chunk.num_rows
            tally["tokens"] += pc.sum(chunk.column("n_tokens")).as_py()
            tally["text_bytes"] += pc.sum(chunk.column("n_bytes")).as_py()
            yield chunk

    if cfg.format == "parquet":
        names = [_write_parquet(store, out, stem + ".parquet", counted(), cfg.columns)]
    elif cfg.format == "jsonl.zst":
        names = [_write_jsonl_zst(store, out, stem + ".jsonl.zst", counted(), cfg.columns)]
    else:
        names = _write_tokens(store, out, stem, counted(), tokenizer, eos_id, dtype)
    return {"shard": shard, **tally, "files": [{"name": n, **file_digest(store, *out, n)} for n in names]}


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


def file_digest(store: Store, *rel: str) -> dict:
    """{bytes, sha256} of a file as it is on disk."""
    h, size = hashlib.sha256(), 0
    with store.fs.open_input_stream(store.path(*rel), compression=None) as f:
        while block := f.read(1 << 22):
            h.update(block)
            size += len(block)
    return {"bytes": size, "sha256": h.hexdigest()}


# --------------------------------------------------------------------------- the stage

@dataclass
class ExportResult:
    run_id: str
    name: str
    out_dir: str
    counts: dict
    timings: dict
    skipped: bool
    manifest: dict


def run_export(config: Config, spark, progress: Callable[[str, int, int], None] | None = None,
               overwrite: bool = False) -> ExportResult:
    """Export the kept documents of `export.selection` into exports/<export.name>/ (see the module doc).

    A finished export with the same fingerprint is skipped and an unfinished one resumes, with or
    without `overwrite`. A different export under the same name is a UserError unless `overwrite`,
    which deletes it first.
    `progress(phase, done, total)`: tokenize (documents), write (shards)."""
    store, cfg = Store(config.store), config.export
    out = ("exports", cfg.name)
    t0 = time.time()
    report = progress or (lambda phase, done, total: None)
    if not store.list_files("docs", suffix=".parquet"):
        raise UserError(f"no documents in {store.uri}/docs: run `curate ingest` first")
    selection = read_selection(store, cfg.selection or config.select.name)
    tokenizer_dir = cfg.tokenizer or config.score.model
    tokenizer = load_export_tokenizer(tokenizer_dir)
    if cfg.append_eos and tokenizer.eos_token_id is None:
        raise UserError(f"the tokenizer in {tokenizer_dir} has no EOS token: set export.append_eos: false")
    eos_id = tokenizer.eos_token_id if cfg.append_eos else None
    try:
        dtype = token_dtype(cfg.token_dtype, len(tokenizer))
    except ValueError as e:
        raise UserError(f"export.token_dtype: {e}") from None
    mixture = read_mixture(store, cfg.mixture, cfg.group_by) if cfg.mixture else None
    group_by = mixture["group_by"] if mixture else cfg.group_by
    resolved = cfg.model_copy(update={"selection": selection["name"], "tokenizer": str(tokenizer_dir)})
    from pipeline.models import tokenizer_hash
    tok_hash = tokenizer_hash(tokenizer_dir)
    fingerprint = export_fingerprint(selection.get("selection_id"), resolved.model_dump(mode="json"), tok_hash,
                                     mixture)

    existing = _existing_fingerprint(store, out)
    if existing is not None and existing != fingerprint:
        if not overwrite:
            raise UserError(f"{store.uri}/exports/{cfg.name} holds a different export (another selection, "
                            "tokenizer or export config): pass --overwrite (overwrite=True) to replace it, or "
                            "set another export.name")
        store.delete(*out)
        existing = None
    record = new_run_record(STAGE, config, [store.spark_path("docs"), store.spark_path("selections", selection["name"])])
    run_id = record["run_id"]
    out_dir = store.spark_path(*out)
    manifest = store.read_json(*out, "manifest.json") if store.exists(*out, "manifest.json") else None
    if existing == fingerprint and manifest and all(_files_intact(store, out, s["files"]) for s in manifest["shards"]):
        counts = {**manifest["counts"], "shards_written": 0, "shards_reused": manifest["counts"]["shards"]}
        timings = {"total_s": round(time.time() - t0, 3)}
        store.finish_run(record, {**counts, "skipped": 1}, timings)
        return ExportResult(run_id, cfg.name, out_dir, counts, timings, True, manifest)

    with store.recorded_run(record):
        store.write_json({"fingerprint": fingerprint, "config": resolved.model_dump(mode="json")},
                         *out, "_export.json")
        store.delete(*out, "manifest.json")  # a manifest says the export is complete: it is written last
        store.clear_temporary(*out)  # one job at a time writes an export
        docs = spark.read.parquet(store.spark_path("docs", "part-*.parquet"))
        _check_columns(docs.columns, cfg, group_by, mixture)
        job = f"curate-export-{run_id}"

        candidates = _count_candidates(spark, store, docs, selection["name"], group_by, tokenizer_dir, eos_id,
                                       job, report)
        t_tokenize = time.time()

        try:
            plan = plan_documents(candidates, shuffle=cfg.shuffle, seed=cfg.seed, token_budget=cfg.token_budget,
                                  weights=mixture and mixture["weights"], shard_bytes=cfg.shard_bytes,
                                  token_bytes=np.dtype(dtype).itemsize if cfg.format == "tokens" else None)
        except ValueError as e:  # a weighted group without documents
            raise UserError(f"export.mixture {mixture['source']} (groups by {group_by!r}): {e}") from None
        store.write_table(plan, schemas.EXPORT_DOCUMENTS, *out, "documents.parquet")
        plan_fp = plan_fingerprint(fingerprint, plan)
        t_plan = time.time()

        planned_docs = np.bincount(plan["shard"].to_numpy())
        reused = _finished_shards(store, out, len(planned_docs), plan_fp)
        written = _write_missing_shards(spark, store, cfg, docs, plan_fp, len(planned_docs), reused,
                                        tokenizer_dir, eos_id, dtype, job, report)
        shards = {**reused, **written}
        short = [s for s, n in enumerate(planned_docs) if s not in shards or shards[s]["docs"] != n]
        if short:
            raise UserError(f"shards {short} hold fewer documents than planned: docs changed during the export; "
                            "re-run the same command")
        t_write = time.time()

        manifest = _manifest(cfg=resolved, fingerprint=fingerprint, selection=selection, plan=plan,
                             shards=[shards[s] for s in sorted(shards)], n_candidates=candidates.num_rows,
                             mixture=mixture, group_by=group_by, tokenizer_dir=tokenizer_dir, tok_hash=tok_hash,
                             vocab_size=len(tokenizer), eos_id=eos_id, dtype=dtype)
        store.write_json(manifest, *out, "manifest.json")
        counts = {**manifest["counts"], "shards_written": len(written), "shards_reused": len(reused)}
        timings = {"tokenize_s": round(t_tokenize - t0, 3), "plan_s": round(t_plan - t_tokenize, 3),
                   "write_s": round(t_write - t_plan, 3), "total_s": round(time.time() - t0, 3)}
        store.finish_run(record, counts, timings)
        return ExportResult(run_id, cfg.name, out_dir, counts, timings, False, manifest)


def _count_candidates(spark, store: Store, docs, selection: str, group_by: str, tokenizer_dir: str,
                      eos_id: int | None, job: str, report: Callable) -> pa.Table:
    """Pass (1): (doc_id, group, n_tokens, n_bytes) of every document the selection keeps."""
    from pyspark.sql import functions as F
    kept = (spark.read.parquet(store.spark_path("selections", selection, "part-*.parquet"))
            .where(F.col("kept")).select("doc_id").distinct())
    n_kept = kept.count()
    if not n_kept:
        raise UserError(f"selection {selection!r} keeps no documents: nothing to export")
    docs_done = spark.sparkContext.accumulator(0)
    counted = (docs.join(kept, "doc_id")
               .select("doc_id", F.col(group_by).cast("string").alias("group"), "text", "n_bytes")
               .mapInArrow(count_tokens(tokenizer_dir, eos_id, docs_done), _CANDIDATES_DDL))
    report("tokenize", 0, n_kept)
    candidates = run_action(spark, job, "counting tokens", counted.toArrow,
                            lambda: report("tokenize", docs_done.value, n_kept), _failure("counting tokens"))
    if candidates.num_rows < n_kept:
        raise UserError(f"selection {selection!r} keeps {n_kept - candidates.num_rows} document(s) that are no "
                        "longer in docs: re-run `curate select`")
    return candidates


def _write_missing_shards(spark, store: Store, cfg: ExportConfig, docs, plan_fp: str, n_shards: int,
                          reused: dict[int, dict], tokenizer_dir: str, eos_id: int | None, dtype: str, job: str,
                          report: Callable) -> dict[int, dict]:
    """Pass (3): write the shards of documents.parquet not in `reused`; returns their stats by shard."""
    from pyspark.sql import functions as F
    todo = [s for s in range(n_shards) if s not in reused]
    report("write", len(reused), n_shards)
    if not todo:
        return {}
    out = ("exports", cfg.name)
    # n_bytes comes from docs, so that export.columns may name it without a clash
    wanted = ["n_bytes", *(["text"] if cfg.format == "tokens" else cfg.columns)]
    parallelism = spark.sparkContext.defaultParallelism
    rows = (spark.read.parquet(store.spark_path(*out, "documents.parquet"))
            .where(F.col("shard").isin(todo)).select("doc_id", "shard", "position", "n_tokens")
            .join(docs.select("doc_id", *[c for c in dict.fromkeys(wanted) if c != "doc_id"]), "doc_id")
            .repartition(min(len(todo), 4 * parallelism), "shard")
            .sortWithinPartitions("shard", "position"))
    shards_done = spark.sparkContext.accumulator(0)
    fn = write_shards(store.uri, cfg.name, cfg.model_dump_json(), tokenizer_dir, eos_id, dtype, plan_fp, shards_done)
    result = run_action(spark, job, "writing shards", rows.mapInArrow(fn, "shard int, stats string").collect,
                        lambda: report("write", len(reused) + shards_done.value, n_shards), _failure("writing shards"))
    return {r["shard"]: json.loads(r["stats"]) for r in result}


def _failure(what: str) -> Callable[[str], str]:
    return lambda reason: (f"export failed while {what}: {reason}. "
                           "Re-run the same command to resume (finished shards are kept).")


def _existing_fingerprint(store: Store, out: tuple[str, ...]) -> str | None:
    """The fingerprint of the export already in `out` (finished or not); None when there is none."""
    for name in ("manifest.json", "_export.json"):
        if store.exists(*out, name):
            return store.read_json(*out, name).get("fingerprint", "")
    return "" if store.exists(*out) and store.list_files(*out) else None


def _check_columns(available: list[str], cfg: ExportConfig, group_by: str, mixture: dict | None) -> None:
    if cfg.format != "tokens":
        missing = [c for c in cfg.columns if c not in available]
        if missing:
            raise UserError(f"export.columns {missing} are not docs columns (available: {', '.join(available)})")
    if group_by not in available:
        where = f"the group_by of mixture {mixture['source']}" if mixture else "export.group_by"
        raise UserError(f"{where} {group_by!r} is not a docs column (available: {', '.join(available)})")


def _files_intact(store: Store, out: tuple[str, ...], files: list[dict]) -> bool:
    """Every file is there with the size its stats recorded (a cheap check; the manifest has the sha256)."""
    return all(store.fs.get_file_info(store.path(*out, f["name"])).size == f["bytes"] for f in files)


def _finished_shards(store: Store, out: tuple[str, ...], n_shards: int, plan_fp: str) -> dict[int, dict]:
    """Stats of the shards finished under this plan whose files are all there with their sizes;
    stats of other plans, and shard files past this plan's last shard, are deleted."""
    finished = {}
    for name in store.list_files(*out, "_shards", suffix=".json"):
        stats = store.read_json(*out, "_shards", name)
        if stats.pop("plan_fingerprint", None) != plan_fp or stats["shard"] >= n_shards:
            store.delete(*out, "_shards", name)
        elif _files_intact(store, out, stats["files"]):
            finished[stats["shard"]] = stats
    for name in store.list_files(*out):
        if name.startswith("shard-") and int(name[6:11]) >= n_shards:
            store.delete(*out, name)
    return finished


def _manifest(*, cfg: ExportConfig, fingerprint: str, selection: dict, plan: pa.Table, shards: list[dict],
              n_candidates: int, mixture: dict | None, group_by: str, tokenizer_dir: str, tok_hash: str,
              vocab_size: int, eos_id: int | None, dtype: str) -> dict:
    n_tokens = int(pc.sum(plan["n_tokens"]).as_py() or 0)
    per_group = plan.group_by("group", use_threads=False).aggregate([("doc_id", "count"), ("n_tokens", "sum")])
    groups = sorted(({"group": g, "docs": d, "tokens": t, "token_share": t / n_tokens if n_tokens else 0.0}
                     for g, d, t in zip(per_group["group"].to_pylist(), per_group["doc_id_count"].to_pylist(),
                                        per_group["n_tokens_sum"].to_pylist())),
                    key=lambda r: (r["group"] is None, r["group"] or ""))
    shares = {r["group"]: r["token_share"] for r in groups}
    return {
        "name": cfg.name, "fingerprint": fingerprint, "format": cfg.format,
        "columns": cfg.columns if cfg.format != "tokens" else None,
        "tokens": {"dtype": dtype, "byte_order": "little", "append_eos": cfg.append_eos, "eos_token_id": eos_id,
                   "index": {"suffix": ".idx", "dtype": "uint64", "byte_order": "little",
                             "entries": "n_docs + 1 document start offsets in tokens; the last is the "
                                        "shard's token count"}} if cfg.format == "tokens" else None,
        "tokenizer": {"path": str(tokenizer_dir), "hash": tok_hash, "vocab_size": vocab_size},
        "selection": {"name": selection["name"], "selection_id": selection.get("selection_id"),
                      "scorer_id": selection.get("scorer_id")},
        "seed": cfg.seed, "shuffle": cfg.shuffle, "token_budget": cfg.token_budget, "group_by": group_by,
        "mixture": {"source": mixture["source"], "group_by": mixture["group_by"], "weights": mixture["weights"],
                    "achieved": {g: shares.get(g, 0.0) for g in mixture["weights"]}} if mixture else None,
        "counts": {"candidate_docs": n_candidates, "sampled_out_docs": n_candidates - plan.num_rows,
                   "docs": plan.num_rows, "tokens": n_tokens,
                   "text_bytes": int(pc.sum(plan["n_bytes"]).as_py() or 0),
                   "bytes": sum(f["bytes"] for s in shards for f in s["files"]), "shards": len(shards)},
        "groups": groups,
        "shards": shards,
        "config": cfg.model_dump(mode="json"),
        "code_version": code_version(), "created_at": utc_now(),
    }
