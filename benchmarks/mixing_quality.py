"""Data mixing on real text with one degraded group: does the mix stage's Aioli move weight away from
the degraded group, and is its mean held-out loss no worse than stratified sampling's?

    python benchmarks/mixing_quality.py                  # 2 seeds, ~6 minutes on 2 CPU cores
    python benchmarks/mixing_quality.py --seeds 1 --seed 3 --degradation mixed

The corpus (benchmarks/mixed_corpus.py, real text from ../shared/data/nltk): clean pages of six sources
(Brown, a browser's support forum, overheard conversations, movie reviews, rural and science news), each
on its own host <source>.mixed.example.com, and one host, noisy.degraded.example.com, of degraded copies
of other real pages of the same sources (`--degradation`: character noise by default, or every kind in
turn). The pipeline ingests it and runs `curate mix` grouped by host with stratified sampling and Aioli,
each training a fresh proxy (the same seed and initial weights) for the same number of steps.

It prints, per seed, one table (method, proportions per group, mean held-out loss over the groups, its
perplexity), the degraded group's weight under each method against stratified's 1/m, and Aioli's mean
loss minus stratified's (negative: Aioli is better); then the same over all seeds.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED_NLTK = REPO.parent / "shared" / "data" / "nltk"

from benchmarks import mixed_corpus  # noqa: E402

CLEAN_SOURCES = ("brown", "forum", "overheard", "reviews", "rural", "science")
DEGRADED_HOST = "noisy.degraded.example.com"


def build_corpus(nltk_dir: Path, per_source: int, degraded_docs: int, degradation: str, passes: int = 1,
                 sources: tuple[str, ...] = CLEAN_SOURCES, seed: int = 0) -> list[dict]:
    """`per_source` clean pages of each source on its own host, and `degraded_docs` degraded copies of
    *other* pages of the same sources (in turn) on DEGRADED_HOST; `degradation` is a kind of
    mixed_corpus.DEGRADATIONS or `mixed` (every kind in turn), applied `passes` times to each page."""
    rng = random.Random(seed)
    docs = mixed_corpus.source_documents(nltk_dir)
    records, spare = [], {}
    for source in sources:
        picked = rng.sample(docs[source], min(len(docs[source]), per_source + degraded_docs))
        records += [{"text": t, "source": source, "kind": "clean"} for t in picked[:per_source]]
        spare[source] = picked[per_source:]
    kinds = mixed_corpus.DEGRADATIONS if degradation == "mixed" else (degradation,)
    for i in range(degraded_docs):
        source = sources[i % len(sources)]
        text = spare[source][i // len(sources)]
        for _ in range(passes):
            text = mixed_corpus.degrade(text, kinds[i % len(kinds)], rng)
        records.append({"text": text, "source": source, "kind": kinds[i % len(kinds)]})
    rng.shuffle(records)
    for i, r in enumerate(records):
        host = f"{r['source']}.mixed.example.com" if r["kind"] == "clean" else DEGRADED_HOST
        r["id"], r["url"] = f"{r['kind']}-{i}", f"https://{host}/{r['kind']}/{i}"
    return records


def mix_config(store: Path, raw: Path, seed: int, steps: int, max_docs: int, proxy: dict, aioli: dict,
               methods: list[str]):
    from pipeline.config import Config
    return Config.model_validate({
        "store": str(store), "spark": {"master": "local[2]", "shuffle_partitions": 4},
        "ingest": {"inputs": [str(raw)], "num_shards": 2},
        "mix": {"name": f"bench-{seed}", "group_by": "host", "max_docs_per_group": max_docs, "steps": steps,
                "methods": methods, "use": "aioli", "seed": seed, "proxy": proxy, "aioli": aioli}})


def run(work: Path, nltk_dir: Path, args, proxy: dict, aioli: dict) -> dict:
    from pipeline.ingest.stage import run_ingest
    from pipeline.mixing.stage import run_mix
    from pipeline.spark import get_spark

    timings = {}
    t = time.time()
    records = build_corpus(nltk_dir, args.per_source, args.degraded_docs, args.degradation, args.passes, seed=args.seed)
    mixed_corpus.write(records, work / "raw")
    seeds = [args.seed + k for k in range(args.seeds)]
    cfg = mix_config(work / "store", work / "raw", seeds[0], args.steps, args.max_docs, proxy, aioli, args.methods)
    spark = get_spark(cfg.spark)
    run_ingest(cfg, spark)
    spark.stop()
    timings["corpus + ingest"] = time.time() - t
    runs = []
    for seed in seeds:
        t = time.time()
        cfg = mix_config(work / "store", work / "raw", seed, args.steps, args.max_docs, proxy, aioli, args.methods)
        result = run_mix(cfg)
        timings[f"mix seed {seed}"] = time.time() - t
        runs.append({"seed": seed, **result.outputs})
    clean = sum(r["kind"] == "clean" for r in records)
    return {"counts": {"clean": clean, "degraded": len(records) - clean}, "runs": runs, "timings": timings}


def print_run(r: dict) -> dict:
    """The table of one seed; returns the degraded group's weight per method and Aioli minus stratified."""
    names = list(r["groups"])
    short = [n.split(".")[0] for n in names]
    methods = r["methods"]
    print(f"seed {r['seed']}: {len(names)} groups, proxy {r['proxy']['params']:,} parameters, "
          f"{r['proxy']['tokens_per_second']:,.0f} tokens/s")
    print(f"{'method':<12}" + "".join(f"{s:>10}" for s in short) + f"{'mean loss':>11}{'ppl':>8}")
    for method, m in methods.items():
        print(f"{method:<12}" + "".join(f"{m['final'][n]:>10.3f}" for n in names)
              + f"{m['mean_loss']:>11.4f}{np.exp(m['mean_loss']):>8.2f}")
    print(f"{'  loss':<12}" + "".join(f"{'':>10}" for _ in names))
    for method, m in methods.items():
        print(f"{'  ' + method:<12}" + "".join(f"{m['losses'][n]:>10.3f}" for n in names))
    degraded = {method: m["final"][DEGRADED_HOST] for method, m in methods.items()}
    out = {"degraded": degraded, "m": len(names)}
    print(f"degraded group's weight (stratified 1/m = {1 / len(names):.3f}): "
          + ", ".join(f"{k} {v:.3f}" for k, v in degraded.items()))
    if "aioli" in methods and "stratified" in methods:
        out["delta"] = methods["aioli"]["mean_loss"] - methods["stratified"]["mean_loss"]
        out["ppl_delta"] = np.exp(methods["aioli"]["mean_loss"]) - np.exp(methods["stratified"]["mean_loss"])
        print(f"aioli mean loss - stratified: {out['delta']:+.4f} nats (perplexity {out['ppl_delta']:+.3f})")
    print()
    return out


