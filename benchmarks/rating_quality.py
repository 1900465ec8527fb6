"""DataMan-style ratings of clean and junk hosts: does the rater give junk a lower Overall Score, greedy and
expected, and how closely does a student follow it?

    python benchmarks/rating_quality.py                    # SmolLM2-135M-Instruct, 12 pages per host
    python benchmarks/rating_quality.py --per-host 24 --model DIR --text-tokens 512

Two corpora, each rated in one run (constrained decoding, the rater of `curate rate`):
- web: documentation-like hosts (the Python documentation, standard-library docstrings, package READMEs,
  from this interpreter) against the demo's kinds of junk (SEO spam, generated tables, boilerplate
  portals, thin pages, mojibake), drawn with another seed than the demo's;
- nltk (when ../shared/data/nltk is there): seven real-text sources against degraded copies of their
  pages (keyword spam, navigation boilerplate, character noise, shuffled words, cut-and-repeated lines).
It prints per host the mean greedy and expected Overall Score, whether every clean host is above every
junk host, and a student's 5-fold agreement with the rater on all the rated pages.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED_NLTK = REPO.parent / "shared" / "data" / "nltk"


def web_pages(per_host: int, seed: int) -> list[tuple[str, str, bool]]:
    """(host, text, clean) from the demo's sources."""
    from pipeline.demo import junk
    from pipeline.demo.sources import pypi_readmes, python_docs, stdlib_docstrings
    rng = random.Random(seed)
    pydocs = python_docs()
    clean = {"docs.python.org": pydocs, "stdlib-docs": stdlib_docstrings(), "pypi.org": pypi_readmes()}
    made = {junk.HOST_SPAM: junk.seo_spam(rng, per_host), junk.HOST_TABLES: junk.generated_tables(rng, per_host),
            junk.HOST_BOILERPLATE: junk.boilerplate_pages(rng, per_host), junk.HOST_THIN: junk.thin_pages(rng, per_host),
            junk.HOST_MOJIBAKE: junk.mojibake_pages(rng, per_host, pydocs)}
    out = [(host, d["text"], True) for host, docs in clean.items() for d in rng.sample(docs, min(per_host, len(docs)))]
    return out + [(host, d["text"], False) for host, docs in made.items() for d in docs[:per_host]]


def nltk_pages(per_host: int, seed: int) -> list[tuple[str, str, bool]]:
    from benchmarks import mixed_corpus
    records = mixed_corpus.build(SHARED_NLTK, per_host, len(mixed_corpus.DEGRADATIONS) / len(mixed_corpus.SOURCES),
                                 seed)
    return [(r["source"] if r["kind"] == "clean" else f"{r['kind']} (degraded)", r["text"], r["kind"] == "clean")
            for r in records]


def report(name: str, pages, rows) -> dict:
    by: dict[tuple[str, bool], list] = {}
    for (host, _, clean), row in zip(pages, rows):
        by.setdefault((host, clean), []).append((row["overall_score"], row["overall_score_expected"]))
    print(f"\n[{name}] {len(pages)} pages")
    print(f"  {'host':34s} {'kind':6s} {'n':>3s} {'greedy':>7s} {'expected':>9s}")
    means = {}
    for (host, clean), values in sorted(by.items(), key=lambda kv: -np.mean([v[1] for v in kv[1]])):
        a = np.array(values, dtype=float)
        means[(host, clean)] = a.mean(axis=0)
        print(f"  {host:34s} {'clean' if clean else 'junk':6s} {len(a):3d} {a[:, 0].mean():7.2f} {a[:, 1].mean():9.2f}")
    out = {}
    for k, label in ((0, "greedy"), (1, "expected")):
        clean = [m[k] for (h, c), m in means.items() if c]
        junk = [m[k] for (h, c), m in means.items() if not c]
        out[label] = min(clean) > max(junk)
        print(f"  {label}: clean hosts {np.mean(clean):.2f} (lowest {min(clean):.2f}), junk hosts {np.mean(junk):.2f} "
              f"(highest {max(junk):.2f}): every clean host above every junk host: {out[label]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an instruct model directory (default: SmolLM2-135M-Instruct, converted)")
    parser.add_argument("--per-host", type=int, default=12)
    parser.add_argument("--text-tokens", type=int, default=192)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    import tempfile

    from pipeline.distill.student import StudentSettings
    from pipeline.rating.students import agreement, tokens_of
    from pipeline.rating.torch_rater import TorchRater
    from pipeline.scoring.smollm2 import fetch_smollm2
    model = args.model or fetch_smollm2(Path(tempfile.gettempdir()) / "curate-bench-smollm2")
    rater = TorchRater(model, text_tokens=args.text_tokens, token_budget=4096)
    print(f"rater: {rater.identity.model_name}, constrained decoding, {args.text_tokens} text tokens")
    corpora = {"web": web_pages(args.per_host, args.seed)}
    if SHARED_NLTK.is_dir():
        corpora["nltk"] = nltk_pages(args.per_host, args.seed)
    else:
        print(f"({SHARED_NLTK} not found: the nltk corpus is skipped)")
    texts, expected, scores = [], [], []
    for name, pages in corpora.items():
        started = time.perf_counter()
        rows = rater.rate([(f"{name}-{i}", text) for i, (_, text, _) in enumerate(pages)])
        seconds = time.perf_counter() - started
        report(name, pages, rows)
        print(f"  rater: {len(pages) / seconds:.2f} pages/s ({seconds:.0f} s)")
        texts += [text for _, text, _ in pages]
        expected += [r["overall_score_expected"] for r in rows]
        scores += [r["overall_score"] for r in rows]
    settings = StudentSettings()
    tokens = tokens_of(rater.tokenizer, texts, args.text_tokens, settings)
    started = time.perf_counter()
    a = agreement(texts, tokens, np.array(expected), np.array(scores, dtype=float), settings, folds=5, seed=0)
    print(f"\nstudent (Overall Score, 5-fold on {a['n_docs']} pages, {time.perf_counter() - started:.1f} s): Spearman "
          f"{a['spearman']:.3f} with the rater's expected score; accuracy {a['accuracy']:.0%} against the rater's "
          f"greedy score (always the mean: {a['constant_accuracy']:.0%}), within one {a['within_one']:.0%}")


if __name__ == "__main__":
    main()
