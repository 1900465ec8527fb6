"""Ingest stage: raw input files -> `store/docs` (normalised, hashed, language-tagged, deduplicated, sharded).

Two phases, each resumable:
1. One Spark task per input file reads it (`pipeline.io.readers`), normalises every record, tags its
   language with fastText and writes `_staging/ingest/<file_key>.parquet` plus the file's rejected rows
   to `quarantine/part-<file_key>.parquet`; a marker `<file_key>.json` written last says the file is
   finished. A re-run skips files whose marker matches the file's size, mtime and the settings.
2. Spark collapses exact duplicates (same `doc_id`) across all staged files, keeping the first
   occurrence and the list of all sources, and writes `num_shards` files of balanced byte size,
   each sorted by doc_id, so the same input always gives the same shards.

Counts reconcile: input rows = docs + duplicates + quarantine rows + skipped records (WARC requests,
metadata, warcinfo: records that never hold a page, counted apart from bad data).
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import schemas
from pipeline.config import Config, IngestConfig, apply_overrides
from pipeline.errors import UserError
from pipeline.hashing import path_key, short_digest
from pipeline.ingest.documents import IngestSettings, language_identifier, prepare_document, rejected_row
from pipeline.io import InputFile, RawDoc, Rejected, Skipped
from pipeline.stage import Report, StageResult, StageRun
from pipeline.store import Store, utc_now
from schemas import sidecars

STAGE = "ingest"
BATCH_DOCS = 2_000  # documents per language-ID call and per Parquet row group


# -- phase 1: one input file -> staged documents + quarantine rows --------------------------------
def ingest_file(f: InputFile, settings: IngestSettings, store_uri: str) -> dict:
    """Read, normalise and language-tag one input file; write its staged docs and quarantine rows.

    Runs inside a Spark task. The marker JSON is written last, so a killed task leaves no marker and
    the file is simply processed again (its outputs are overwritten, never appended)."""
    from pipeline.io.readers import read_file

    store = Store(store_uri)
    key = path_key(f.path)
    started = time.time()
    lid = language_identifier(settings.language_model_path) if settings.language else None
    staged_rel = ("_staging", STAGE, f"{key}.parquet")
    tmp = store.path("_staging", STAGE, f".tmp-{uuid.uuid4().hex}-{key}.parquet")
    store.fs.create_dir(store.path("_staging", STAGE), recursive=True)
    rejected: list[dict] = []
    counts = {"input_rows": 0, "staged_rows": 0, "skipped_records": 0}
    batch: list[dict] = []

    with pq.ParquetWriter(tmp, schemas.STAGED_DOCS, filesystem=store.fs, compression="zstd") as writer:
        def flush():
            if not batch:
                return
            if lid is not None:
                for row, (lang, prob) in zip(batch, lid.predict([r["text"] for r in batch])):
                    row["language"], row["language_score"] = lang, prob
            writer.write_table(schemas.validate(pa.Table.from_pylist(batch, schema=schemas.STAGED_DOCS),
                                                schemas.STAGED_DOCS))
            counts["staged_rows"] += len(batch)
            batch.clear()

        for item in read_file(f):
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
    store.fs.move(tmp, store.path(*staged_rel))
    store.write_table(pa.Table.from_pylist(rejected, schema=schemas.QUARANTINE), schemas.QUARANTINE,
                      "quarantine", f"part-{key}.parquet")
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    marker = {"path": f.path, "format": f.format, "fingerprint": f.fingerprint, "options": f.options,
              "settings_key": settings.key, "input_rows": counts["input_rows"],
              "staged_rows": counts["staged_rows"], "quarantined": len(rejected), "reasons": reasons,
              "skipped_records": counts["skipped_records"],
              "seconds": round(time.time() - started, 3)}
    return store.write_json(sidecars.INGEST_MARKER, marker, "_staging", STAGE, f"{key}.json")


def _is_finished(store: Store, f: InputFile, settings: IngestSettings) -> dict | None:
    key = path_key(f.path)
    if not (store.exists("_staging", STAGE, f"{key}.json") and store.exists("_staging", STAGE, f"{key}.parquet")):
        return None
    marker = store.read_json("_staging", STAGE, f"{key}.json")
    # A marker from before skipped records were counted apart re-reads its file (its counts differ).
    same = ("skipped_records" in marker and marker.get("fingerprint") == f.fingerprint
            and marker.get("settings_key") == settings.key
            and marker.get("options") == f.options and marker.get("format") == f.format)
    return marker if same else None


# -- phase 2: collapse duplicates and write balanced shards -------------------------------------
def _write_shards(store_uri: str, out_rel: str):
    """mapInArrow function: write every shard present in this task as `<out_rel>/part-NNNNN.parquet`."""
    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        store = Store(store_uri)
        by_shard: dict[int, list[pa.RecordBatch]] = {}
        for b in batches:
            table = pa.Table.from_batches([b])
            for shard in sorted(set(table.column("_shard").to_pylist())):
                part = table.filter(pc.equal(table.column("_shard"), shard))
                by_shard.setdefault(shard, []).append(part)
        out = {"shard": [], "n_docs": [], "n_bytes": []}
        for shard, parts in by_shard.items():
            table = pa.concat_tables(parts).drop_columns(["_shard"]).sort_by("doc_id")
            store.write_table(table, schemas.DOCS, out_rel, f"part-{shard:05d}.parquet")
            out["shard"].append(shard)
            out["n_docs"].append(table.num_rows)
            out["n_bytes"].append(int(pc.sum(table.column("n_bytes")).as_py() or 0))
        yield pa.RecordBatch.from_pydict(out, schema=pa.schema([("shard", pa.int32()), ("n_docs", pa.int64()),
                                                                ("n_bytes", pa.int64())]))
    return write


def collapse_and_shard(spark, store: Store, staged_keys: list[str], num_shards: int) -> dict:
    """Deduplicate staged documents by doc_id and write `num_shards` files of balanced byte size.

    Shard of a document = floor(num_shards * B / total_bytes), where B is the byte count of all
    documents before it in doc_id order (doc_id is a hash, so that order is a fixed random order).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    out_rel = f"_staging/docs-{uuid.uuid4().hex[:8]}"
    paths = [store.spark_path("_staging", STAGE, f"{k}.parquet") for k in staged_keys]
    if paths:
        staged = spark.read.parquet(*paths)
    else:
        staged = spark.createDataFrame([], schema=_spark_schema(schemas.STAGED_DOCS))
    first_cols = ["source_file", "source_offset"] + [c for c in schemas.STAGED_DOCS.names
                                                     if c not in ("doc_id", "source_file", "source_offset")]
    docs = (staged.groupBy("doc_id")
            .agg(F.min(F.struct(*first_cols)).alias("first"),
                 F.count(F.lit(1)).alias("duplicate_count"),
                 F.slice(F.array_sort(F.collect_list(F.struct("source_file", "source_offset", "url"))),
                         1, schemas.MAX_SOURCES).alias("duplicate_sources"))
            .select("doc_id", "first.*", "duplicate_count", "duplicate_sources")
            .repartitionByRange(max(1, min(num_shards * 4, 256)), "doc_id")
            .withColumn("_pid", F.spark_partition_id())
            .persist())
    per_partition = {r["_pid"]: (r["n"], r["b"]) for r in
                     docs.groupBy("_pid").agg(F.count(F.lit(1)).alias("n"), F.sum("n_bytes").alias("b")).collect()}
    total_bytes = sum(b for _, b in per_partition.values())
    n_docs = sum(n for n, _ in per_partition.values())
    offsets, running = [], 0
    for pid in sorted(per_partition):
        offsets.append((pid, running))
        running += per_partition[pid][1]
    written = []
    if n_docs:
        before = Window.partitionBy("_pid").orderBy("doc_id").rowsBetween(Window.unboundedPreceding, -1)
        offs = spark.createDataFrame(offsets, "_pid int, _off long")
        sharded = (docs.join(F.broadcast(offs), "_pid")
                   .withColumn("_before", F.coalesce(F.sum("n_bytes").over(before), F.lit(0)) + F.col("_off"))
                   .withColumn("_shard", F.least(F.lit(num_shards - 1),
                                                 F.floor(F.col("_before") * num_shards / F.lit(total_bytes))).cast("int"))
                   .drop("_pid", "_off", "_before")
                   .repartition(num_shards, "_shard"))
        written = sharded.mapInArrow(_write_shards(store.uri, out_rel),
                                     "shard int, n_docs long, n_bytes long").collect()
    docs.unpersist()
    present = {r["shard"] for r in written}
    for shard in range(num_shards):  # exactly num_shards files, even when there are fewer documents
        if shard not in present:
            store.write_table(schemas.DOCS.empty_table(), schemas.DOCS, out_rel, f"part-{shard:05d}.parquet")
    store.replace_dir(tuple(out_rel.split("/")), ("docs",))
    shard_bytes = sorted(r["n_bytes"] for r in written)
    return {"docs": n_docs, "bytes": total_bytes, "shards": num_shards,
            "largest_shard_bytes": shard_bytes[-1] if shard_bytes else 0,
            "smallest_shard_bytes": shard_bytes[0] if len(shard_bytes) == num_shards else 0}


