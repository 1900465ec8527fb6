"""Distill stage: a strong teacher judges a sample, a cheap student learns the judge, and the student
scores the whole store.

    sample   a seeded, stratified share of every `group_by` group (pipeline.distill.student), drawn
             from the documents `score.where` admits
    teacher  the score stage with the teacher model, on the sample only: scores/scorer=<teacher id>/
    student  fitted on the sample's texts and the teacher's target; k-fold agreement with the teacher
             (Spearman, band agreement) measured first; saved with its card in a model directory
    score    the score stage with the student model on every document: scores/scorer=<student id>/,
             an ordinary scores table every selection rule can use

Each step resumes: the teacher's and the student's scores like any scoring, and a student whose
teacher, sample and settings are unchanged is not fitted again.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from pipeline.config import Config
from pipeline.distill import student as core
from pipeline.distill.model import is_student_dir, read_card, write_student_dir
from pipeline.errors import UserError
from pipeline.hashing import seeded_keys, short_digest
from pipeline.stage import Report, StageResult, StageRun
from pipeline.store import Store

STAGE = "distill"
SMOLLM2 = "smollm2-135m"


def teacher_dir(config: Config) -> Path:
    """The teacher's model directory; SmolLM2-135M-Instruct is converted into <store>/models/ on first use."""
    teacher = config.distill.teacher
    if teacher == SMOLLM2:
        from pipeline.scoring.smollm2 import fetch_smollm2
        return fetch_smollm2(Store(config.store).path("models", SMOLLM2))
    path = Path(teacher)
    if not (path / "config.json").is_file():
        raise UserError(f"distill.teacher {teacher!r} is not a model directory (no config.json); use "
                        f"{SMOLLM2!r} or a Hugging Face causal-LM directory")
    return path


def scoring_with(config: Config, model_dir: Path, max_tokens: int | None = None) -> Config:
    """`config` scoring in-process with the model in `model_dir` (the teacher or the student): no
    service, first_n windows; score.where, the device and the parts settings stay."""
    return config.model_copy(update={"score": config.score.model_copy(update={
        "model": str(model_dir), "service_url": None, "max_tokens": max_tokens, "truncation": "first_n"})})


def teacher_config(config: Config, model_dir: Path) -> Config:
    return scoring_with(config, model_dir, config.distill.teacher_max_tokens)


def student_dir(config: Config) -> Path:
    """distill.out, else <store>/models/student."""
    if config.distill.out:
        return Path(config.distill.out)
    return Path(Store(config.store).path("models", "student"))


def settings(config: Config) -> core.StudentSettings:
    d = config.distill
    return core.StudentSettings(hash_bits=d.hash_bits, max_chars=d.max_chars, alpha=d.alpha)


def draw_sample(spark, config: Config) -> tuple[list[str], dict]:
    """The teacher's sample: distill.sample_fraction of every distill.group_by group among the documents
    score.where admits (`stratified_doc_sample`)."""
    d = config.distill
    return stratified_doc_sample(spark, config.store, config.score.where, d.group_by, d.sample_fraction,
                                 d.min_sample_docs, d.max_sample_docs, d.seed, STAGE)


def stratified_doc_sample(spark, store: str, where: str | None, group_by: str, fraction: float, min_docs: int,
                          max_docs: int, seed: int, stage: str) -> tuple[list[str], dict]:
    """The sample's doc ids (sorted) and how it was drawn: `fraction` of every group, raised to
    `min_docs` in all and capped at `max_docs` (never more than the documents)."""
    docs = spark.read.parquet(Store(store).spark_path("docs", "part-*.parquet"))
    if group_by not in docs.columns:
        raise UserError(f"{stage}.group_by {group_by!r} is not a docs column; docs columns: {', '.join(docs.columns)}")
    if where:
        docs = docs.where(where)
    frame = docs.select("doc_id", group_by).toPandas()
    ids = frame["doc_id"].to_numpy(dtype=object)
    groups = frame[group_by].to_numpy(dtype=object)
    n = len(ids)
    if n == 0:
        raise UserError(f"{stage}: no documents to sample" + (f" (where {where!r})" if where else ""))
    target = min(n, max_docs, max(min_docs, int(np.ceil(fraction * n))))
    chosen = core.stratified_sample(ids, groups, min(1.0, target / n), seed, min_per_group=1)
    if len(chosen) > target:   # rounding up per group overshoots: keep the smallest keys overall
        keys = seeded_keys(list(ids[chosen]), f"sample:{seed}")
        chosen = np.sort(chosen[np.argsort(keys, kind="stable")[:target]])
    sample = sorted(ids[chosen].tolist())
    info = {"group_by": group_by, "fraction": fraction, "min_docs": min_docs, "max_docs": max_docs, "seed": seed,
            "n_docs": len(sample), "n_groups": int(len(set(map(str, groups[chosen])))), "of_docs": n,
            "doc_ids_sha256": short_digest(sample)}
    return sample, info


