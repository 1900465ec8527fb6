"""Selection quality on a mixed-source corpus: does the score separate degraded from clean text when
clean sources differ several-fold in perplexity?

    python benchmarks/selection_quality.py                     # 150 clean documents per source
    python benchmarks/selection_quality.py --per-source 60 --holdout 100

The corpus (benchmarks/mixed_corpus.py, real text from ../shared/data/nltk): seven sources on their
own hosts and degraded copies of five kinds (shuffled words, character noise, keyword spam,
navigation boilerplate, truncated-and-repeated lines) spread over the same hosts. The pipeline
ingests it, trains the default reference model and scores with it, and runs the distill stage with
its defaults (SmolLM2-135M-Instruct scoring a stratified sample, a student scoring everything).
`--holdout N` has the teacher also score N documents outside its sample, so the student's agreement
with its teacher is measured on documents it never saw.

For each scorer (the reference model outside its training split; the teacher on its sample; the
student outside the teacher's sample) it prints: AUC of degraded vs clean by distance from the
median score (two-sided, what a medium band acts on) and by the score itself (one-sided, what a
low band acts on); and for each band at the corpus's clean share and at 50%, the share of clean and
of degraded documents dropped, per kind.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED_NLTK = REPO.parent / "shared" / "data" / "nltk"

from benchmarks import mixed_corpus  # noqa: E402
from benchmarks.mixed_corpus import DEGRADATIONS  # noqa: E402


def write_corpus(out: Path, nltk_dir: Path, per_source: int, degraded_fraction: float, seed: int = 0,
                 **choice) -> dict:
    """The mixed corpus as JSONL.gz in `out` (`choice`: sources, kinds); returns counts of clean and
    degraded documents."""
    records = mixed_corpus.build(nltk_dir, per_source, degraded_fraction, seed, **choice)
    mixed_corpus.write(records, out)
    clean = sum(r["kind"] == "clean" for r in records)
    return {"clean": clean, "degraded": len(records) - clean}


KIND_SQL = "split_part(url, '/', 4)"   # https://<source>.mixed.example.com/<kind>/<n>


def drop_rates(store_root: str, name: str) -> dict[str, float]:
    """Share of the clean, the degraded, and each kind of degraded documents that selection `name`
    dropped, among the documents its rules judged (not the reference split, not unscored)."""
    from pipeline.sql import connect
    from pipeline.store import Store
    con, _ = connect(Store(store_root))
    rows = con.execute(f"""
        SELECT {KIND_SQL} AS kind, count(*) FILTER (NOT s.kept) AS dropped, count(*) AS docs
        FROM selections s JOIN docs d USING (doc_id)
        WHERE s.selection = '{name}' AND coalesce(s.reason, '') NOT IN ('reference_split', 'no_score')
        GROUP BY ALL""").fetchall()
    rates = {kind.replace("_", "-"): dropped / docs for kind, dropped, docs in rows}
    degraded = [(dropped, docs) for kind, dropped, docs in rows if kind != "clean"]
    rates["degraded"] = sum(d for d, _ in degraded) / max(sum(n for _, n in degraded), 1)
    return rates


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for `positive` (Mann-Whitney U with average ranks for ties)."""
    from pipeline.distill.student import ranks
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    r = ranks(np.asarray(scores, dtype=np.float64))
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def band_drops(values: np.ndarray, kinds: np.ndarray, criterion: str, rate: float) -> dict[str, float]:
    """Shares dropped by a band (thresholds on `values` itself, as a global select rule computes them)."""
    from pipeline.selection.rules import band_percentiles, in_range, percentile_bounds
    keep = in_range(values, *percentile_bounds(values, *band_percentiles(criterion, rate)))
    out = {"clean": float(np.mean(~keep[kinds == "clean"])), "degraded": float(np.mean(~keep[kinds != "clean"]))}
    out.update({k: float(np.mean(~keep[kinds == k])) for k in DEGRADATIONS if (kinds == k).any()})
    return out


def evaluate(label: str, values: np.ndarray, kinds: np.ndarray, rates: list[float]) -> dict:
    degraded = kinds != "clean"
    return {"scorer": label, "docs": len(values), "degraded": int(degraded.sum()),
            "auc_two_sided": auc(np.abs(values - np.median(values)), degraded), "auc_high": auc(values, degraded),
            "bands": [{"criterion": c, "rate": r, **band_drops(values, kinds, c, r)}
                      for r in rates for c in ("low", "medium", "high")]}


