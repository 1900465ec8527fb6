"""Ingest stage: raw input files -> `store/docs` (normalised, hashed, language-tagged, deduplicated, sharded).

Two phases, each resumable:
1. Read: every input file is one chunk or, when large, several (`pipeline.io.chunks`; the plan of a
   large file is kept in `_staging/ingest-plans/`). One Spark task per chunk reads it, normalises every
   record, tags its language with fastText and writes `_staging/ingest/<chunk_key>.parquet` (sorted by
   doc_id) plus its rejected rows to `quarantine/part-<chunk_key>.parquet`; a marker `<chunk_key>.json`
   written last says the chunk is finished. A re-run skips chunks whose marker matches the file's size,
   mtime, the plan and the settings, so a run killed inside a large file resumes inside it.
2. Dedup and shard, in one shuffle (`pipeline.ingest.shards`): shard boundaries in doc_id order from the
   doc_id and n_bytes columns alone, then one task per shard reads its doc_id range from every staged
   file, collapses exact duplicates (same `doc_id`, the first occurrence kept with the list of all
   sources) and writes its file sorted by doc_id, so the same input always gives the same shards.

Counts reconcile: input rows = docs + duplicates + quarantine rows + skipped records (WARC requests,
metadata, warcinfo: records that never hold a page, counted apart from bad data).
"""
from __future__ import annotations

import math
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

import schemas
from pipeline.config import Config, IngestConfig, apply_overrides
from pipeline.errors import UserError
from pipeline.hashing import path_key, short_digest
from pipeline.ingest.documents import IngestSettings, language_identifier, prepare_document, rejected_row
from pipeline.ingest.shards import collapse, shard_boundaries, shard_range
from pipeline.io import InputFile, RawDoc, Rejected, Skipped
from pipeline.io.chunks import Chunk, chunks_from_plan, needs_plan, plan_chunks, plan_record, read_chunk, read_run, runs
from pipeline.spark import is_small_local, map_tasks
from pipeline.stage import Report, StageResult, StageRun
from pipeline.store import Store, utc_now
from schemas import sidecars

STAGE = "ingest"
PLANS = "ingest-plans"
BATCH_DOCS = 2_000         # documents per language-ID call
STAGED_ROW_GROUP = 1_000   # rows per row group of a staged file: what a shard's range read skips by
# Up to this many staged rows the shard boundaries are exact, from doc_ids read by the driver; above,
# they fall between doc_ids' first 5 hex digits (1M buckets), summed by Spark.
EXACT_BOUNDARY_ROWS = 5_000_000
PART_BYTES = 32 << 20  # text a shard's task collapses at a time
# Stores up to this many staged rows are deduplicated in this process when the input was small enough to
# be read in it (ingest.in_process_mb): Spark's start-up would cost more than the work.
IN_PROCESS_ROWS = 20_000


# -- phase 1: one chunk of an input file -> staged documents + quarantine rows --------------------
def ingest_file(f: InputFile, settings: IngestSettings, store_uri: str) -> dict:
    """`ingest_chunk` of a file read whole."""
    return ingest_chunk(Chunk(f), settings, store_uri)


def ingest_run(run: list[Chunk], settings: IngestSettings, store_uri: str) -> list[dict]:
    """`ingest_chunk` for each chunk of a run (`pipeline.io.chunks.runs`), read in one pass."""
    return [ingest_chunk(chunk, settings, store_uri, records) for chunk, records in read_run(run)]