def teacher_targets(config: Config, teacher_id: str, sample: list[str], target: str) -> tuple[list[str], list[str], np.ndarray]:
    """(doc_ids, texts, teacher's target) of the sample's documents the teacher scored without error."""
    from pipeline.sql import connect
    store = Store(config.store)
    con, _ = connect(store)
    con.register("sample_ids", pa.table({"doc_id": sample}))
    glob = store.spark_path("scores", f"scorer={teacher_id}", "part-*.parquet").replace("'", "''")
    rows = con.sql(f"""
        SELECT d.doc_id, d.text, s.{target} AS y FROM docs d
        JOIN read_parquet('{glob}') s USING (doc_id) JOIN sample_ids USING (doc_id)
        WHERE s.error IS NULL AND s.{target} IS NOT NULL AND isfinite(s.{target})
        ORDER BY d.doc_id""").to_arrow_table()
    return rows.column("doc_id").to_pylist(), rows.column("text").to_pylist(), rows.column("y").to_numpy()


def run_distill(config: Config, spark, progress: Callable | None = None) -> StageResult:
    """Sample, score the sample with the teacher, fit the student (unless an identical one exists) and
    score the store with it. outputs: teacher_id, student_id, student_dir, card (the student's
    curate_model.json), fitted (False when the student was kept), teacher and student score results."""
    from pipeline.scoring.identity import local_identity
    from pipeline.scoring.stage import run_score
    cfg = config.distill
    run = StageRun(STAGE, config, requires=("docs",))
    t_dir = teacher_dir(config)
    t_config = teacher_config(config, t_dir)
    t_identity = local_identity(t_config.score)
    out = student_dir(config)
    st_settings = settings(config)

    def phase_progress(name: str):
        return (lambda phase, done, total, detail="": progress(name, done, total, detail)) if progress else None

    with run:
        with run.phase("sample"):
            sample, sample_info = draw_sample(spark, config)
        with run.phase("teacher"):
            teacher = run_score(t_config, spark, phase_progress("teacher scores the sample"), doc_ids=sample)
        card = read_card(out) if is_student_dir(out) else None
        key = json.loads(json.dumps({"teacher": t_identity.scorer_id, "sample": sample_info["doc_ids_sha256"],
                                     "features": st_settings.as_dict(), "target": cfg.target, "folds": cfg.folds}))
        fitted = not (card and card.get("key") == key)
        if fitted:
            with run.phase("fit"):
                card = fit_student(config, t_dir, t_identity, sample, sample_info, st_settings, key, out)
        s_config = scoring_with(config, out)
        with run.phase("student"):
            student = run_score(s_config, spark, phase_progress("student scores the store"))
        s_timings = student.timings
        counts = {"sample_docs": sample_info["n_docs"], "teacher_scored_now": teacher.counts["scored_now"],
                  "teacher_docs": card["agreement"]["n_docs"],
                  "student_scored_now": student.counts["scored_now"], "docs": student.counts["selected_docs"],
                  "tokens_total": student.counts["tokens_total"]}
        run.timings.update(student_docs_per_s=_rate(student.counts["scored_now"], s_timings.get("score_s")),
                           teacher_docs_per_s=_rate(teacher.counts["scored_now"], teacher.timings.get("score_s")))
        return run.finish(counts, teacher_id=t_identity.scorer_id, student_id=student.outputs["scorer_id"],
                          student_dir=str(out), card=card, fitted=fitted, sample=sample_info)


def _rate(n: int, seconds: float | None) -> float | None:
    return round(n / seconds, 1) if n and seconds else None


