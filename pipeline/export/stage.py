"""Export stage: the kept documents of a selection -> training shards + manifest, in `exports/<name>/`.

    shard-00000.parquet | shard-00000.jsonl.zst | shard-00000.bin + shard-00000.idx
    documents.parquet          the plan: every exported doc_id with its shard and position
    manifest.json              lineage, counts, group shares and every file's sha256 (written last)
    _export.json               the export's fingerprint (written first, so an unfinished export has one)
    _shards/shard-00000.json   a finished shard's stats (resume)

Three passes. (1) Spark counts each kept document's tokens under the export tokenizer. (2) The driver
plans with the pure functions of `plan` over (doc_id, group, n_tokens, n_bytes), no text: the order (a
seeded hash, independent of partitioning), the token-budget or mixture sample, and the shard cuts.
(3) Spark joins the text back to the plan and writes each shard whole inside one task, atomically
(`pipeline.io.writers`); a re-run of the same plan skips the shards already finished.
"""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import schemas
from pipeline.config import Config, ExportConfig
from pipeline.errors import UserError
from pipeline.export.plan import (export_fingerprint, normalise_weights, plan_documents, plan_fingerprint,
                                  token_dtype)
from pipeline.io.writers import token_ids, write_shard
from pipeline.scoring.core import load_tokenizer
from pipeline.scoring.identity import tokenizer_hash
from pipeline.spark import run_action
from pipeline.stage import Report, StageResult, StageRun
from pipeline.store import Store, code_version, utc_now
from schemas import sidecars

STAGE = "export"
_CANDIDATES_DDL = "doc_id string, group string, n_tokens long, n_bytes long"


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
    return {"source": source, "group_by": obj.get("group_by") or default_group_by, "weights": weights,
            "groups_table": obj.get("groups_table")}


MIX_GROUP = "__mixture_group"   # the column a curate mix run's groups are joined into
_TOKENIZERS: dict[str, Any] = {}  # one tokenizer per Python worker (and one on the driver)


def _tokenizer(path: str):
    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = load_tokenizer(path)
    return _TOKENIZERS[path]


def choose_tokenizer(config: Config, store: Store, selection: dict) -> tuple[str, dict]:
    """The directory whose tokenizer counts (and, for format tokens, writes) the exported tokens, and
    how it was chosen: export.tokenizer when set, else the tokenizer of the scorer the selection was
    made with (its model directory, or a known one with the same tokenizer files: score.model, the
    store's models/), else score.model when the selection used no scores. A chosen tokenizer that
    differs from the scorer's is recorded (`matches_scorer`) and reported."""
    scorer = selection.get("scorer") or {}
    wanted = scorer.get("tokenizer", "").rpartition("@")[2] or None
    if config.export.tokenizer:
        chosen, source, actual = config.export.tokenizer, "export.tokenizer", None
    elif wanted is None:
        chosen, source, actual = config.score.model, "score.model", None
    else:
        models = store.path("models")
        known = [scorer.get("model_path"), config.score.model,
                 *(sorted(str(p) for p in Path(models).iterdir()) if Path(models).is_dir() else [])]
        chosen = next((d for d in known if d and os.path.isdir(d) and tokenizer_hash(d) == wanted), None)
        if chosen is None:
            raise UserError(f"selection {selection['name']!r} was made with scorer {selection.get('scorer_id')} "
                            f"(tokenizer {scorer.get('tokenizer')}), whose model directory is not on this machine: "
                            "set export.tokenizer (--tokenizer) to it, or to another tokenizer on purpose")
        source, actual = f"the selection's scorer {selection.get('scorer_id')}", wanted  # found by that hash
    tokenizer = load_export_tokenizer(chosen)  # a clear error for a path that holds no tokenizer
    actual = actual or tokenizer_hash(chosen)
    return chosen, {"path": str(chosen), "hash": actual, "vocab_size": len(tokenizer), "source": source,
                    "scorer_tokenizer": scorer.get("tokenizer"), "matches_scorer": wanted in (None, actual)}


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