def ingest_chunk(chunk: Chunk, settings: IngestSettings, store_uri: str, records=None) -> dict:
    """Read, normalise and language-tag one chunk; write its staged docs (sorted by doc_id) and
    quarantine rows. Runs inside a Spark task (or this process); memory is bounded by the chunk, not the file.

    The marker JSON is written last, so a killed task leaves no marker and the chunk is simply
    processed again (its outputs are overwritten, never appended)."""
    store = Store(store_uri)
    f, key = chunk.file, chunk.key
    started = time.time()
    lid = language_identifier(settings.language_model_path) if settings.language else None
    rejected: list[dict] = []
    counts = {"input_rows": 0, "skipped_records": 0}
    batch: list[dict] = []
    tables: list[pa.Table] = []

    def flush():
        if not batch:
            return
        if lid is not None:
            for row, (lang, prob) in zip(batch, lid.predict([r["text"] for r in batch])):
                row["language"], row["language_score"] = lang, prob
        tables.append(pa.Table.from_pylist(batch, schema=schemas.STAGED_DOCS))
        batch.clear()

    for item in read_chunk(chunk) if records is None else records:
        counts["input_rows"] += 1
        if isinstance(item, Skipped):  # not a document by design, and not bad data either
            counts["skipped_records"] += 1
            continue
        prepared = prepare_document(item, settings) if isinstance(item, RawDoc) else item
        if isinstance(prepared, Rejected):
            rejected.append(rejected_row(prepared))
        else:
            batch.append(prepared)
            if len(batch) >= BATCH_DOCS:
                flush()
    flush()
    staged = schemas.validate(pa.concat_tables(tables) if tables else schemas.STAGED_DOCS.empty_table(),
                              schemas.STAGED_DOCS)
    order = pc.sort_indices(staged.column("doc_id"))

    def write_sorted(path: str) -> None:  # a row group at a time: never a second copy of the chunk
        with pq.ParquetWriter(path, schemas.STAGED_DOCS, filesystem=store.fs, compression="zstd") as writer:
            for at in range(0, max(1, staged.num_rows), STAGED_ROW_GROUP):
                writer.write_table(staged.take(order[at:at + STAGED_ROW_GROUP]))
    store.atomic_write(("_staging", STAGE, f"{key}.parquet"), write_sorted)
    store.write_table(pa.Table.from_pylist(rejected, schema=schemas.QUARANTINE), schemas.QUARANTINE,
                      "quarantine", f"part-{key}.parquet")
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    marker = {"path": f.path, "format": f.format, "fingerprint": f.fingerprint, "options": f.options,
              "settings_key": settings.key, "chunk": chunk.index, "chunks": chunk.count,
              "plan": chunk.plan_key, "input_rows": counts["input_rows"],
              "staged_rows": staged.num_rows, "quarantined": len(rejected), "reasons": reasons,
              "skipped_records": counts["skipped_records"], "seconds": round(time.time() - started, 3)}
    return store.write_json(sidecars.INGEST_MARKER, marker, "_staging", STAGE, f"{key}.json")


def _is_finished(store: Store, chunk: Chunk, settings: IngestSettings) -> dict | None:
    key, f = chunk.key, chunk.file
    if not (store.exists("_staging", STAGE, f"{key}.json") and store.exists("_staging", STAGE, f"{key}.parquet")):
        return None
    marker = store.read_json("_staging", STAGE, f"{key}.json")
    same = (marker.get("fingerprint") == f.fingerprint and marker.get("settings_key") == settings.key
            and marker.get("options") == f.options and marker.get("format") == f.format
            and marker.get("chunks") == chunk.count and marker.get("plan") == chunk.plan_key)
    return marker if same else None


# -- phase 1's plan: which chunks each file is read in -------------------------------------------
def _chunks_of(tasks: Callable, store: Store, files: list[InputFile], chunk_bytes: int, run_id: str) -> list[Chunk]:
    """Every file's chunks: a kept plan when the file and chunk size are unchanged, else a new one
    (made by `map_tasks(tasks(), ...)`: a large compressed file's plan is one pass over it)."""
    chunks: dict[str, list[Chunk]] = {}
    to_plan = []
    for f in files:
        if not needs_plan(f, chunk_bytes):
            chunks[f.path] = [Chunk(f)]
            continue
        name = f"{path_key(f.path)}.json"
        plan = store.read_json("_staging", PLANS, name) if store.exists("_staging", PLANS, name) else None
        if plan and plan["fingerprint"] == f.fingerprint and plan["chunk_bytes"] == chunk_bytes:
            chunks[f.path] = chunks_from_plan(f, plan["chunks"])
        else:
            to_plan.append(f)
    if to_plan:
        planned = map_tasks(tasks(), to_plan, lambda f: plan_chunks(f, chunk_bytes), f"curate-ingest-plan-{run_id}",
                            "ingest: plan the chunks of large files",
                            lambda reason: f"ingest failed while planning large files: {reason}")
        for f, file_chunks in zip(to_plan, planned):
            store.write_json(sidecars.INGEST_PLAN, plan_record(f, chunk_bytes, file_chunks),
                             "_staging", PLANS, f"{path_key(f.path)}.json")
            chunks[f.path] = file_chunks
    counts = {path_key(f.path): len(chunks[f.path]) for f in files}
    for name in store.list_files("_staging", STAGE):  # a file re-planned into fewer chunks: the rest go
        stem = name.split(".", 1)[0]
        if "-c" in stem and int(stem.rsplit("-c", 1)[1]) >= counts.get(_file_key(name), 1 << 62):
            store.delete("_staging", STAGE, name)
            store.delete("quarantine", f"part-{stem}.parquet")
    return [c for f in files for c in chunks[f.path]]