def scored(con, scorer_id: str, where: str = "TRUE", among: set[str] | None = None,
           outside: set[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(doc_ids, kinds, nll_mean) of the documents the scorer scored (`among` them, not `outside` ones)."""
    rows = con.execute(f"""SELECT d.doc_id, {KIND_SQL} AS kind, s.nll_mean FROM docs d JOIN scores s USING (doc_id)
                           WHERE s.scorer = '{scorer_id}' AND s.error IS NULL AND {where} ORDER BY d.doc_id""").fetchall()
    rows = [r for r in rows if (among is None or r[0] in among) and (outside is None or r[0] not in outside)]
    return [r[0] for r in rows], np.array([r[1] for r in rows]), np.array([r[2] for r in rows], dtype=np.float64)


def run(work: Path, nltk_dir: Path, per_source: int, degraded_fraction: float, holdout: int) -> dict:
    from pipeline.config import Config
    from pipeline.distill.stage import draw_sample, run_distill, teacher_config, teacher_dir
    from pipeline.distill.student import spearman
    from pipeline.ingest.stage import run_ingest
    from pipeline.scoring.stage import run_score
    from pipeline.spark import get_spark
    from pipeline.sql import connect
    from pipeline.store import Store
    from pipeline.train.stage import run_train_reference

    counts = write_corpus(work / "raw", nltk_dir, per_source, degraded_fraction)
    cfg = Config.model_validate({"store": str(work / "store"), "spark": {"master": "local[2]", "shuffle_partitions": 4},
                                 "ingest": {"inputs": [str(work / "raw")], "num_shards": 2},
                                 "reference": {"out": str(work / "reference")},
                                 "score": {"model": str(work / "reference")}})
    spark = get_spark(cfg.spark)
    timings = {}
    t = time.time()
    run_ingest(cfg, spark)
    timings["ingest"] = time.time() - t
    t = time.time()
    if not (work / "reference" / "curate_model.json").is_file():  # a re-run on the same --work keeps it
        run_train_reference(cfg)
    reference_id = run_score(cfg, spark).outputs["scorer_id"]
    timings["reference model (train + score)"] = time.time() - t
    t = time.time()
    distilled = run_distill(cfg, spark)
    timings["distill"] = time.time() - t
    teacher_id, student_id = distilled.outputs["teacher_id"], distilled.outputs["student_id"]

    con, _ = connect(Store(cfg.store))
    sample = set(draw_sample(spark, cfg)[0])   # the same documents the stage drew
    outside_split = "d.doc_id NOT IN (SELECT doc_id FROM reference_splits)"
    results = {"counts": counts, "timings": timings, "distill": distilled.outputs["card"]["agreement"],
               "speed": {k: distilled.timings.get(k) for k in ("student_docs_per_s", "teacher_docs_per_s")}}
    clean_share = counts["clean"] / (counts["clean"] + counts["degraded"])
    rates = sorted({round(clean_share, 2), 0.5})
    evaluations = []
    _, kinds, values = scored(con, reference_id, outside_split)
    evaluations.append(evaluate("reference model", values, kinds, rates))
    _, kinds, values = scored(con, teacher_id, among=sample)
    evaluations.append(evaluate("teacher (sample)", values, kinds, rates))
    _, kinds, values = scored(con, student_id, outside=sample)
    evaluations.append(evaluate("student", values, kinds, rates))
    results["evaluations"] = evaluations

    if holdout:  # the teacher scores documents outside its sample: the student's held-out agreement
        rng = np.random.default_rng(0)
        outside = scored(con, student_id, outside=sample)[0]
        extra = set(rng.choice(outside, size=min(holdout, len(outside)), replace=False).tolist())
        run_score(teacher_config(cfg, teacher_dir(cfg)), spark, doc_ids=sorted(extra))
        con, _ = connect(Store(cfg.store))
        _, _, teacher_values = scored(con, teacher_id, among=extra)
        _, _, student_values = scored(con, student_id, among=extra)
        results["holdout"] = {"docs": len(extra), "spearman": spearman(teacher_values, student_values)}
    return results


def print_results(results: dict) -> None:
    c = results["counts"]
    print(f"{c['clean']:,} clean documents from {len(mixed_corpus.SOURCES)} sources + {c['degraded']:,} degraded "
          f"copies ({', '.join(DEGRADATIONS)})")
    print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in results["timings"].items()))
    a = results["distill"]
    print(f"student vs teacher, {a['folds']}-fold on the {a['n_docs']} sample documents: Spearman {a['spearman']:.3f}, "
          f"band agreement at {a['rate']:g}: " + ", ".join(f"{k} {v:.0%}" for k, v in a["band_agreement"].items()))
    if "holdout" in results:
        h = results["holdout"]
        print(f"student vs teacher on {h['docs']} documents outside the sample: Spearman {h['spearman']:.3f}")
    s = results["speed"]
    if s.get("student_docs_per_s") and s.get("teacher_docs_per_s"):
        print(f"speed: student {s['student_docs_per_s']:,.0f} documents/s, teacher {s['teacher_docs_per_s']:,.1f} "
              f"documents/s: {s['student_docs_per_s'] / s['teacher_docs_per_s']:,.0f}x")
    print()
    print(f"{'scorer':<18}{'docs':>6}{'AUC two-sided':>15}{'AUC high':>10}")
    for e in results["evaluations"]:
        print(f"{e['scorer']:<18}{e['docs']:>6}{e['auc_two_sided']:>15.3f}{e['auc_high']:>10.3f}")
    print()
    kinds = [k.replace("_", "-") for k in DEGRADATIONS]
    print("share of documents dropped by each band")
    print(f"{'scorer':<18}{'band':<8}{'rate':>6}{'clean':>8}{'degraded':>10}" + "".join(f"{k:>14}" for k in kinds))
    for e in results["evaluations"]:
        for b in e["bands"]:
            print(f"{e['scorer']:<18}{b['criterion']:<8}{b['rate']:>6.2f}{b['clean']:>8.1%}{b['degraded']:>10.1%}"
                  + "".join(f"{b.get(k, float('nan')):>14.1%}" for k in DEGRADATIONS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-source", type=int, default=150, help="clean documents per source (7 sources)")
    parser.add_argument("--degraded-fraction", type=float, default=0.43, help="degraded copies per clean document "
                        "(0.43: 30%% of the corpus)")
    parser.add_argument("--holdout", type=int, default=200, help="documents outside the sample the teacher also "
                        "scores, for the student's held-out agreement (0: none)")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    if not SHARED_NLTK.is_dir():
        sys.exit(f"skipped: the corpora are not at {SHARED_NLTK}")
    work = args.work or Path(tempfile.mkdtemp(prefix="selection-quality-"))
    print(f"work dir {work}")
    print_results(run(work, SHARED_NLTK, args.per_source, args.degraded_fraction, args.holdout))


if __name__ == "__main__":
    main()