def write_shards(store_uri: str, out: tuple[str, ...], cfg_json: str, tokenizer_dir: str, eos_id: int | None,
                 dtype: str, plan_fp: str, shards_done) -> Callable:
    """mapInArrow function: write every shard of this partition (rows sorted by shard, position) and
    return one (shard, stats JSON) row per shard; each shard's stats also go to _shards/."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        cfg = ExportConfig.model_validate_json(cfg_json)
        store = Store(store_uri)
        tokenizer = _tokenizer(tokenizer_dir) if cfg.format == "tokens" else None
        for shard, chunks in itertools.groupby(_by_shard(batches), key=lambda c: c[0]):
            stats = write_shard(store, out, cfg.format, cfg.columns, shard, (c for _, c in chunks),
                                tokenizer=tokenizer, eos_id=eos_id, dtype=dtype)
            store.write_json(sidecars.EXPORT_SHARD, {**stats, "plan_fingerprint": plan_fp}, *out,
                             "_shards", f"shard-{shard:05d}.json")
            shards_done.add(1)
            yield pa.RecordBatch.from_pydict({"shard": [shard], "stats": [json.dumps(stats)]},
                                             schema=pa.schema([("shard", pa.int32()), ("stats", pa.string())]))
    return run


# --------------------------------------------------------------------------- the stage

def run_export(config: Config, spark, progress: Callable[[str, int, int], None] | None = None,
               overwrite: bool = False) -> StageResult:
    """Export the kept documents of `export.selection` into exports/<export.name>/ (see the module doc).

    A finished export with the same fingerprint is skipped and an unfinished one resumes, with or
    without `overwrite`. A different export under the same name is a UserError unless `overwrite`,
    which deletes it first.
    `progress(phase, done, total)`: tokenize (documents), write (shards).
    outputs: name, out_dir and the manifest."""
    cfg = config.export
    store = Store(config.store)
    out = ("exports", cfg.name)
    report = progress or (lambda phase, done, total: None)
    selection_name = cfg.selection or config.select.name
    run = StageRun(STAGE, config, inputs=[store.spark_path("selections", selection_name)], requires=("docs",))
    selection = read_selection(store, selection_name)
    tokenizer_dir, tokenizer_info = choose_tokenizer(config, store, selection)
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
    tok_hash = tokenizer_info["hash"]
    fingerprint = export_fingerprint(selection.get("selection_id"), resolved.model_dump(mode="json"), tok_hash,
                                     mixture)

    existing = _existing_fingerprint(store, out)
    if existing is not None and existing != fingerprint and not overwrite:
        raise UserError(f"{store.uri}/exports/{cfg.name} holds a different export (another selection, "
                        "tokenizer or export config): pass --overwrite (overwrite=True) to replace it, or "
                        "set another export.name")
    out_dir = store.spark_path(*out)
    manifest = store.read_json(*out, "manifest.json") if store.exists(*out, "manifest.json") else None
    if existing == fingerprint and manifest and all(_files_intact(store, out, s["files"]) for s in manifest["shards"]):
        counts = {**manifest["counts"], "shards_written": 0, "shards_reused": manifest["counts"]["shards"]}
        return run.skip(counts, name=cfg.name, out_dir=out_dir, manifest=manifest)
    # A replacement is built aside (named by its fingerprint, so a killed one resumes) and swapped in
    # when finished: the old export stays whole until then.
    work = out if existing in (None, fingerprint) else ("_staging", STAGE, f"{cfg.name}-{fingerprint[:16]}")

    with run:
        store.write_json(sidecars.EXPORT_FINGERPRINT, {"fingerprint": fingerprint,
                                                       "config": resolved.model_dump(mode="json")},
                         *work, "_export.json")
        store.delete(*work, "manifest.json")  # a manifest says the export is complete: it is written last
        store.clear_temporary(*work)
        docs = spark.read.parquet(store.spark_path("docs", "part-*.parquet"))
        if mixture and mixture["groups_table"]:   # a curate mix run's groups, its held-out documents left out
            from pyspark.sql import functions as F
            grouped = spark.read.parquet(store.spark_path(*mixture["groups_table"].split("/")))
            docs = docs.join(grouped.where(~F.col("heldout")).select("doc_id", F.col("group").alias(MIX_GROUP)),
                             "doc_id", "left")
            group_by = MIX_GROUP
        _check_columns(docs.columns, cfg, group_by, mixture)
        job = f"curate-export-{run.run_id}"

        with run.phase("tokenize"):
            candidates = _count_candidates(spark, store, docs, selection["name"], group_by, tokenizer_dir, eos_id,
                                           job, report)
        with run.phase("plan"):
            try:
                plan = plan_documents(candidates, shuffle=cfg.shuffle, seed=cfg.seed, token_budget=cfg.token_budget,
                                      weights=mixture and mixture["weights"], shard_bytes=cfg.shard_bytes,
                                      token_bytes=np.dtype(dtype).itemsize if cfg.format == "tokens" else None)
            except ValueError as e:  # a weighted group without documents
                raise UserError(f"export.mixture {mixture['source']} (groups by {group_by!r}): {e}") from None
            store.write_table(plan, schemas.EXPORT_DOCUMENTS, *work, "documents.parquet")
            plan_fp = plan_fingerprint(fingerprint, plan)

        with run.phase("write"):
            planned_docs = np.bincount(plan["shard"].to_numpy())
            reused = _finished_shards(store, work, len(planned_docs), plan_fp)
            written = _write_missing_shards(spark, store, work, cfg, docs, plan_fp, len(planned_docs), reused,
                                            tokenizer_dir, eos_id, dtype, job, report)
            shards = {**reused, **written}
            short = [s for s, n in enumerate(planned_docs) if s not in shards or shards[s]["docs"] != n]
            if short:
                raise UserError(f"shards {short} hold fewer documents than planned: docs changed during the "
                                "export; re-run the same command")

        manifest = store.write_json(sidecars.EXPORT_MANIFEST, _manifest(
            cfg=resolved, fingerprint=fingerprint, selection=selection, plan=plan,
            shards=[shards[s] for s in sorted(shards)], n_candidates=candidates.num_rows, mixture=mixture,
            group_by=group_by, tokenizer=tokenizer_info, eos_id=eos_id, dtype=dtype), *work, "manifest.json")
        if work != out:
            store.replace_dir(work, out)
        counts = {**manifest["counts"], "shards_written": len(written), "shards_reused": len(reused)}
        return run.finish(counts, name=cfg.name, out_dir=out_dir, manifest=manifest)


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


def _write_missing_shards(spark, store: Store, out: tuple[str, ...], cfg: ExportConfig, docs, plan_fp: str,
                          n_shards: int,
                          reused: dict[int, dict], tokenizer_dir: str, eos_id: int | None, dtype: str, job: str,
                          report: Callable) -> dict[int, dict]:
    """Pass (3): write the shards of documents.parquet not in `reused`; returns their stats by shard."""
    from pyspark.sql import functions as F
    todo = [s for s in range(n_shards) if s not in reused]
    report("write", len(reused), n_shards)
    if not todo:
        return {}
    # n_bytes comes from docs, so that export.columns may name it without a clash
    wanted = ["n_bytes", *(["text"] if cfg.format == "tokens" else cfg.columns)]
    parallelism = spark.sparkContext.defaultParallelism
    rows = (spark.read.parquet(store.spark_path(*out, "documents.parquet"))
            .where(F.col("shard").isin(todo)).select("doc_id", "shard", "position", "n_tokens")
            .join(docs.select("doc_id", *[c for c in dict.fromkeys(wanted) if c != "doc_id"]), "doc_id")
            .repartition(min(len(todo), 4 * parallelism), "shard")
            .sortWithinPartitions("shard", "position"))
    shards_done = spark.sparkContext.accumulator(0)
    fn = write_shards(store.uri, out, cfg.model_dump_json(), tokenizer_dir, eos_id, dtype, plan_fp, shards_done)
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
        stats.pop("schema_version", None)
        if stats.pop("plan_fingerprint", None) != plan_fp or stats["shard"] >= n_shards:
            store.delete(*out, "_shards", name)
        elif _files_intact(store, out, stats["files"]):
            finished[stats["shard"]] = stats
    for name in store.list_files(*out):
        if name.startswith("shard-") and int(name[6:11]) >= n_shards:
            store.delete(*out, name)
    return finished


def _manifest(*, cfg: ExportConfig, fingerprint: str, selection: dict, plan: pa.Table, shards: list[dict],
              n_candidates: int, mixture: dict | None, group_by: str, tokenizer: dict, eos_id: int | None,
              dtype: str) -> dict:
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
        "tokenizer": tokenizer,
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


def report(result: StageResult) -> Report:
    c, m = result.counts, result.outputs["manifest"]
    rows = [(label, c[key]) for label, key in [
        ("documents kept by the selection", "candidate_docs"),
        ("  left out by the token budget / mixture", "sampled_out_docs"), ("documents exported", "docs"),
        ("tokens", "tokens"), ("text bytes", "text_bytes"), ("file bytes", "bytes"), ("shards", "shards"),
        ("  written now", "shards_written"), ("  already finished (kept)", "shards_reused")]]
    if m.get("mixture"):
        rows += [(f"  {group}: token share (target)", f"{m['mixture']['achieved'][group]:.3f} ({weight:.3f})")
                 for group, weight in m["mixture"]["weights"].items()]
    tok = m["tokenizer"]
    rows += [("tokenizer", f"{tok['path']} ({tok.get('source', 'export.tokenizer')})"),
             ("time", f"{result.timings['total_s']:.1f}s")]
    notes = [f"shards + manifest.json: {result.outputs['out_dir']}"]
    if tok.get("matches_scorer") is False:
        notes.append(f"note: tokens counted with {tok['path']} ({tok['source']}), not with the tokenizer of the "
                     f"scorer the selection was made with ({tok['scorer_tokenizer']}); recorded in manifest.json")
    return Report(f"export {result.outputs['name']!r} ({m['format']})" +
                  (" (unchanged: already in the store)" if result.skipped else ""), rows, notes=notes)


def summary_row(result: StageResult) -> dict:
    c = result.counts
    return {"documents": c["docs"], "tokens": c["tokens"],
            "status": "up to date" if result.skipped else f"{c['shards']} shards written",
            "output": result.outputs["out_dir"]}


def check_config(config: Config) -> None:
    if not (config.export.tokenizer or config.score.model):
        raise UserError("stage export: set export.tokenizer (or score.model): it counts the tokens of the "
                        "exported documents (and writes them, for format tokens)")
