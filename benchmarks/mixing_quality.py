"""Data mixing on real text with one degraded group: does the mix stage's Aioli move weight away from
the degraded group, and is its mean held-out loss no worse than stratified sampling's?

    python benchmarks/mixing_quality.py --seed 2 --seeds 3      # about 15 minutes on 2 idle cores
    python benchmarks/mixing_quality.py --seed 2 --seeds 3 --sweep-cost --variant eta1:eta=1   # 32 minutes
    python benchmarks/mixing_quality.py --seeds 1 --passes 1 --degradation mixed

The corpus (benchmarks/mixed_corpus.py, real text from ../shared/data/nltk): 600 clean pages of each of six
sources (Brown, a browser's support forum, overheard conversations, movie reviews, rural and science news),
each source on its own host <source>.mixed.example.com, and a seventh host, noisy.degraded.example.com, of
600 degraded copies of *other* pages of the same sources: character noise applied `--passes` times (4: about
half the letters replaced), or with `--degradation` another kind of mixed_corpus.DEGRADATIONS or `mixed`
(every kind in turn). The pipeline ingests it and runs the mix stage (`curate mix`) grouped by host, each
method training a fresh proxy (the default proxy: same seed, same initial weights) for `--steps` steps on
at most `--max-docs` training documents per group (600: about one pass over each group at 1,000 steps).

Aioli runs with the config's settings (round_steps 200, lp_rounds 8, lp_steps 1, eta 4, one_hot_factor 0.5)
or those given here. `--variant LABEL:KEY=VALUE,...` adds Aioli with other settings, and `--sweep-cost` adds
Aioli with eta near 0 (LearnParams' sweeps, proportions held uniform): what the sweeps alone cost against
stratified. Each adds a proxy per seed.

It prints, per seed, one table (method, final proportions per group, mean held-out loss over the groups and
its perplexity, then each group's held-out loss), the degraded group's weight under each method against
stratified's 1/m, and Aioli's mean loss minus stratified's (negative: Aioli is better); then a summary over
the seeds: (a) Aioli's degraded weight below 1/m, (b) Aioli's mean loss no worse than stratified's.
"""
from __future__ import annotations

import argparse
import json
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


def mix_config(store: Path, raw: Path, name: str, seed: int, steps: int, max_docs: int, proxy: dict, aioli: dict,
               methods: list[str]):
    from pipeline.config import Config
    return Config.model_validate({
        "store": str(store), "spark": {"master": "local[2]", "shuffle_partitions": 4},
        "ingest": {"inputs": [str(raw)], "num_shards": 2},
        "mix": {"name": name, "group_by": "host", "max_docs_per_group": max_docs, "steps": steps,
                "methods": methods, "use": methods[-1], "seed": seed, "proxy": proxy, "aioli": aioli}})


def run(work: Path, nltk_dir: Path, args, proxy: dict, aioli: dict, extra: dict[str, dict]) -> dict:
    """Ingest the corpus once; per seed, the mix stage with `args.methods` and then one Aioli-only run per
    entry of `extra` (label: Aioli's settings); returns the counts, each seed's methods and the timings."""
    from pipeline.ingest.stage import run_ingest
    from pipeline.mixing.stage import run_mix
    from pipeline.spark import get_spark

    timings = {}
    t = time.time()
    records = build_corpus(nltk_dir, args.per_source, args.degraded_docs, args.degradation, args.passes,
                           seed=args.seed)
    mixed_corpus.write(records, work / "raw")
    seeds = [args.seed + k for k in range(args.seeds)]

    def config(name, seed, methods, settings):
        return mix_config(work / "store", work / "raw", name, seed, args.steps, args.max_docs, proxy, settings,
                          methods)
    ingest = config("bench", seeds[0], args.methods, aioli)
    spark = get_spark(ingest.spark)
    run_ingest(ingest, spark)
    spark.stop()
    timings["corpus + ingest"] = time.time() - t
    runs = []
    for seed in seeds:
        t = time.time()
        result = run_mix(config(f"bench-{seed}", seed, args.methods, aioli))
        outputs = {"seed": seed, **result.outputs}
        for label, settings in extra.items():
            more = run_mix(config(f"bench-{seed}-{label}", seed, ["aioli"], settings))
            outputs["methods"][label] = more.outputs["methods"]["aioli"]
        timings[f"mix seed {seed}"] = time.time() - t
        runs.append(outputs)
    clean = sum(r["kind"] == "clean" for r in records)
    return {"counts": {"clean": clean, "degraded": len(records) - clean}, "runs": runs, "timings": timings}