# -- phase 2: collapse duplicates and write balanced shards, one task per shard ------------------
def _document_bytes(spark, store: Store, staged_keys: list[str], staged_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc_ids, their n_bytes) of the staged rows, duplicates included, for `shard_boundaries`: read here,
    or, above EXACT_BOUNDARY_ROWS, the distinct documents' bytes summed by Spark per 5-hex-digit prefix
    (`spark`; None: in this process)."""
    if staged_rows > EXACT_BOUNDARY_ROWS and spark is not None:
        from pyspark.sql import functions as F
        ids = (spark.read.parquet(*[store.spark_path("_staging", STAGE, f"{k}.parquet") for k in staged_keys])
               .select("doc_id", "n_bytes").dropDuplicates(["doc_id"]))
        buckets = ids.groupBy(F.substring("doc_id", 1, 5).alias("b")).agg(F.sum("n_bytes").alias("n")).collect()
        return (np.array([r["b"] for r in buckets], dtype="S5"), np.array([r["n"] for r in buckets], dtype=np.int64))
    if not staged_keys:
        return np.array([], dtype="S32"), np.array([], dtype=np.int64)
    table = _staged_dataset(store, staged_keys).to_table(columns=["doc_id", "n_bytes"])
    ids = table.column("doc_id").combine_chunks()
    if len(ids) and pc.min_max(pc.binary_length(ids)).as_py() == {"min": 32, "max": 32}:
        start = int(np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset])
        ids = np.frombuffer(ids.buffers()[2], dtype="S32", count=len(ids), offset=start)  # no Python strings
    else:
        ids = np.array(ids.to_pylist(), dtype="S32")
    return ids, table.column("n_bytes").to_numpy()


def _staged_dataset(store: Store, staged_keys: list[str]) -> ds.Dataset:
    return ds.dataset([store.path("_staging", STAGE, f"{k}.parquet") for k in staged_keys], format="parquet",
                      filesystem=store.fs, schema=schemas.STAGED_DOCS)


def _write_shard(store_uri: str, staged_keys: list[str], boundaries: list[str], parts: int, out_rel: str):
    """The task of one shard: `parts` consecutive doc_id ranges (`boundaries` split the store into
    num_shards x parts of them), each read from every staged file, collapsed and appended to the
    shard's file in doc_id order. Memory follows a part, not the shard."""
    def write(shard: int) -> dict:
        store = Store(store_uri)
        written = {"shard": shard, "n_docs": 0, "n_bytes": 0}

        def fill(path: str) -> None:
            with pq.ParquetWriter(path, schemas.DOCS, filesystem=store.fs, compression="zstd") as writer:
                for part in range(shard * parts, (shard + 1) * parts):
                    low, high = shard_range(boundaries, part)
                    where = None
                    if low is not None:
                        where = ds.field("doc_id") >= low
                    if high is not None:
                        where = ds.field("doc_id") < high if where is None else where & (ds.field("doc_id") < high)
                    # One thread: the shards' tasks are the parallelism, and threads' buffers add up.
                    staged = (_staged_dataset(store, staged_keys).to_table(filter=where, use_threads=False)
                              if staged_keys else schemas.STAGED_DOCS.empty_table())
                    docs = collapse(staged)
                    writer.write_table(docs)
                    written["n_docs"] += docs.num_rows
                    written["n_bytes"] += int(pc.sum(docs.column("n_bytes")).as_py() or 0)
        store.atomic_write((*out_rel.split("/"), f"part-{shard:05d}.parquet"), fill)
        return written
    return write


