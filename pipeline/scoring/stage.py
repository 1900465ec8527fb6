"""Score stage: every document's likelihood under one reference model -> `scores/scorer=<id>/`.

Spark reads `docs`, drops documents this scorer has already scored (resume), and sends the rest
through `mapInPandas` to a scoring engine living in each Python worker (the embedded default) or to
the scoring service over HTTP. Each task writes its rows in parts, atomically, as it goes
(`score_in_parts`): a part is written when it holds `docs_per_part` rows or `flush_seconds` after the
last one, and a failing task writes what it has scored before it gives up. A killed job keeps every
written part, and a re-run scores only the rest. Rows of limit-caused errors (`too_large`) are not
final: a re-run takes them out of their parts and scores those documents again.
"""
from __future__ import annotations

import itertools
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

import schemas
from schemas import sidecars
from pipeline.config import Config, ScoreConfig
from pipeline.errors import UserError
from pipeline.scoring import core
from pipeline.scoring.engines import ScoringInterruptedError
from pipeline.scoring.identity import local_identity, resolve_engine_settings
from pipeline.spark import run_action
from pipeline.stage import Report, StageResult, StageRun
from pipeline.store import Store

_COUNTS_SCHEMA = "n_docs long, n_errors long, n_tokens long, seconds double"
_SCORERS: dict[str, object] = {}  # one engine or client per Python worker process
ENGINE_CALL_DOCS = 64  # documents per call of an in-process engine (its token budget batches inside)
T = TypeVar("T")


def _scorer(cfg_json: str, num_threads: int, scorer_id: str):
    """The engine (or service client) of this worker, built on first use. Keyed by the scorer id too:
    a model directory rewritten in place (a refitted student) is loaded again."""
    key = f"{cfg_json}\0{scorer_id}"
    if key not in _SCORERS:
        cfg = ScoreConfig.model_validate_json(cfg_json)
        if cfg.service_url:
            from pipeline.scoring.client import ScoringClient
            _SCORERS[key] = ScoringClient(cfg.service_url, token=cfg.service_token,
                                               batch_size=cfg.request_docs, max_concurrency=cfg.concurrency)
        else:
            from pipeline.scoring.engines import load_engine
            options = dict(device=cfg.device, dtype=cfg.dtype, max_tokens=cfg.max_tokens,
                           truncation=cfg.truncation, stride=cfg.stride, token_budget=cfg.token_budget)
            if cfg.engine == "torch" and cfg.device == "cpu":
                options["num_threads"] = num_threads
            _SCORERS[key] = load_engine(cfg.engine, cfg.model, **options)
    return _SCORERS[key]


def score_in_parts(docs: Iterable[tuple[str, str]], score: Callable[[list[tuple[str, str]]], list[dict]],
                   write_part: Callable[[list[dict]], T], call_docs: int, docs_per_part: int,
                   flush_seconds: float) -> Iterator[T]:
    """Score `docs` in calls of `call_docs` and write the rows in parts; yields what `write_part` returns.

    A part is written when `docs_per_part` rows are held, or when `flush_seconds` have passed since
    the last write (checked after each call), so a killed task loses at most that much work. A
    failure is raised only after the rows already scored are written (with the rows a
    ScoringInterruptedError carries): a re-run then skips exactly the documents that have a row.
    """
    held: list[dict] = []
    last_write = time.monotonic()
    try:
        for batch in _chunks(docs, call_docs):
            held += score(batch)
            while len(held) >= docs_per_part or (held and time.monotonic() - last_write >= flush_seconds):
                part, held = held[:docs_per_part], held[docs_per_part:]   # out of `held` before the write
                counts = write_part(part)
                last_write = time.monotonic()
                yield counts
        if held:
            part, held = held, []
            yield write_part(part)
    except BaseException as e:   # a failure, or the task being stopped: keep what is scored
        if isinstance(e, ScoringInterruptedError):
            held += e.rows
        if held:
            write_part(held)
        raise