def print_results(results: dict, args, proxy: dict, aioli: dict) -> None:
    c = results["counts"]
    print(f"corpus (seed {args.seed}): {c['clean']:,} clean pages of {len(CLEAN_SOURCES)} sources, "
          f"{c['degraded']:,} degraded ({args.degradation}) on {DEGRADED_HOST}")
    print(f"mix: {args.steps} steps, max_docs_per_group {args.max_docs}; proxy {proxy}; aioli {aioli}")
    print()
    summary = [print_run(r) for r in results["runs"]]
    if "delta" in summary[0]:
        deltas = [s["delta"] for s in summary]
        below = sum(s["degraded"]["aioli"] < 1 / s["m"] for s in summary)
        print(f"over {len(summary)} seed(s): aioli's degraded weight below 1/m in {below}/{len(summary)} "
              f"(mean {np.mean([s['degraded']['aioli'] for s in summary]):.3f}); aioli - stratified mean loss "
              f"{np.mean(deltas):+.4f} nats (each: {', '.join(f'{d:+.4f}' for d in deltas)}), no worse in "
              f"{sum(d <= 0 for d in deltas)}/{len(deltas)}")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings"].items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-source", type=int, default=150, help="clean pages per source (6 sources)")
    parser.add_argument("--degraded-docs", type=int, default=150, help="pages on the degraded host")
    parser.add_argument("--degradation", default="char_noise", choices=[*mixed_corpus.DEGRADATIONS, "mixed"])
    parser.add_argument("--passes", type=int, default=1, help="times the degradation is applied to each page")
    parser.add_argument("--seed", type=int, default=0, help="the corpus's seed and the first mix seed")
    parser.add_argument("--seeds", type=int, default=2, help="mix runs, seeds seed, seed+1, ...")
    parser.add_argument("--steps", type=int, default=300, help="training steps of each method's proxy")
    parser.add_argument("--max-docs", type=int, default=400, help="mix.max_docs_per_group")
    parser.add_argument("--methods", default="stratified,aioli", help="comma-separated mix.methods")
    parser.add_argument("--lr", type=float, default=None, help="proxy learning rate (default: the config's)")
    parser.add_argument("--round-steps", type=int, default=None)
    parser.add_argument("--lp-rounds", type=int, default=None)
    parser.add_argument("--lp-steps", type=int, default=None)
    parser.add_argument("--eta", type=float, default=None)
    parser.add_argument("--one-hot-factor", type=float, default=None)
    parser.add_argument("--nltk", type=Path, default=SHARED_NLTK)
    parser.add_argument("--work", type=Path, default=None, help="keep the corpus and store here")
    args = parser.parse_args()
    args.methods = args.methods.split(",")
    if not args.nltk.is_dir():
        print(f"skipped: the corpora are not at {args.nltk}")
        return 0
    proxy = {k: v for k, v in {"lr": args.lr}.items() if v is not None}
    aioli = {k: v for k, v in {"round_steps": args.round_steps, "lp_rounds": args.lp_rounds, "lp_steps": args.lp_steps,
                               "eta": args.eta, "one_hot_factor": args.one_hot_factor}.items() if v is not None}
    with tempfile.TemporaryDirectory(prefix="mixing-quality-") as tmp:
        work = args.work or Path(tmp)
        print_results(run(work, args.nltk, args, proxy, aioli), args, proxy, aioli)
    return 0


if __name__ == "__main__":
    sys.exit(main())