def collapse_and_shard(tasks, store: Store, staged_keys: list[str], num_shards: int, staged_rows: int,
                       run_id: str = "") -> dict:
    """Deduplicate staged documents by doc_id and write `num_shards` files of balanced byte size
    (`pipeline.ingest.shards`), exactly `num_shards` files even when there are fewer documents.
    `tasks`: a Spark session, or None to run the shards' tasks in this process."""
    out_rel = f"_staging/docs-{uuid.uuid4().hex[:8]}"
    ids, sizes = _document_bytes(tasks, store, staged_keys, staged_rows)
    # Each shard is written in parts of about PART_BYTES; splitting every shard into `parts` equal ranges
    # keeps the shards themselves exactly those of num_shards (floor(floor(x * parts) / parts) = floor(x)).
    parts = max(1, math.ceil(int(sizes.sum()) / num_shards / PART_BYTES))
    boundaries = shard_boundaries(ids, sizes, num_shards * parts)
    write = _write_shard(store.uri, staged_keys, boundaries, parts, out_rel)
    written = map_tasks(tasks, list(range(num_shards)), write, f"curate-ingest-shards-{run_id}",
                        "ingest: deduplicate and write shards",
                        lambda reason: f"ingest failed while writing shards: {reason}. The read input files "
                                       "are kept; re-run the same command to resume.")
    store.replace_dir(tuple(out_rel.split("/")), ("docs",))
    shard_bytes = sorted(r["n_bytes"] for r in written)
    return {"docs": sum(r["n_docs"] for r in written), "bytes": sum(shard_bytes), "shards": num_shards,
            "largest_shard_bytes": shard_bytes[-1], "smallest_shard_bytes": shard_bytes[0]}


def _forget_files(store: Store, keep: set[str]) -> None:
    """Delete the staged documents, markers, plans and quarantine rows of input files not in `keep` (keys)."""
    for folder in (STAGE, PLANS):
        for name in store.list_files("_staging", folder):
            if _file_key(name) not in keep:
                store.delete("_staging", folder, name)
    for name in store.list_files("quarantine", suffix=".parquet"):
        if _file_key(name.removeprefix("part-")) not in keep:
            store.delete("quarantine", name)


def _file_key(name: str) -> str:
    """`<file key>-c00003.json` -> the file key."""
    return name.split(".", 1)[0].rsplit("-c", 1)[0]


def _upgrade_legacy(store: Store) -> None:
    """A file staged before chunks existed (`<file key>.json`) becomes its file's chunk 0 of 1."""
    for name in store.list_files("_staging", STAGE, suffix=".json"):
        stem = name.removesuffix(".json")
        if "-c" in stem:
            continue
        marker = store.read_json("_staging", STAGE, name)
        if store.exists("_staging", STAGE, f"{stem}.parquet"):
            store.fs.move(store.path("_staging", STAGE, f"{stem}.parquet"),
                          store.path("_staging", STAGE, f"{stem}-c00000.parquet"))
        if store.exists("quarantine", f"part-{stem}.parquet"):
            store.fs.move(store.path("quarantine", f"part-{stem}.parquet"),
                          store.path("quarantine", f"part-{stem}-c00000.parquet"))
        marker = {k: v for k, v in marker.items() if k != "schema_version"}
        marker.update(chunk=0, chunks=1, plan=Chunk(InputFile(marker["path"], marker["format"])).plan_key,
                      skipped_records=marker.get("skipped_records", 0))
        store.write_json(sidecars.INGEST_MARKER, marker, "_staging", STAGE, f"{stem}-c00000.json")
        store.delete("_staging", STAGE, name)


# -- the stage ---------------------------------------------------------------------------------
def discover(cfg: IngestConfig) -> list[InputFile]:
    from pipeline.io.readers import discover_inputs
    if not cfg.inputs:
        raise UserError("no inputs: give input paths on the command line or under ingest.inputs in the config")
    files: dict[str, InputFile] = {}
    for spec in cfg.inputs:
        for f in discover_inputs(spec):
            files.setdefault(f.path, f)  # a file named twice is read once
    return sorted(files.values(), key=lambda f: f.path)