def _chunks(items: Iterable[T], n: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, n)):
        yield chunk


def score_partitions(store_uri: str, cfg_json: str, scorer_id: str, run_id: str, num_threads: int, docs_done):
    """mapInPandas function: score this partition's documents into scores/scorer=<id>/, part by part."""
    def setup():
        cfg = ScoreConfig.model_validate_json(cfg_json)
        scorer = _scorer(cfg_json, num_threads, scorer_id)
        if scorer.identity.scorer_id != scorer_id:  # the service or model changed under a running job
            raise UserError(f"scorer identity changed: expected {scorer_id}, got {scorer.identity.scorer_id}")
        if cfg.service_url:   # one request per connection in each call
            call_docs = scorer.request_docs * cfg.concurrency
        else:
            call_docs = min(cfg.docs_per_part, ENGINE_CALL_DOCS)
        return scorer.score, call_docs
    cfg = ScoreConfig.model_validate_json(cfg_json)
    return partitions_in_parts(store_uri, ("scores", f"scorer={scorer_id}"), schemas.SCORES, run_id, docs_done,
                               setup, cfg.docs_per_part, cfg.flush_seconds, "n_predicted")


def partitions_in_parts(store_uri: str, rel: tuple[str, ...], schema: pa.Schema, run_id: str, docs_done,
                        setup: Callable, docs_per_part: int, flush_seconds: float, tokens_key: str):
    """mapInPandas function of a per-document job (scoring, rating): `setup()`, in the task, returns
    (process: (doc_id, text) pairs -> rows, documents per call); rows are written under `rel` part by part
    (`score_in_parts`), each written part's documents added to the accumulator `docs_done` (progress)."""
    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pyspark import TaskContext
        store = Store(store_uri)
        process, call_docs = setup()
        prefix = f"part-{run_id}-{TaskContext.get().partitionId():05d}-"
        # A retried task finds the parts its earlier attempts wrote (their cuts differ: parts are also
        # written on time and on failure): it skips their documents and numbers its parts after them.
        earlier = [p for p in store.list_files(*rel, suffix=".parquet") if p.startswith(prefix)]
        written = _doc_ids(store, rel, earlier)
        part_numbers = itertools.count(max((int(p[len(prefix):-len(".parquet")]) for p in earlier), default=-1) + 1)
        last = [time.perf_counter()]

        def write_part(rows: list[dict]) -> pd.DataFrame:
            store.write_table(pa.Table.from_pylist(rows, schema=schema), schema, *rel,
                              f"{prefix}{next(part_numbers):05d}.parquet")
            docs_done.add(len(rows))
            now = time.perf_counter()
            seconds, last[0] = now - last[0], now   # the task's time since its last part
            return pd.DataFrame({"n_docs": [len(rows)], "n_errors": [sum(r["error"] is not None for r in rows)],
                                 "n_tokens": [sum(r[tokens_key] or 0 for r in rows)], "seconds": [seconds]})

        docs = ((doc_id, text) for frame in frames for doc_id, text in zip(frame["doc_id"], frame["text"])
                if doc_id not in written)
        yield from score_in_parts(docs, process, write_part, call_docs, docs_per_part, flush_seconds)
    return run


def _doc_ids(store: Store, rel: tuple[str, ...], names: list[str]) -> set[str]:
    if not names:
        return set()
    dataset = ds.dataset([store.path(*rel, n) for n in names], filesystem=store.fs, format="parquet")
    return set(dataset.to_table(columns=["doc_id"])["doc_id"].to_pylist())