def _forget_files(store: Store, keep: set[str]) -> None:
    """Delete the staged documents, markers and quarantine rows of input files not in `keep` (keys)."""
    for name in store.list_files("_staging", STAGE):
        if name.split(".", 1)[0] not in keep:
            store.delete("_staging", STAGE, name)
    for name in store.list_files("quarantine", suffix=".parquet"):
        if name.removeprefix("part-").removesuffix(".parquet") not in keep:
            store.delete("quarantine", name)


def _spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema
    return from_arrow_schema(schema)


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
        with run.phase("read"):
            markers = {f.path: None if overwrite else _is_finished(store, f, settings) for f in files}
            pending = [f for f in files if markers[f.path] is None]
            if progress:
                progress("read", len(files) - len(pending), len(files))
            if pending:
                _read_pending(spark, store, pending, settings, len(files), run.run_id, progress)

        with run.phase("dedup_shard"):
            # Documents are the union of every finished file in the store (earlier runs included).
            all_markers = [store.read_json("_staging", STAGE, n)
                           for n in store.list_files("_staging", STAGE, suffix=".json")]
            if overwrite:  # this run's inputs only: the files earlier runs read leave the store
                current = {path_key(f.path) for f in files}
                all_markers = [m for m in all_markers if path_key(m["path"]) in current]
            keys = sorted(path_key(m["path"]) for m in all_markers)
            state = short_digest([[m["path"], m["fingerprint"], m["settings_key"]]
                                  for m in sorted(all_markers, key=lambda m: m["path"])])
            manifest = store.read_json("docs", "_manifest.json") if store.exists("docs", "_manifest.json") else None
            dedup_skipped = bool(manifest and manifest.get("state") == state
                                 and manifest.get("num_shards") == cfg.num_shards)
            if dedup_skipped:
                shard_counts = manifest["shards"]
            else:
                if spark is None:
                    raise UserError("internal: a Spark session is needed to write documents")
                if progress:
                    progress("dedup", 0, 1)
                shard_counts = collapse_and_shard(spark, store, keys, cfg.num_shards)
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
        staged_rows = sum(m["staged_rows"] for m in all_markers)
        counts = {"input_files": len(all_markers), "files_processed": len(pending),
                  "files_skipped": len(files) - len(pending),
                  "input_rows": sum(m["input_rows"] for m in all_markers),
                  "docs": shard_counts["docs"], "duplicates": staged_rows - shard_counts["docs"],
                  "quarantined": sum(m["quarantined"] for m in all_markers),
                  # .get: markers written before skipped records were counted apart lack the key
                  "skipped_records": sum(m.get("skipped_records", 0) for m in all_markers),
                  "doc_bytes": shard_counts["bytes"], "shards": cfg.num_shards,
                  "dedup_skipped": int(dedup_skipped)}
        return run.finish(counts, reasons=reasons)