def run_ingest(config: Config, spark=None, overwrite: bool = False,
               progress: Callable[[str, int, int], None] | None = None) -> StageResult:
    """Run the ingest stage for `config`; resumes unless `overwrite`. `progress(phase, done, total)`.
    outputs: reasons (quarantine reason -> rows, over the whole store)."""
    cfg = config.ingest
    settings = IngestSettings.from_config(cfg)
    files = discover(cfg)
    model = settings.language_model_path
    if settings.language and model and "://" not in model and not Path(model).is_file():
        raise UserError(f"ingest.language.model_path {model}: no such file (a fastText LID model)")
    run = StageRun(STAGE, config, inputs=[f.path for f in files])
    store = run.store
    with run:
        # A small input is read in this process: starting Spark would take longer than the work.
        small = cfg.in_process_mb > 0 and is_small_local(spark, sum(f.size for f in files), cfg.in_process_mb << 20)
        tasks = (lambda: None) if small else (lambda: _needed(spark))  # what map_tasks runs on
        with run.phase("read"):
            _upgrade_legacy(store)
            chunks = _chunks_of(tasks, store, files, cfg.chunk_mb << 20, run.run_id)
            pending = [c for c in chunks if overwrite or _is_finished(store, c, settings) is None]
            if progress:
                progress("read", len(chunks) - len(pending), len(chunks))
            if pending:
                _read_pending(tasks(), store, pending, settings, len(chunks), run.run_id, progress)

        with run.phase("dedup_shard"):
            # Documents are the union of every finished file in the store (earlier runs included).
            all_markers = [store.read_json("_staging", STAGE, n)
                           for n in store.list_files("_staging", STAGE, suffix=".json")]
            if overwrite:  # this run's inputs only: the files earlier runs read leave the store
                current = {path_key(f.path) for f in files}
                all_markers = [m for m in all_markers if path_key(m["path"]) in current]
            all_markers.sort(key=lambda m: (m["path"], m["chunk"]))
            keys = [f"{path_key(m['path'])}-c{m['chunk']:05d}" for m in all_markers]
            state = short_digest([[m["path"], m["fingerprint"], m["settings_key"], m["chunk"], m["plan"]]
                                  for m in all_markers])
            staged_rows = sum(m["staged_rows"] for m in all_markers)
            manifest = store.read_json("docs", "_manifest.json") if store.exists("docs", "_manifest.json") else None
            dedup_skipped = bool(manifest and manifest.get("state") == state
                                 and manifest.get("num_shards") == cfg.num_shards)
            if dedup_skipped:
                shard_counts = manifest["shards"]
            else:
                if progress:
                    progress("dedup", 0, 1)
                shard_tasks = None if small and staged_rows <= IN_PROCESS_ROWS else _needed(spark)
                shard_counts = collapse_and_shard(shard_tasks, store, keys, cfg.num_shards, staged_rows, run.run_id)
                store.write_json(sidecars.DOCS_MANIFEST, {"state": state, "num_shards": cfg.num_shards,
                                                          "shards": shard_counts, "written_at": utc_now()},
                                 "docs", "_manifest.json")
                if progress:
                    progress("dedup", 1, 1)
            if overwrite:  # only now that the new docs are in place
                _forget_files(store, current)

        reasons: dict[str, int] = {}
        for m in all_markers:
            for r, n in m["reasons"].items():
                reasons[r] = reasons.get(r, 0) + n
        processed = {c.file.path for c in pending}
        counts = {"input_files": len({m["path"] for m in all_markers}), "files_processed": len(processed),
                  "files_skipped": len(files) - len(processed), "chunks": len(chunks), "chunks_read": len(pending),
                  "input_rows": sum(m["input_rows"] for m in all_markers),
                  "docs": shard_counts["docs"], "duplicates": staged_rows - shard_counts["docs"],
                  "quarantined": sum(m["quarantined"] for m in all_markers),
                  "skipped_records": sum(m["skipped_records"] for m in all_markers),
                  "doc_bytes": shard_counts["bytes"], "shards": cfg.num_shards,
                  "largest_shard_bytes": shard_counts["largest_shard_bytes"],
                  "smallest_shard_bytes": shard_counts["smallest_shard_bytes"],
                  "dedup_skipped": int(dedup_skipped)}
        run.timings["spark_start_s"] = getattr(spark, "start_s", 0.0)  # inside the phases' times
        return run.finish(counts, reasons=reasons)


