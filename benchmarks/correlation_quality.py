"""Perplexity correlations on a corpus where one group of domains is degraded text: do the estimates
rank those domains below the clean ones, and does the page selector drop their pages?

    python benchmarks/correlation_quality.py                          # 60 clean pages per source
    python benchmarks/correlation_quality.py --target all --rungs 10

The corpus (benchmarks/mixed_corpus.py, real text from ../shared/data/nltk): seven clean sources, each
on its own host, and degraded copies (shuffled words, character noise, keyword spam, navigation
boilerplate, truncated-and-repeated lines) of a share of them, each kind on a host of its own
(<kind>.degraded.example.com): a group of domains made of degraded text. The pipeline
ingests it and runs `curate correlate` with the offline default (a ladder of small models trained on
domain subsets, a cloze task from held-out target documents, metric bits_per_byte). The target is
the clean hosts (`--target clean`) or a held-out share of the whole store (`--target all`).

It prints the mean estimate rank of the clean and the degraded domains, the share of each group's
tokens the projection keeps, and the share of clean and degraded pages the page selector drops at
keep fraction 0.5.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED_NLTK = REPO.parent / "shared" / "data" / "nltk"

from benchmarks import mixed_corpus  # noqa: E402


def write_corpus(out: Path, nltk_dir: Path, per_source: int, degraded_fraction: float, seed: int = 0) -> dict:
    """Clean pages on <source>.mixed.example.com, degraded ones on <kind>.degraded.example.com."""
    records = mixed_corpus.build(nltk_dir, per_source, degraded_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(out / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
        for r in records:
            host = (f"{r['source']}.mixed.example.com" if r["kind"] == "clean" else
                    f"{r['kind'].replace('_', '-')}.degraded.example.com")
            f.write(json.dumps({"id": r["id"], "text": r["text"], "url": f"https://{host}/{r['id']}"}) + "\n")
    clean = sum(r["kind"] == "clean" for r in records)
    return {"clean": clean, "degraded": len(records) - clean}


def run(work: Path, nltk_dir: Path, per_source: int, degraded_fraction: float, target: str, rungs: int,
        ladder: dict | None = None) -> dict:
    from pipeline.config import Config
    from pipeline.budgets import keep_by_score
    from pipeline.correlations.stage import run_correlate
    from pipeline.ingest.stage import run_ingest
    from pipeline.spark import get_spark
    from pipeline.sql import connect
    from pipeline.store import Store

    counts = write_corpus(work / "raw", nltk_dir, per_source, degraded_fraction)
    cfg = Config.model_validate({
        "store": str(work / "store"), "spark": {"master": "local[2]", "shuffle_partitions": 4},
        "ingest": {"inputs": [str(work / "raw")], "num_shards": 2},
        "correlate": {"ladder": {"rungs": rungs, **(ladder or {})}, "metric": "bits_per_byte", "pages_per_domain": 20,
                      "min_domain_pages": 5, "target_docs": 150, "task_items": 100,
                      "target_where": "host LIKE '%.mixed.example.com'" if target == "clean" else None}})
    spark = get_spark(cfg.spark)
    t = time.time()
    run_ingest(cfg, spark)
    timings = {"ingest": time.time() - t}
    t = time.time()
    result = run_correlate(cfg, spark)
    timings["correlate"] = time.time() - t
    timings.update({k: v for k, v in result.timings.items() if k.endswith("_s")})

    est = result.outputs["estimates"].to_pandas()
    est["degraded"] = est["domain"].str.endswith(".degraded.example.com")
    con, _ = connect(Store(cfg.store))
    pages = con.execute("""SELECT p.p_include, d.n_bytes, d.host LIKE '%.degraded.example.com' AS degraded
                           FROM page_scores p JOIN docs d USING (doc_id) ORDER BY d.doc_id""").df()
    keep = keep_by_score(pages["p_include"].to_numpy(), pages["n_bytes"].to_numpy(), keep_fraction=0.5)
    degraded = pages["degraded"].to_numpy(dtype=bool)
    return {"counts": counts, "timings": timings, "domains": len(est),
            "mean_rank": {"clean": float(est.loc[~est.degraded, "rank"].mean()),
                          "degraded": float(est.loc[est.degraded, "rank"].mean())},
            "weight": {"clean": float(est.loc[~est.degraded, "weight"].sum()),
                       "degraded": float(est.loc[est.degraded, "weight"].sum())},
            "selector_dropped": {"clean": float(1 - keep[~degraded].mean()), "degraded": float(1 - keep[degraded].mean())},
            "selector": result.outputs["selector"], "models": len(result.outputs["models"]),
            "top": est.sort_values("rank")["domain"].head(5).tolist(),
            "bottom": est.sort_values("rank")["domain"].tail(5).tolist()}


def print_results(r: dict) -> None:
    print(f"corpus: {r['counts']['clean']:,} clean and {r['counts']['degraded']:,} degraded pages; "
          f"{r['domains']} domains, {r['models']} models")
    print(f"mean estimate rank (1 = best): clean {r['mean_rank']['clean']:.1f}, degraded {r['mean_rank']['degraded']:.1f}")
    print(f"projected weight: clean {r['weight']['clean']:.1%}, degraded {r['weight']['degraded']:.1%}")
    d = r["selector_dropped"]
    print(f"page selector at keep_fraction 0.5: dropped {d['clean']:.1%} of clean pages, {d['degraded']:.1%} of "
          f"degraded pages ({d['degraded'] / max(d['clean'], 1e-9):.1f}x)")
    s = r["selector"]
    print(f"selector held-out: precision {s['precision']:.3f} recall {s['recall']:.3f} F1 {s['f1']:.3f}")
    print(f"top: {', '.join(r['top'])}\nbottom: {', '.join(r['bottom'])}")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r["timings"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-source", type=int, default=60)
    parser.add_argument("--degraded-fraction", type=float, default=0.5)
    parser.add_argument("--target", choices=["clean", "all"], default="clean")
    parser.add_argument("--rungs", type=int, default=8)
    parser.add_argument("--steps", type=str, default=None, help="the rungs' steps, comma-separated")
    parser.add_argument("--nltk", type=Path, default=SHARED_NLTK)
    parser.add_argument("--work", type=Path, default=None, help="keep the corpus and store here")
    args = parser.parse_args()
    if not args.nltk.is_dir():
        sys.exit(f"no corpus data at {args.nltk}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        ladder = {"steps": [int(x) for x in args.steps.split(",")]} if args.steps else {}
        print_results(run(work, args.nltk, args.per_source, args.degraded_fraction, args.target, args.rungs, ladder))


if __name__ == "__main__":
    main()