def _read_pending(spark, store: Store, pending: list[InputFile], settings: IngestSettings, n_files: int,
                  run_id: str, progress) -> None:
    """Phase 1 for the files not finished yet: one Spark task per file, all at once."""
    if spark is None:
        raise UserError("internal: a Spark session is needed to ingest files")
    from pipeline.spark import run_action
    rdd = spark.sparkContext.parallelize(pending, numSlices=len(pending))
    store_uri = store.uri
    files_done = spark.sparkContext.accumulator(0)

    def read_file(f: InputFile) -> dict:
        marker = ingest_file(f, settings, store_uri)
        files_done.add(1)
        return marker
    already = n_files - len(pending)
    report = (lambda: progress("read", already + files_done.value, n_files)) if progress else (lambda: None)
    run_action(spark, f"curate-ingest-{run_id}", "ingest: read input files", rdd.map(read_file).collect, report,
               lambda reason: f"ingest failed: {reason}. Finished input files are kept; "
                              "re-run the same command to resume.")
    report()


def report(result: StageResult) -> Report:
    c = result.counts
    rows = [(label, c[key]) for label, key in [
        ("input files", "input_files"), ("  processed now", "files_processed"),
        ("  already finished (skipped)", "files_skipped"), ("input rows", "input_rows"), ("documents", "docs"),
        ("exact duplicates collapsed", "duplicates"), ("quarantined rows", "quarantined"),
        ("skipped records (WARC request, metadata, ...)", "skipped_records"),
        ("document bytes", "doc_bytes"), ("shards", "shards")]]
    rows += [(f"  quarantine: {reason}", n) for reason, n in
             sorted(result.outputs["reasons"].items(), key=lambda kv: -kv[1])]
    reconciled = c["input_rows"] == c["docs"] + c["duplicates"] + c["quarantined"] + c["skipped_records"]
    t = result.timings
    return Report(f"ingest {result.run_id}", rows, notes=[
        f"input rows {c['input_rows']:,} = documents {c['docs']:,} + duplicates {c['duplicates']:,} + quarantined "
        f"{c['quarantined']:,} + skipped records {c['skipped_records']:,}: "
        f"{'reconciled' if reconciled else 'MISMATCH'}",
        f"store: {result.store}   time: {t['total_s']:.1f}s (read {t['read_s']:.1f}s, "
        f"dedup+shard {t['dedup_shard_s']:.1f}s)"])


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