def _needed(spark):
    if spark is None:
        raise UserError("internal: a Spark session is needed to ingest files")
    return spark


def _read_pending(tasks, store: Store, pending: list[Chunk], settings: IngestSettings, n_chunks: int,
                  run_id: str, progress) -> None:
    """Phase 1 for the chunks not finished yet: one task per run of chunks, the largest first."""
    ordered = sorted(runs(pending), key=lambda run: (-sum(c.file.size // c.count for c in run), run[0].key))
    store_uri = store.uri
    already = n_chunks - len(pending)
    map_tasks(tasks, ordered, lambda run: ingest_run(run, settings, store_uri), f"curate-ingest-{run_id}",
              "ingest: read input files",
              lambda reason: f"ingest failed: {reason}. Finished chunks of the input files are kept; "
                             "re-run the same command to resume.",
              (lambda done: progress("read", already + done, n_chunks)) if progress else None, weight=len)


def report(result: StageResult) -> Report:
    c = result.counts
    rows = [(label, c.get(key, 0)) for label, key in [
        ("input files", "input_files"), ("  processed now", "files_processed"),
        ("  already finished (skipped)", "files_skipped"), ("chunks read now", "chunks_read"),
        ("input rows", "input_rows"), ("documents", "docs"),
        ("exact duplicates collapsed", "duplicates"), ("quarantined rows", "quarantined"),
        ("skipped records (WARC request, metadata, ...)", "skipped_records"),
        ("document bytes", "doc_bytes"), ("shards", "shards")]]
    rows += [(f"  quarantine: {reason}", n) for reason, n in
             sorted(result.outputs["reasons"].items(), key=lambda kv: -kv[1])]
    reconciled = c["input_rows"] == c["docs"] + c["duplicates"] + c["quarantined"] + c["skipped_records"]
    t = result.timings
    # .get: run records written before chunks and shard sizes were counted lack them
    shards = (f"shards: {c['shards']}, {c['smallest_shard_bytes']:,} to {c['largest_shard_bytes']:,} bytes"
              if "largest_shard_bytes" in c else f"shards: {c['shards']}")
    return Report(f"ingest {result.run_id}", rows, notes=[
        f"input rows {c['input_rows']:,} = documents {c['docs']:,} + duplicates {c['duplicates']:,} + quarantined "
        f"{c['quarantined']:,} + skipped records {c['skipped_records']:,}: "
        f"{'reconciled' if reconciled else 'MISMATCH'}",
        shards,
        f"store: {result.store}   time: {t['total_s']:.1f}s (read {t['read_s']:.1f}s, "
        f"dedup+shard {t['dedup_shard_s']:.1f}s; Spark's start-up {t.get('spark_start_s', 0):.1f}s of them)"])


def summary_row(result: StageResult) -> dict:
    c = result.counts
    return {"documents": c["docs"], "status": f"{c['files_processed']} of {c['input_files']} files read",
            "output": f"{c['input_rows']:,} input rows, {c['duplicates']:,} duplicates, "
                      f"{c['quarantined']:,} quarantined, {c['skipped_records']:,} skipped records"}


def check_config(config: Config) -> None:
    if not config.ingest.inputs:
        raise UserError("stage ingest: ingest.inputs is empty; list input files or folders, or drop ingest "
                        "from stages")


def with_inputs(config: Config, paths: list[str], fmt: str | None = None, text_field: str | None = None) -> Config:
    """`config` with `paths` (of format `fmt`, text in `text_field`) added to ingest.inputs."""
    if not paths:
        return config
    extra = [{"path": p, "format": fmt or "auto", **({"fields": {"text": text_field}} if text_field else {})}
             for p in paths]
    return apply_overrides(config, {"ingest.inputs": [i.model_dump() for i in config.ingest.inputs] + extra})
