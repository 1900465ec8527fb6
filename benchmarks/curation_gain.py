"""Does a curation choice help? `curate evaluate` on real text with one degraded group: proxies trained on
the same number of tokens from a random subset of the store and from the store without the degraded host,
over several seeds, judged on a target set of clean pages no arm sees.

    python benchmarks/curation_gain.py                   # 3 seeds, about a minute on 2 idle CPU cores
    python benchmarks/curation_gain.py --seeds 5 --degradation char_noise --steps 400

The corpus is benchmarks/mixing_quality.py's (real text from ../shared/data/nltk): clean pages of six
sources, each on its own host, and one host of degraded copies of other pages of the same sources
(`--degradation`, every kind in turn by default). `--target-per-source` further clean pages of each source
go to target.mixed.example.com: the target set (`evaluate.target_where`), held out of every arm. The
pipeline ingests the corpus, selects `clean-hosts` (every host but the degraded one: what a user does after
seeing the degraded group's ratings, perplexities or mixture weight) and runs `curate evaluate` with that
selection against the random subset.

It prints the evaluation's tables (the target's loss per arm: mean and spread over seeds, the per-seed
difference from random and its spread, the verdict; the mean loss per held-out group) and the timings.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED_NLTK = REPO.parent / "shared" / "data" / "nltk"

from benchmarks import mixed_corpus  # noqa: E402
from benchmarks.mixing_quality import DEGRADED_HOST, build_corpus  # noqa: E402

TARGET_HOST = "target.mixed.example.com"


def with_target(records: list[dict], per_source: int, seed: int) -> list[dict]:
    """Move `per_source` clean pages of each source to TARGET_HOST."""
    rng = random.Random(seed)
    by_source: dict[str, list[dict]] = {}
    for r in records:
        if r["kind"] == "clean":
            by_source.setdefault(r["source"], []).append(r)
    for pages in by_source.values():
        for r in rng.sample(pages, min(per_source, len(pages) - 1)):
            r["url"] = f"https://{TARGET_HOST}/{r['source']}/{r['id']}"
    return records


def config(work: Path, args):
    from pipeline.config import Config
    return Config.model_validate({
        "store": str(work / "store"), "spark": {"master": "local[2]", "shuffle_partitions": 4},
        "ingest": {"inputs": [str(work / "raw")], "num_shards": 2},
        "select": {"name": "clean-hosts", "rules": [{"type": "where", "sql": f"host <> '{DEGRADED_HOST}'"}]},
        "evaluate": {"arms": ["selection:clean-hosts"], "target_where": f"host = '{TARGET_HOST}'",
                     "seeds": args.seeds, "steps": args.steps, "seed": args.seed}})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-source", type=int, default=150, help="clean pages per source (6 sources)")
    parser.add_argument("--target-per-source", type=int, default=20, help="of which on the target host")
    parser.add_argument("--degraded-docs", type=int, default=150, help="pages on the degraded host")
    parser.add_argument("--degradation", default="mixed", choices=[*mixed_corpus.DEGRADATIONS, "mixed"])
    parser.add_argument("--seed", type=int, default=0, help="the corpus's and the evaluation's seed")
    parser.add_argument("--seeds", type=int, default=3, help="proxies per arm")
    parser.add_argument("--steps", type=int, default=300, help="training steps of each proxy")
    parser.add_argument("--nltk", type=Path, default=SHARED_NLTK)
    parser.add_argument("--work", type=Path, default=None, help="keep the corpus and store here")
    args = parser.parse_args()
    if not args.nltk.is_dir():
        print(f"skipped: the corpora are not at {args.nltk}")
        return 0
    from pipeline.evaluate.stage import report, run_evaluate
    from pipeline.ingest.stage import run_ingest
    from pipeline.selection.stage import run_select
    from pipeline.spark import get_spark

    with tempfile.TemporaryDirectory(prefix="curation-gain-") as tmp:
        work = args.work or Path(tmp)
        timings, t = {}, time.time()
        records = build_corpus(args.nltk, args.per_source, args.degraded_docs, args.degradation, seed=args.seed)
        mixed_corpus.write(with_target(records, args.target_per_source, args.seed), work / "raw")
        cfg = config(work, args)
        spark = get_spark(cfg.spark)
        run_ingest(cfg, spark)
        spark.stop()
        run_select(cfg, overwrite=True)
        timings["corpus, ingest, select"], t = time.time() - t, time.time()
        result = run_evaluate(cfg)
        timings["evaluate"] = time.time() - t
        clean = sum(r["kind"] == "clean" for r in records)
        print(f"corpus (seed {args.seed}): {clean:,} clean pages of 6 sources ({args.target_per_source} per source "
              f"on {TARGET_HOST}, the target), {len(records) - clean:,} degraded ({args.degradation}) on "
              f"{DEGRADED_HOST}")
        print(f"evaluate: {args.seeds} seeds, {args.steps} steps per proxy\n")
        print(report(result).text())
        print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
