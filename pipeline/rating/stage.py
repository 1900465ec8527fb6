"""Rate stage: DataMan-style ratings of the store's documents -> `ratings/rater=<id>/`.

1. sample: a stratified share of every `rate.group_by` group (pipeline.distill.stage.stratified_doc_sample);
2. rate: the LLM rater rates the sample, in Spark tasks that write their rows in parts as they go (the
   score stage's machinery: a killed job keeps every written part and a re-run rates only the rest);
   in-process in each Python worker, or through `curate serve --rater`;
3. fit: a student per rating of `rate.students`, on the rater's expected scores, with k-fold agreement
   (kept when its key is unchanged);
4. students: the students rate every document into their own `ratings/rater=<student id>/`.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

import schemas
from schemas import sidecars
from pipeline.config import Config, RateConfig
from pipeline.errors import UserError
from pipeline.stage import Report, StageResult, StageRun
from pipeline.store import Store

STAGE = "rate"
SMOLLM2 = "smollm2-135m"
RATER_CALL_DOCS = 16   # documents per call of an in-process LLM rater (its token budget batches inside)
_RATERS: dict[str, object] = {}   # one rater per Python worker process


def rater_dir(config: Config) -> Path | None:
    """The LLM rater's model directory (None through a service); SmolLM2-135M-Instruct is converted into
    <store>/models/ on first use."""
    cfg = config.rate
    if cfg.service_url:
        return None
    if cfg.model == SMOLLM2:
        from pipeline.scoring.smollm2 import fetch_smollm2
        return fetch_smollm2(Store(config.store).path("models", SMOLLM2))
    if not (Path(cfg.model) / "config.json").is_file():
        raise UserError(f"rate.model {cfg.model!r} is not a model directory (no config.json); use {SMOLLM2!r} or "
                        "an instruct model's Hugging Face directory")
    return Path(cfg.model)


def students_dir(config: Config) -> Path:
    return Path(config.rate.student_out or Store(config.store).path("models", "rating-student"))


def students_rater_id(config: Config) -> str | None:
    """The rater id of the rate stage's students (rate.student_out), when they exist: what a rating rule
    reads by default, since they rate every document."""
    from pipeline.rating.students import is_rating_student, read_card, student_identity
    out = students_dir(config)
    return student_identity(read_card(out)).rater_id if is_rating_student(out) else None


def _rater(cfg_json: str, model: str, num_threads: int, rater_id: str):
    """This worker's rater (LLM, student or service client), built on first use."""
    key = f"{cfg_json}\0{model}\0{rater_id}"
    if key not in _RATERS:
        cfg = RateConfig.model_validate_json(cfg_json)
        if cfg.service_url and model == "":
            from pipeline.rating.client import RatingClient
            _RATERS[key] = RatingClient(cfg.service_url, token=cfg.service_token, batch_size=cfg.request_docs,
                                        max_concurrency=cfg.concurrency)
        else:
            from pipeline.rating.engines import load_rater
            options = dict(device=cfg.device, dtype=cfg.dtype, decoding=cfg.decoding, text_tokens=cfg.text_tokens,
                           token_budget=cfg.token_budget)
            if cfg.engine == "torch" and cfg.device == "cpu":
                options["num_threads"] = num_threads
            _RATERS[key] = load_rater(cfg.engine, model, **options)
    return _RATERS[key]