def print_run(r: dict) -> dict:
    """One seed's table; returns the degraded group's weight per method and Aioli's mean loss minus
    stratified's."""
    names = list(r["groups"])
    short = [n.split(".")[0] for n in names]
    methods = r["methods"]
    width = max(14, *(len(k) + 2 for k in methods))
    print(f"seed {r['seed']}: {len(names)} groups (" + ", ".join(f"{s} {g['sampled_docs']} docs"
          for s, g in zip(short, r["groups"].values())) + f"); proxy {r['proxy']['params']:,} parameters, "
          f"{r['proxy']['tokens_per_second']:,.0f} tokens/s")
    print(f"{'method':<{width}}" + "".join(f"{s:>10}" for s in short) + f"{'mean loss':>11}{'ppl':>9}")
    for method, m in methods.items():
        print(f"{method:<{width}}" + "".join(f"{m['final'][n]:>10.3f}" for n in names)
              + f"{m['mean_loss']:>11.4f}{np.exp(m['mean_loss']):>9.2f}")
    print("held-out loss per group")
    for method, m in methods.items():
        print(f"{method:<{width}}" + "".join(f"{m['losses'][n]:>10.3f}" for n in names))
    degraded = {method: m["final"][DEGRADED_HOST] for method, m in methods.items()}
    out = {"degraded": degraded, "m": len(names), "delta": {}}
    print(f"degraded group's weight (stratified 1/m = {1 / len(names):.3f}): "
          + ", ".join(f"{k} {v:.3f}" for k, v in degraded.items()))
    if "stratified" in methods:
        base = methods["stratified"]["mean_loss"]
        for method, m in methods.items():
            if method.startswith("aioli"):
                out["delta"][method] = m["mean_loss"] - base
                print(f"{method} mean loss - stratified: {m['mean_loss'] - base:+.4f} nats "
                      f"(perplexity {np.exp(m['mean_loss']) - np.exp(base):+.2f})")
    print()
    return out


def print_results(results: dict, args, proxy: dict, aioli: dict) -> None:
    c = results["counts"]
    kind = args.degradation + (f" x{args.passes}" if args.passes > 1 else "")
    print(f"corpus (seed {args.seed}): {c['clean']:,} clean pages of {len(CLEAN_SOURCES)} sources, "
          f"{c['degraded']:,} degraded ({kind}) on {DEGRADED_HOST}")
    print(f"mix: {args.steps} steps, max_docs_per_group {args.max_docs}, seeds "
          f"{', '.join(str(r['seed']) for r in results['runs'])}; proxy {proxy or 'defaults'}; aioli {aioli}")
    print()
    summary = [print_run(r) for r in results["runs"]]
    for method in summary[0]["delta"]:
        deltas = [s["delta"][method] for s in summary]
        weights = [s["degraded"][method] for s in summary]
        below = sum(w < 1 / s["m"] - 1e-3 for w, s in zip(weights, summary))
        print(f"{method} over {len(summary)} seed(s): (a) degraded weight below 1/m in {below}/{len(summary)} "
              f"(mean {np.mean(weights):.3f}); (b) mean loss - stratified {np.mean(deltas):+.4f} nats "
              f"({', '.join(f'{d:+.4f}' for d in deltas)}), no worse in {sum(d <= 0 for d in deltas)}/{len(deltas)}")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings"].items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-source", type=int, default=600, help="clean pages per source (6 sources)")
    parser.add_argument("--degraded-docs", type=int, default=600, help="pages on the degraded host")
    parser.add_argument("--degradation", default="char_noise", choices=[*mixed_corpus.DEGRADATIONS, "mixed"])
    parser.add_argument("--passes", type=int, default=4, help="times the degradation is applied to each page")
    parser.add_argument("--seed", type=int, default=0, help="the corpus's seed and the first mix seed")
    parser.add_argument("--seeds", type=int, default=2, help="mix runs, seeds seed, seed+1, ...")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of each method's proxy")
    parser.add_argument("--max-docs", type=int, default=600, help="mix.max_docs_per_group")
    parser.add_argument("--methods", default="stratified,aioli", help="comma-separated mix.methods")
    parser.add_argument("--lr", type=float, default=None, help="proxy learning rate (default: the config's)")
    parser.add_argument("--round-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--lp-rounds", type=int, default=None, help="default: the config's")
    parser.add_argument("--lp-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--eta", type=float, default=None, help="default: the config's")
    parser.add_argument("--one-hot-factor", type=float, default=None, help="default: the config's")
    parser.add_argument("--sweep-cost", action="store_true", help="also Aioli with eta near 0 (the sweeps alone)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:KEY=VALUE,...",
                        help="also Aioli with these settings over the ones above, e.g. k4:lp_rounds=4,lp_steps=1")
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
    extra = {"aioli-eta0": {**aioli, "eta": 1e-6}} if args.sweep_cost else {}
    for variant in args.variant:
        label, _, pairs = variant.partition(":")
        extra[f"aioli-{label}"] = {**aioli, **{k: json.loads(v) for k, v in (p.split("=") for p in pairs.split(","))}}
    with tempfile.TemporaryDirectory(prefix="mixing-quality-") as tmp:
        work = args.work or Path(tmp)
        print_results(run(work, args.nltk, args, proxy, aioli, extra), args, proxy, aioli)
    return 0


if __name__ == "__main__":
    sys.exit(main())