def fit_student(config: Config, t_dir: Path, t_identity, sample: list[str], sample_info: dict,
                st_settings: "core.StudentSettings", key: dict, out: Path) -> dict:
    """Fit the student on the teacher's scores of the sample, measure its k-fold agreement, save it."""
    from pipeline.distill.engine import teacher_tokens
    from pipeline.scoring import core as scoring
    cfg = config.distill
    _, texts, y = teacher_targets(config, t_identity.scorer_id, sample, cfg.target)
    if len(y) < 2 * cfg.folds:
        raise UserError(f"distill: only {len(y)} sample documents have a teacher score; {2 * cfg.folds} at least "
                        f"are needed (raise distill.min_sample_docs or sample_fraction)")
    tokenizer = scoring.load_tokenizer(t_dir)
    tokens = [teacher_tokens(scoring.encode(tokenizer, scoring.truncate_text(t, t_identity)), st_settings.max_chars,
                             t_identity.max_tokens) for t in texts]
    started = time.time()
    agreement = core.cross_validate(texts, tokens, y, st_settings, folds=cfg.folds, seed=cfg.seed, rate=cfg.agreement_rate)
    student = core.Student.fit(texts, tokens, y, st_settings)
    fit_seconds = time.time() - started
    card = {"name": f"{t_identity.model_name}-student", "teacher": t_identity.to_dict(), "target": cfg.target,
            "sample": sample_info, "features": st_settings.as_dict(), "key": key,
            "agreement": {"spearman": agreement["spearman"], "band_agreement": agreement["band_agreement"],
                          "rate": agreement["rate"], "folds": agreement["folds"], "n_docs": len(y),
                          "teacher_mean": float(np.mean(y)), "teacher_std": float(np.std(y))},
            "fit_seconds": round(fit_seconds, 2)}
    write_student_dir(out, student.to_bytes(), t_dir, card)
    return read_card(out)


def report(result: StageResult) -> Report:
    o, c, t = result.outputs, result.counts, result.timings
    card, sample = o["card"], o["sample"]
    agreement = card["agreement"]
    bands = ", ".join(f"{k} {v:.0%}" for k, v in agreement["band_agreement"].items())
    spearman = agreement["spearman"]
    notes = [f"sample: {sample['n_docs']:,} of {sample['of_docs']:,} documents in {sample['n_groups']:,} "
             f"{sample['group_by']} group(s) (seed {sample['seed']}); the teacher scored {c['teacher_scored_now']:,} "
             f"of them now (scores/scorer={o['teacher_id']}/)",
             f"student {card['name']} ({'fitted now' if o['fitted'] else 'unchanged, kept'}): {agreement['folds']}-fold "
             f"agreement with the teacher on {agreement['n_docs']:,} documents: Spearman {spearman:.3f}; same side of "
             f"the band edges at rate {agreement['rate']:g}: {bands}",
             f"the student scored {c['student_scored_now']:,} of {c['docs']:,} documents now "
             f"(scores/scorer={o['student_id']}/); its directory: {o['student_dir']}"]
    if t.get("student_docs_per_s") and t.get("teacher_docs_per_s"):
        notes.append(f"speed: student {t['student_docs_per_s']:,.0f} documents/s, teacher {t['teacher_docs_per_s']:,.1f} "
                     f"documents/s ({t['student_docs_per_s'] / t['teacher_docs_per_s']:,.0f}x)")
    if spearman < 0.85:
        notes.append(f"note: the student follows its teacher loosely (Spearman {spearman:.2f} < 0.85); a larger "
                     "sample (distill.min_sample_docs, sample_fraction) usually brings it closer")
    return Report(f"distill {result.run_id}", notes=notes)


def summary_row(result: StageResult) -> dict:
    c = result.counts
    return {"documents": c["docs"], "tokens": c["tokens_total"],
            "status": f"{c['sample_docs']:,} sampled, {c['student_scored_now']:,} scored",
            "output": f"scores/scorer={result.outputs['student_id']}/"}


def check_config(config: Config) -> None:
    teacher = config.distill.teacher
    if teacher == SMOLLM2:
        from pipeline.scoring.smollm2 import smollm2_gguf_path
        smollm2_gguf_path()   # a UserError saying how to install it when it is missing
    elif not (Path(teacher) / "config.json").is_file():
        raise UserError(f"distill.teacher {teacher!r} is not a model directory (no config.json); use {SMOLLM2!r} "
                        "or a Hugging Face causal-LM directory")
    if config.distill.min_sample_docs > config.distill.max_sample_docs:
        raise UserError("distill: min_sample_docs is more than max_sample_docs")
