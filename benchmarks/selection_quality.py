"""Selection quality: clean human text plus degraded copies of some of it, through the whole pipeline.

    python benchmarks/selection_quality.py                    # ../shared/data corpora, reference model
    python benchmarks/selection_quality.py --clean 600 --smollm2

Clean documents are movie reviews and ABC news (../shared/data/nltk, real human text). A share of
them is copied and degraded: characters replaced at random, words shuffled, or lines repeated
with their words cut. The pipeline ingests the mix, trains a small reference model on a random split
(Ankner et al.), scores every document and selects with each perplexity band at each rate; the
benchmark prints, per criterion and rate, the share of clean and of degraded documents dropped
and their ratio (how many times more often a degraded document is dropped).
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED_NLTK = REPO.parent / "shared" / "data" / "nltk"
DEGRADATIONS = ("char_noise", "word_shuffle", "cut_repeats")


def clean_documents(nltk_dir: Path, n: int, seed: int = 0) -> list[dict]:
    """Half movie reviews (one per file), half ABC news (runs of 8 sentences), shuffled."""
    rng = random.Random(seed)
    with zipfile.ZipFile(nltk_dir / "movie_reviews.zip") as z:
        names = sorted(x for x in z.namelist() if x.endswith(".txt"))
        reviews = [z.read(x).decode("utf-8", "replace").strip() for x in rng.sample(names, min(len(names), n // 2))]
    with zipfile.ZipFile(nltk_dir / "abc.zip") as z:
        lines = [x for x in z.read("abc/science.txt").decode("utf-8", "replace").splitlines() if x.strip()]
    news = ["\n".join(lines[i:i + 8]) for i in range(0, len(lines) - 8, 8)]
    news = rng.sample(news, min(len(news), n - len(reviews)))
    docs = [{"text": t, "host": "reviews.clean.example.com"} for t in reviews] + \
           [{"text": t, "host": "news.clean.example.com"} for t in news]
    rng.shuffle(docs)
    return docs


def degrade(text: str, kind: str, rng: random.Random) -> str:
    """A degraded copy: `char_noise` replaces 15% of the letters, `word_shuffle` shuffles the words,
    `cut_repeats` keeps every line's first three words and repeats the result."""
    if kind == "char_noise":
        letters = "abcdefghijklmnopqrstuvwxyz"
        return "".join(rng.choice(letters) if c.isalpha() and rng.random() < 0.15 else c for c in text)
    if kind == "word_shuffle":
        words = text.split()
        rng.shuffle(words)
        return " ".join(words)
    if kind == "cut_repeats":
        cut = "\n".join(" ".join(line.split()[:3]) for line in text.splitlines() if line.strip())
        return "\n".join([cut] * 3)
    raise ValueError(kind)