def drop_limit_errors(store: Store, rel: tuple[str, ...], schema: pa.Schema = schemas.SCORES) -> int:
    """Take the rows of limit-caused errors (`core.is_limit_error`) out of the parts in `rel`, each part
    rewritten atomically (deleted when nothing else is left), so that resume scores those documents
    again and their new rows replace them, never beside them. Returns how many rows were taken out."""
    names = store.list_files(*rel, suffix=".parquet")
    if not names:
        return 0
    limit_error = pc.starts_with(pc.field("error"), core.LIMIT_ERROR)
    dataset = ds.dataset([store.path(*rel, n) for n in names], filesystem=store.fs, format="parquet")
    hits = dataset.to_table(columns=["__filename"], filter=limit_error)["__filename"].to_pylist()
    for name in sorted({path.rsplit("/", 1)[-1] for path in hits}):
        table = store.read_table(*rel, name)
        kept = table.filter(pc.field("error").is_null() | ~limit_error)
        if kept.num_rows:
            store.write_table(kept, schema, *rel, name)
        else:
            store.delete(*rel, name)
    return len(hits)


def run_score(config: Config, spark, progress: Callable[[str, int, int], None] | None = None,
              doc_ids: list[str] | None = None) -> StageResult:
    """Score the store's documents with `config.score` (only `doc_ids` of them when given: a sample);
    resumes from what this scorer already wrote.
    counts: tokens (scored in this run) and tokens_total (of every document this scorer scored);
    outputs: scorer_id and identity (the scorer's _scorer.json)."""
    cfg = config.score
    run = StageRun("score", config, requires=("docs",))
    store = run.store
    if cfg.service_url:
        from pipeline.scoring.client import ScoringClient
        identity = ScoringClient(cfg.service_url, token=cfg.service_token).identity
    else:
        identity = local_identity(cfg)
        cfg = resolve_engine_settings(cfg)
    scorer_id = identity.scorer_id
    scorer_rel = ("scores", f"scorer={scorer_id}")
    with run:
        where = {} if cfg.service_url else {"model_path": str(Path(cfg.model).resolve())}
        store.write_json(sidecars.SCORER, {**identity.to_dict(), **where}, *scorer_rel, "_scorer.json")
        store.clear_temporary(*scorer_rel)  # one scorer's parts are written by one job at a time
        drop_limit_errors(store, scorer_rel)  # before resume reads what is done: those are not
        docs, n_selected, n_todo = pending_docs(spark, store, scorer_rel, cfg.where, "score.where", doc_ids)
        if progress:
            progress("score", 0, n_todo)
        parallelism = spark.sparkContext.defaultParallelism
        num_threads = max(1, (os.cpu_count() or 1) // parallelism) if config.spark.master.startswith("local") else 0
        docs_done = spark.sparkContext.accumulator(0)
        fn = score_partitions(store.uri, cfg.model_dump_json(), scorer_id, run.run_id, num_threads or 1, docs_done)
        scored = run_in_parts(spark, run, scorer_rel, docs, n_todo, cfg.docs_per_part, fn, docs_done,
                              f"score {scorer_id}", "score", progress)
        elapsed = time.time() - run.started
        part_files = [store.path(*scorer_rel, p) for p in store.list_files(*scorer_rel, suffix=".parquet")]
        tokens_total = int(pc.sum(ds.dataset(part_files, filesystem=store.fs, format="parquet")
                                  .to_table(columns=["n_tokens"])["n_tokens"]).as_py() or 0) if part_files else 0
        counts = {"selected_docs": n_selected, "already_scored": n_selected - n_todo,
                  "scored_now": scored["n_docs"], "errors": scored["n_errors"], "tokens": scored["n_tokens"],
                  "tokens_total": tokens_total, "parts": len(part_files)}
        tokens_per_s = round(scored["n_tokens"] / elapsed, 1) if elapsed and scored["n_tokens"] else 0.0
        run.timings.update(engine_s=round(scored["seconds"], 3), tokens_per_s=tokens_per_s)
        return run.finish(counts, scorer_id=scorer_id, identity=identity.to_dict())


def pending_docs(spark, store: Store, rel: tuple[str, ...], where: str | None, where_key: str,
                 doc_ids: list[str] | None = None):
    """(doc_id, text) of the documents `where` admits (only `doc_ids` of them when given) that have no
    row under `rel` yet; with how many were selected and how many are left."""
    docs = spark.read.parquet(store.spark_path("docs", "part-*.parquet"))
    if where:
        try:
            docs = docs.where(where)
        except Exception as e:  # AnalysisException: an unknown column or bad syntax
            raise UserError(f"{where_key} {where!r} is not a valid filter on docs: "
                            f"{str(e).splitlines()[0]}") from None
    docs = docs.select("doc_id", "text")
    if doc_ids is not None:
        wanted = spark.createDataFrame([(d,) for d in doc_ids], "doc_id string")
        docs = docs.join(wanted, "doc_id", "left_semi")
    n_selected = docs.count()
    done_parts = store.list_files(*rel, suffix=".parquet")
    if done_parts:
        done = spark.read.parquet(*[store.spark_path(*rel, p) for p in done_parts]).select("doc_id")
        docs = docs.join(done, "doc_id", "left_anti")
    return docs, n_selected, docs.count()


def run_in_parts(spark, run: StageRun, rel: tuple[str, ...], docs, n_todo: int, docs_per_part: int, fn,
                 docs_done, label: str, phase: str, progress: Callable | None) -> dict:
    """Run `fn` (`partitions_in_parts`) over the pending `docs`; the summed counts of the parts written.
    `label` starts with the verb (score, rate) that names a failure ("scoring failed: ...")."""
    store = run.store
    parallelism = spark.sparkContext.defaultParallelism
    # At least one partition per task slot (no idle cores); more for finer progress, up to a bound
    # (a partition streams its documents, so its size does not matter for memory).
    n_partitions = max(1, min(n_todo, max(parallelism, min(math.ceil(n_todo / docs_per_part), 64 * parallelism))))
    done = {"n_docs": 0, "n_errors": 0, "n_tokens": 0, "seconds": 0.0}
    if not n_todo:
        return done
    parts = docs.repartition(n_partitions, "doc_id").sortWithinPartitions("doc_id").mapInPandas(fn, _COUNTS_SCHEMA)

    def failure(reason: str) -> str:  # counted after the cancelled tasks have stopped
        kept = len(store.list_files(*rel, suffix=".parquet"))
        return (f"{label.split()[0].rstrip('e')}ing failed: {reason}. The {kept} part file(s) already written are kept; "
                "re-run the same command to resume.")
    report = (lambda: progress(phase, docs_done.value, n_todo)) if progress else (lambda: None)
    with run.phase(phase):
        rows = run_action(spark, f"curate-{phase}-{run.run_id}", label, parts.collect, report, failure)
    return {key: sum(row[key] for row in rows) for key in done}


def report(result: StageResult) -> Report:
    c, t, identity = result.counts, result.timings, result.outputs["identity"]
    scorer_id = result.outputs["scorer_id"]
    return Report(f"score {result.run_id} (scorer {scorer_id})", [
        ("model", identity["model_name"]), ("backend", identity["backend"]),
        ("truncation", identity["truncation_label"]), ("documents selected", c["selected_docs"]),
        ("  already scored (skipped)", c["already_scored"]), ("  scored now", c["scored_now"]),
        ("  without a score (error rows)", c["errors"]), ("tokens scored", c["tokens"]),
        ("tokens/s", f"{t['tokens_per_s']:,.0f}"), ("time", f"{t['total_s']:.1f}s")],
        notes=[f"scores: {result.store}/scores/scorer={scorer_id}/  "
               f"(SQL: SELECT * FROM scores WHERE scorer = '{scorer_id}')"])


def summary_row(result: StageResult) -> dict:
    c = result.counts
    return {"documents": c["selected_docs"], "tokens": c["tokens_total"],
            "status": f"{c['scored_now']:,} scored, {c['already_scored']:,} already",
            "output": f"scores/scorer={result.outputs['scorer_id']}/"}


def check_config(config: Config) -> None:
    if not (config.score.model or config.score.service_url):
        raise UserError("stage score: set score.model (a model directory) or score.service_url, or add "
                        "train_reference to stages")