def rate_docs(config: Config, spark, run: StageRun, model: str, identity, phase: str, progress: Callable | None,
              doc_ids: list[str] | None = None) -> dict:
    """Rate the documents rate.where admits (only `doc_ids` of them when given) with the rater of `model`
    (a directory; "" for the service) into ratings/rater=<id>/, resuming from what it wrote."""
    from pipeline.scoring.stage import drop_limit_errors, partitions_in_parts, pending_docs, run_in_parts
    cfg, store = config.rate, run.store
    rater_id = identity.rater_id
    rel = ("ratings", f"rater={rater_id}")
    where = {"model_path": str(Path(model).resolve())} if model else {}
    store.write_json(sidecars.RATER, {**identity.to_dict(), **where}, *rel, "_rater.json")
    store.clear_temporary(*rel)       # one rater's parts are written by one job at a time
    drop_limit_errors(store, rel, schemas.RATINGS)
    docs, n_selected, n_todo = pending_docs(spark, store, rel, cfg.where, "rate.where", doc_ids)
    if progress:
        progress(phase, 0, n_todo)
    parallelism = spark.sparkContext.defaultParallelism
    num_threads = max(1, (os.cpu_count() or 1) // parallelism) if config.spark.master.startswith("local") else 1
    cfg_json = cfg.model_dump_json()

    def setup():
        rater = _rater(cfg_json, model, num_threads, rater_id)
        if rater.identity.rater_id != rater_id:   # the service or model changed under a running job
            raise UserError(f"rater identity changed: expected {rater_id}, got {rater.identity.rater_id}")
        call_docs = rater.request_docs * cfg.concurrency if hasattr(rater, "request_docs") else RATER_CALL_DOCS
        return rater.rate, min(call_docs, cfg.docs_per_part)

    docs_done = spark.sparkContext.accumulator(0)
    fn = partitions_in_parts(store.uri, rel, schemas.RATINGS, run.run_id, docs_done, setup, cfg.docs_per_part,
                             cfg.flush_seconds, "n_text_tokens")
    done = run_in_parts(spark, run, rel, docs, n_todo, cfg.docs_per_part, fn, docs_done, f"rate {rater_id}", phase,
                        progress)
    return {"rater_id": rater_id, "selected": n_selected, "already": n_selected - n_todo, "now": done["n_docs"],
            "seconds": done["seconds"]}


def llm_identity_of(config: Config, model_dir: Path | None):
    cfg = config.rate
    if model_dir is None:
        from pipeline.rating.client import RatingClient
        return RatingClient(cfg.service_url, token=cfg.service_token).identity
    from pipeline.rating.rater import llm_identity
    from pipeline.scoring.identity import default_dtype
    return llm_identity(model_dir, cfg.engine, cfg.dtype or default_dtype(cfg.device), cfg.decoding, cfg.text_tokens)


def sample_ratings(store: Store, rater_id: str, sample: list[str], columns: list[str]) -> pa.Table:
    """doc_id, text, host and `columns` of the sample's documents the rater rated and whose answer parsed."""
    from pipeline.sql import connect
    con, _ = connect(store)
    con.register("sample_ids", pa.table({"doc_id": sample}))
    glob = store.spark_path("ratings", f"rater={rater_id}", "part-*.parquet").replace("'", "''")
    cols = ", ".join(f"r.{c}" for c in columns)
    return con.sql(f"""SELECT d.doc_id, d.text, {cols} FROM docs d JOIN read_parquet('{glob}') r USING (doc_id)
                       JOIN sample_ids USING (doc_id) WHERE r.parsed ORDER BY d.doc_id""").to_arrow_table()


def fit_students(config: Config, store: Store, identity, model_dir: Path | None, sample: list[str],
                 sample_info: dict) -> dict:
    """A student per rating of rate.students on the rater's expected scores of the sample, with k-fold
    agreement; kept as it is when its key (rater, sample, targets, folds) has not changed. The card."""
    from pipeline.distill.student import Student, StudentSettings
    from pipeline.rating.students import agreement, is_rating_student, read_card, tokens_of, write_students
    from pipeline.scoring import core
    cfg, out = config.rate, students_dir(config)
    settings = StudentSettings()
    key = json.loads(json.dumps({"rater": identity.rater_id, "sample": sample_info["doc_ids_sha256"],
                                 "targets": cfg.students, "folds": cfg.folds, "features": settings.as_dict()}))
    if is_rating_student(out) and read_card(out).get("key") == key:
        return read_card(out)
    table = sample_ratings(store, identity.rater_id, sample,
                           [c for t in cfg.students for c in (t, f"{t}_expected")])
    if table.num_rows < 2 * cfg.folds:
        raise UserError(f"rate: only {table.num_rows} sample documents have a parsed rating; {2 * cfg.folds} at least "
                        "are needed to fit a student (raise rate.min_sample_docs, or use decoding: constrained)")
    texts = table.column("text").to_pylist()
    tokenizer = core.load_tokenizer(model_dir)
    tokens = tokens_of(tokenizer, texts, identity.text_tokens, settings)
    students, agreements = {}, {}
    started = time.time()
    for target in cfg.students:
        expected = table.column(f"{target}_expected").to_numpy(zero_copy_only=False).astype(np.float64)
        scores = table.column(target).to_numpy(zero_copy_only=False).astype(np.float64)
        agreements[target] = agreement(texts, tokens, expected, scores, settings, cfg.folds, cfg.seed)
        students[target] = Student.fit(texts, tokens, expected, settings)
    card = {"name": f"{identity.model_name}-rating-student", "rater": identity.to_dict(), "targets": list(cfg.students),
            "sample": sample_info, "features": settings.as_dict(), "key": key, "agreement": agreements,
            "fit_seconds": round(time.time() - started, 2)}
    write_students(out, students, model_dir, card)
    return read_card(out)


def run_rate(config: Config, spark, progress: Callable | None = None) -> StageResult:
    """Sample, rate the sample with the LLM rater, fit the students and let them rate every document.
    outputs: rater_id, student_id (None without students), card (the students' card), by_host (the
    mean ratings per host of the sample and of the students), sample."""
    from pipeline.distill.stage import stratified_doc_sample
    from pipeline.rating.report import by_host, rating_counts
    from pipeline.rating.students import student_identity
    cfg = config.rate
    run = StageRun(STAGE, config, requires=("docs",))
    store = run.store
    model_dir = rater_dir(config)
    identity = llm_identity_of(config, model_dir)

    def phase_progress(name: str):
        return (lambda phase, done, total, detail="": progress(name, done, total, detail)) if progress else None

    with run:
        with run.phase("sample"):
            sample, sample_info = stratified_doc_sample(spark, config.store, cfg.where, cfg.group_by,
                                                        cfg.sample_fraction, cfg.min_sample_docs,
                                                        cfg.max_sample_docs, cfg.seed, STAGE)
        llm = rate_docs(config, spark, run, str(model_dir) if model_dir else "", identity, "rate",
                        phase_progress(f"{identity.model_name} rates the sample"), doc_ids=sample)
        card, student = None, None
        if cfg.students:
            with run.phase("fit"):
                card = fit_students(config, store, identity, model_dir, sample, sample_info)
            s_dir = students_dir(config)
            student = rate_docs(config, spark, run, str(s_dir), student_identity(card), "students",
                                phase_progress("the students rate the store"))
        counts = {"sample_docs": sample_info["n_docs"], "rated_now": llm["now"], "already_rated": llm["already"],
                  **rating_counts(store, llm["rater_id"]),
                  "student_rated_now": student["now"] if student else 0,
                  "docs": student["selected"] if student else llm["selected"]}
        run.timings.update(rater_docs_per_s=_per_s(llm["now"], llm["seconds"]),
                           student_docs_per_s=_per_s(student["now"], student["seconds"]) if student else 0.0)
        return run.finish(counts, rater_id=llm["rater_id"], rater=identity.to_dict(),
                          student_id=student["rater_id"] if student else None, card=card, sample=sample_info,
                          by_host=by_host(store, llm["rater_id"], student["rater_id"] if student else None,
                                          cfg.group_by))


def _per_s(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if n and seconds else 0.0


def check_config(config: Config) -> None:
    if config.rate.service_url and config.rate.students:
        raise UserError("rate: students count tokens with the rater's tokenizer, which a service does not send: "
                        "set rate.students: [] to rate through rate.service_url, or rate in-process (rate.model)")


def report(result: StageResult) -> Report:
    o, c, t = result.outputs, result.counts, result.timings
    rater, sample = o["rater"], o["sample"]
    rows = [("rater", f"{rater['model_name']} ({rater['backend']}, {rater['decoding']} decoding, "
                      f"{rater['text_tokens']} text tokens)"),
            ("sample", f"{sample['n_docs']:,} of {sample['of_docs']:,} documents, {sample['n_groups']:,} "
                       f"{sample['group_by']} group(s)"),
            ("rated now / already", f"{c['rated_now']:,} / {c['already_rated']:,}"),
            ("answers parsed", f"{c['parsed']:,} of {c['rated']:,} ({c['unparsed']:,} unparsed, kept with their error)"),
            ("rater speed", f"{t.get('rater_docs_per_s', 0):,.2f} documents/s")]
    notes = [f"ratings: {result.store}/ratings/rater={o['rater_id']}/  (SQL: SELECT * FROM ratings "
             f"WHERE rater_id = '{o['rater_id']}')"]
    card = o.get("card")
    if card:
        for target, a in card["agreement"].items():
            rows.append((f"student {target}", f"{a['folds']}-fold on {a['n_docs']:,} documents: Spearman "
                                               f"{a['spearman']:.3f}, accuracy {a['accuracy']:.0%} (always the mean: "
                                               f"{a['constant_accuracy']:.0%}), within one {a['within_one']:.0%}"))
        rows.append(("students rated now", f"{c['student_rated_now']:,} of {c['docs']:,} documents "
                                           f"({t.get('student_docs_per_s', 0):,.0f} documents/s)"))
        notes.append(f"student ratings: {result.store}/ratings/rater={o['student_id']}/")
    tables = []
    if o.get("by_host"):
        columns = {k: [row.get(k) for row in o["by_host"]] for k in o["by_host"][0]}
        tables.append((f"mean Overall Score by {sample['group_by']} (sample: the rater; all documents: the students)",
                       pa.table({k: [round(v, 2) if isinstance(v, float) else v for v in vs]
                                 for k, vs in columns.items()})))
    return Report(f"rate {result.run_id}", rows, tables, notes)


def summary_row(result: StageResult) -> dict:
    c, o = result.counts, result.outputs
    return {"documents": c["docs"], "tokens": None,
            "status": f"{c['rated']:,} rated by the LLM ({c['unparsed']:,} unparsed), "
                      f"{c['student_rated_now']:,} by the students",
            "output": f"ratings/rater={o['student_id'] or o['rater_id']}/"}
