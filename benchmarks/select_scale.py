"""Select stage at scale: a synthetic store of N documents (2,000 Zipf-sized domains, three languages)
with one scorer, selected with several rule sets; beside each, the plain DuckDB query that computes
the same medium band, as the floor a selection cannot beat.

    python benchmarks/select_scale.py              # 1,000,000 documents
    python benchmarks/select_scale.py --docs 200000

Prints seconds per selection (read, rules, write), documents per second, peak memory, and the ratio
to the bare query (the stage also writes one row per document, the thresholds and a report).
"""
from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def write_store(root: str, n: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa

    import schemas
    from pipeline.scoring.identity import ScorerIdentity
    from pipeline.store import Store
    from schemas import sidecars
    rng = np.random.default_rng(seed)
    store = Store(root)
    ids = np.char.mod("%032x", np.arange(n))
    domains = np.array([f"site{i}.org" for i in range(2000)])[rng.zipf(1.5, n) % 2000]

    def constant(value, type_=pa.string()):
        return pa.array([value] * n, type_)
    docs = pa.table({"doc_id": ids, "text": constant("x"), "url": pa.nulls(n, pa.string()), "host": domains,
                     "domain": domains, "source_id": pa.nulls(n, pa.string()), "source_file": constant("f.jsonl"),
                     "source_offset": np.arange(n), "source_format": constant("jsonl"),
                     "n_bytes": rng.integers(100, 5000, n), "n_chars": rng.integers(100, 5000, n),
                     "language": rng.choice(["en", "de", "fr"], n, p=[0.7, 0.2, 0.1]),
                     "language_score": pa.array(np.full(n, 0.9, dtype=np.float32)),
                     "metadata": pa.nulls(n, pa.string()), "duplicate_count": np.ones(n, dtype=np.int64),
                     "duplicate_sources": pa.nulls(n, pa.list_(schemas.SOURCE))})
    store.write_table(docs, schemas.DOCS, "docs", "part-00000.parquet")
    ppl = rng.lognormal(3, 1, n)
    scores = pa.table({"doc_id": ids, "scorer_id": constant("s"), "model_name": constant("m"),
                       "backend": constant("torch"), "dtype": constant("float32"), "truncation": constant("first_n:128"),
                       "n_tokens": rng.integers(20, 1000, n), "n_predicted": np.full(n, 128),
                       "n_bytes": rng.integers(100, 5000, n), "nll_sum": 128 * np.log(ppl), "nll_mean": np.log(ppl),
                       "perplexity": ppl, "bits_per_byte": np.log(ppl) / 3, "nll_p50": pa.nulls(n, pa.float32()),
                       "nll_p90": pa.nulls(n, pa.float32()), "surprise_fraction": pa.nulls(n, pa.float32()),
                       "error": pa.nulls(n, pa.string())})
    store.write_table(scores, schemas.SCORES, "scores", "scorer=s", "part-00000.parquet")
    identity = ScorerIdentity(model_name="m", weights_sha256="0" * 64, tokenizer="m@0", dtype="float32",
                              backend="torch", max_tokens=128)
    store.write_json(sidecars.SCORER, {**identity.to_dict(), "scorer_id": "s"}, "scores", "scorer=s", "_scorer.json")


BARE_QUERY = """
    WITH s AS (SELECT doc_id, perplexity FROM read_parquet('{root}/scores/scorer=s/part-*.parquet')),
         q AS (SELECT quantile_cont(perplexity, 0.25) AS lo, quantile_cont(perplexity, 0.75) AS hi FROM s)
    SELECT count(*) FILTER (perplexity > lo AND perplexity <= hi)
    FROM read_parquet('{root}/docs/part-*.parquet') d JOIN s USING (doc_id), q"""


def main() -> None:
    import duckdb

    from pipeline.config import Config
    from pipeline.selection.stage import run_select
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="select-scale-")
    t = time.time()
    write_store(root, args.docs)
    print(f"{args.docs:,} documents, 2,000 domains: store written in {time.time() - t:.1f}s ({root})")

    t = time.time()
    bare_kept = duckdb.execute(BARE_QUERY.format(root=root)).fetchone()[0]
    bare_s = time.time() - t
    print(f"bare DuckDB query, medium 50%: {bare_s:.2f}s, {bare_kept:,} kept")
    rule_sets = {
        "medium 50%": [{"type": "band", "criterion": "medium", "rate": 0.5}],
        "en, then medium 50% per domain": [{"type": "where", "sql": "language = 'en'"},
                                           {"type": "band", "criterion": "medium", "rate": 0.5, "by": "domain"}],
        "BERTIN gaussian 50%": [{"type": "bertin", "method": "gaussian", "rate": 0.5}],
    }
    print(f"{'rules':<34}{'seconds':>9}{'read':>7}{'docs/s':>12}{'kept':>10}{'x bare':>8}")
    for label, rules in rule_sets.items():
        cfg = Config.model_validate({"store": root, "select": {"name": "bench", "rules": rules}})
        t = time.time()
        result = run_select(cfg, overwrite=True)
        s = time.time() - t
        print(f"{label:<34}{s:>9.1f}{result.timings['read_s']:>7.1f}{args.docs / s:>12,.0f}"
              f"{result.counts['kept']:>10,}{s / bare_s:>8.1f}")
    cfg = Config.model_validate({"store": root, "select": {"name": "bench", "rules": rule_sets["medium 50%"]}})
    t = time.time()
    run_select(cfg, sweep=(["low", "medium", "high"], [0.1, 0.3, 0.5, 0.7]))
    print(f"sweep, 3 criteria x 4 rates: {time.time() - t:.1f}s")
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