def write_corpus(out: Path, nltk_dir: Path, n_clean: int, degraded_fraction: float, seed: int = 0,
                 kinds: tuple[str, ...] = DEGRADATIONS) -> dict:
    """JSONL.gz of clean documents and degraded copies; the host says which is which."""
    rng = random.Random(seed)
    clean = clean_documents(nltk_dir, n_clean, seed)
    degraded = []
    for i, doc in enumerate(rng.sample(clean, int(len(clean) * degraded_fraction))):
        kind = kinds[i % len(kinds)]
        degraded.append({"text": degrade(doc["text"], kind, rng), "host": f"{kind.replace('_', '-')}.degraded.example.com"})
    records = clean + degraded
    rng.shuffle(records)
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(out / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
        for i, r in enumerate(records):
            f.write(json.dumps({"id": str(i), "text": r["text"], "url": f"https://{r['host']}/{i}"}) + "\n")
    return {"clean": len(clean), "degraded": len(degraded)}


def pipeline_config(work: Path, steps: int) -> dict:
    return {"store": str(work / "store"), "spark": {"master": "local[2]", "shuffle_partitions": 4},
            "ingest": {"inputs": [str(work / "raw")], "num_shards": 2},
            # the default reference model (4 layers, 8,192-token BPE), trained on 30% of the corpus
            "reference": {"out": str(work / "reference"), "reference_fraction": 0.3, "min_reference_docs": 0,
                          "max_steps": steps},
            "score": {"model": str(work / "reference"), "max_tokens": 256}}


def drop_rates(store_root: str, name: str) -> dict[str, float]:
    """Share of the clean, the degraded, and each kind of degraded documents (outside the reference
    split) that the selection dropped."""
    from pipeline.sql import connect
    from pipeline.store import Store
    con, _ = connect(Store(store_root))
    rows = con.execute(f"""
        SELECT CASE WHEN d.host LIKE '%.degraded.example.com' THEN split_part(d.host, '.', 1) ELSE 'clean' END AS kind,
               count(*) FILTER (NOT s.kept) AS dropped, count(*) AS docs
        FROM selections s JOIN docs d USING (doc_id)
        WHERE s.selection = '{name}' AND coalesce(s.reason, '') <> 'reference_split'
        GROUP BY ALL""").fetchall()
    rates = {kind: dropped / docs for kind, dropped, docs in rows}
    degraded = [(dropped, docs) for kind, dropped, docs in rows if kind != "clean"]
    rates["degraded"] = sum(d for d, _ in degraded) / max(sum(n for _, n in degraded), 1)
    return rates


def run(work: Path, nltk_dir: Path, n_clean: int, degraded_fraction: float, steps: int,
        criteria=("low", "medium", "high"), rates=(0.3, 0.5, 0.7), smollm2: bool = False) -> list[dict]:
    """Build the corpus, run ingest, train_reference and score, then select with every band; returns
    one row per (scorer, criterion, rate) with the clean and degraded drop rates."""
    from pipeline.config import Config, apply_overrides
    from pipeline.ingest.stage import run_ingest
    from pipeline.train.stage import run_train_reference
    from pipeline.scoring.stage import run_score
    from pipeline.selection.stage import run_select
    from pipeline.spark import get_spark

    counts = write_corpus(work / "raw", nltk_dir, n_clean, degraded_fraction)
    cfg = Config.model_validate(pipeline_config(work, steps))
    spark = get_spark(cfg.spark)
    timings = {}
    t = time.time()
    run_ingest(cfg, spark)
    timings["ingest"] = time.time() - t
    t = time.time()
    if not (work / "reference" / "curate_model.json").is_file():  # a re-run on the same --work keeps it
        run_train_reference(cfg)
    timings["train_reference"] = time.time() - t
    t = time.time()
    scorers = [("reference", cfg, run_score(cfg, spark).outputs["scorer_id"])]
    timings["score"] = time.time() - t
    if smollm2:
        from pipeline.scoring.smollm2 import fetch_smollm2
        smol = apply_overrides(cfg, {"score.model": str(fetch_smollm2(work / "smollm2")), "score.max_tokens": 64})
        t = time.time()
        scorers.append(("SmolLM2-135M-Instruct", smol, run_score(smol, spark).outputs["scorer_id"]))
        timings["score SmolLM2"] = time.time() - t
    rows = []
    for label, scorer_cfg, scorer_id in scorers:
        for criterion in criteria:
            for rate in rates:
                name = f"{label}-{criterion}-{int(rate * 100)}".lower()
                sel = apply_overrides(scorer_cfg, {"select.name": name, "select.scorer": scorer_id, "select.rules": [
                    {"type": "band", "criterion": criterion, "rate": rate}]})
                run_select(sel, overwrite=True)
                dropped = drop_rates(cfg.store, name)
                rows.append({"scorer": label, "criterion": criterion, "rate": rate, **dropped,
                             "ratio": dropped["degraded"] / max(dropped["clean"], 1e-9)})
    return rows, counts, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clean", type=int, default=800, help="clean documents")
    parser.add_argument("--degraded-fraction", type=float, default=0.25)
    parser.add_argument("--steps", type=int, default=160, help="reference model training steps (the config's default)")
    parser.add_argument("--smollm2", action="store_true", help="also score with SmolLM2-135M-Instruct, first 64 tokens "
                                                               "(about 150 tokens/s on 2 CPU cores)")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    if not SHARED_NLTK.is_dir():
        sys.exit(f"skipped: the corpora are not at {SHARED_NLTK}")
    work = args.work or Path(tempfile.mkdtemp(prefix="selection-quality-"))
    rows, counts, timings = run(work, SHARED_NLTK, args.clean, args.degraded_fraction, args.steps, smollm2=args.smollm2)
    print(f"{counts['clean']} clean documents + {counts['degraded']} degraded copies ({', '.join(DEGRADATIONS)}); "
          f"work dir {work}")
    print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    kinds = [k.replace("_", "-") for k in DEGRADATIONS]
    print("share of documents dropped (outside the reference split); ratio = degraded / clean")
    print(f"{'scorer':<14}{'criterion':<10}{'rate':>6}{'clean':>8}{'degraded':>10}{'ratio':>7}"
          + "".join(f"{k:>14}" for k in kinds))
    for r in rows:
        print(f"{r['scorer']:<14}{r['criterion']:<10}{r['rate']:>6.1f}{r['clean']:>8.1%}{r['degraded']:>10.1%}"
              f"{r['ratio']:>7.2f}" + "".join(f"{r.get(k, float('nan')):>14.1%}" for k in kinds))


if __name__ == "__main__":
    main()
