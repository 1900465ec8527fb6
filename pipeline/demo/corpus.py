"""A small, web-like demo corpus built from real text found on any machine with Python installed.

`curate demo` uses it to show the whole pipeline without downloading anything. The corpus is made of

* good text, all of it real and already on disk after installing the project:
  - sections of the Python documentation topics shipped with the interpreter (`pydoc_data.topics`),
  - long descriptions (READMEs) of the installed packages (`importlib.metadata`),
  - licence files of the installed packages (`*.dist-info/LICENSE*`, and
    `/usr/share/common-licenses` where it exists),
  - docstrings of standard-library modules, functions and classes;
* short news-style paragraphs in French, German, Spanish, Italian, Portuguese and Dutch (written into
  this module), for language identification;
* generated web junk: navigation/boilerplate pages, keyword spam, machine-generated tables,
  mojibake (real text encoded as UTF-8 and decoded as cp1252) and near-empty pages;
* exact duplicates: about 5% of the documents again, verbatim, under mirror.example.com URLs;
* planted bad inputs in `raw/bad/`: malformed JSON lines, invalid UTF-8, records without text,
  a truncated gzip file, an empty file and a file of an unknown format.

Every document has a URL whose host names its source (docs.python.org, pypi.org, seo-spam.example.net,
...), so per-domain results are easy to read. The files mix every input format the ingest job reads:
JSONL.gz, JSONL.zst, Parquet, WARC.gz (warcinfo + request + response records) and a `datasets`
save_to_disk folder. The build is deterministic: the same seed on the same machine gives the same
bytes (no time stamps; WARC dates and record ids derive from the seed).
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.demo import formats, junk
from pipeline.demo.sources import license_texts, pypi_readmes, python_docs, stdlib_docstrings
from pipeline.errors import UserError

SUMMARY_FILE = "demo_summary.json"          # written beside raw/; marks the folder as a demo build

DUPLICATE_FRACTION = 0.05
PYDOC_WARC_EVERY = 5                        # every 5th Python docs section is served through the WARC

HOST_MIRROR = "mirror.example.com"


def _rng(seed: int, name: str) -> random.Random:
    """One independent, reproducible random stream per source."""
    return random.Random(f"{seed}:{name}")


def _cap(docs: list[dict], n: int, rng: random.Random) -> list[dict]:
    """At most `n` documents, chosen at random but kept in their original order."""
    if len(docs) <= n:
        return docs
    keep = sorted(rng.sample(range(len(docs)), n))
    return [docs[i] for i in keep]



# ----------------------------------------------------------------------------------------------
# The corpus
# ----------------------------------------------------------------------------------------------

def _assign_ids(records: list[dict], prefix: str) -> list[dict]:
    return [{"text": r["text"], "url": r["url"], "id": f"{prefix}-{i:05d}", "source": r["source"],
             **({"lang": r["lang"]} if "lang" in r else {})} for i, r in enumerate(records)]


def _drop_repeats(groups: dict[str, list[dict]]) -> None:
    """Make every text unique across all groups (so the only duplicates are the planted ones)."""
    seen: set[str] = set()
    for name in groups:
        kept = []
        for r in groups[name]:
            if r["text"].strip() and r["text"] not in seen:
                seen.add(r["text"])
                kept.append(r)
        groups[name] = kept


def build_demo_corpus(out_dir: str | Path, seed: int = 0, max_docs_per_source: int = 400) -> dict:
    """Write the demo corpus into `out_dir/raw/` and return a summary of what is there.

    Summary keys: `files` maps each clean file (path relative to raw/) to its number of documents,
    `domains` maps each URL host to its number of documents over those files, `duplicates` counts the
    planted exact copies (in `mirror.jsonl.gz`), `total_records` is the number of documents in the clean
    files, and `planted_bad` describes each file under `raw/bad/` (not counted in the totals).
    A previous demo build in `out_dir` is replaced; any other non-empty `raw/` is an error.
    """
    if max_docs_per_source < 1:
        raise UserError(f"max_docs_per_source must be at least 1, got {max_docs_per_source}")
    out_dir = Path(out_dir)
    raw = out_dir / "raw"
    if raw.exists() and any(raw.iterdir()):
        if not (out_dir / SUMMARY_FILE).is_file():
            raise UserError(f"{raw} exists and is not a demo corpus; choose an empty folder for `curate demo`")
        shutil.rmtree(raw)
    raw.mkdir(parents=True, exist_ok=True)

    n = max_docs_per_source
    n_junk = max(4, n // 5)
    n_foreign = max(2, n // 16)

    # Real text. Python docs are taken in full first: some of them feed the mojibake and the bad files.
    all_pydocs = python_docs()
    pydoc_rng = _rng(seed, "python_docs")
    spare_idx = set(pydoc_rng.sample(range(len(all_pydocs)), min(len(all_pydocs) // 3,
                                                                  formats.N_BROKEN_VALID + formats.N_TRUNCATED)))
    spare = [d for i, d in enumerate(all_pydocs) if i in spare_idx]
    pydocs = _cap([d for i, d in enumerate(all_pydocs) if i not in spare_idx], n, pydoc_rng)

    groups: dict[str, list[dict]] = {
        "python_docs": pydocs,
        "pypi_readme": _cap(pypi_readmes(), n, _rng(seed, "pypi")),
        "license": _cap(license_texts(), n, _rng(seed, "license")),
        "stdlib_docstring": _cap(stdlib_docstrings(), n, _rng(seed, "stdlib")),
        "news": junk.foreign_news(_rng(seed, "news"), n_foreign),
        "boilerplate": junk.boilerplate_pages(_rng(seed, "boilerplate"), n_junk),
        "seo_spam": junk.seo_spam(_rng(seed, "spam"), n_junk),
        "generated_table": junk.generated_tables(_rng(seed, "tables"), n_junk),
        "mojibake": junk.mojibake_pages(_rng(seed, "mojibake"), n_junk, all_pydocs),
        "thin_page": junk.thin_pages(_rng(seed, "thin"), n_junk),
    }
    for r in groups["news"]:
        r["lang"] = r["source"].split("_", 1)[1]
    _drop_repeats(groups)
    spare_texts = {r["text"] for g in groups.values() for r in g}
    spare = [r for r in spare if r["text"] not in spare_texts]

    # Which records go into which file (the WARC gets the web-like pages and a slice of the docs).
    py = _assign_ids(groups["python_docs"], "python_docs")
    files: dict[str, list[dict]] = {
        "python_docs.jsonl.gz": [r for i, r in enumerate(py) if i % PYDOC_WARC_EVERY != PYDOC_WARC_EVERY - 1],
        "pypi_readmes.parquet": _assign_ids(groups["pypi_readme"], "pypi_readme"),
        "licenses.jsonl.zst": _assign_ids(groups["license"], "license"),
        "stdlib_docstrings": _assign_ids(groups["stdlib_docstring"], "stdlib_docstring"),
        "forum_posts.jsonl.gz": _assign_ids(groups["mojibake"], "mojibake"),
    }
    crawl = [r for i, r in enumerate(py) if i % PYDOC_WARC_EVERY == PYDOC_WARC_EVERY - 1]
    for name in ("news", "boilerplate", "seo_spam", "generated_table", "thin_page"):
        crawl += _assign_ids(groups[name], name)
    _rng(seed, "crawl-order").shuffle(crawl)
    files["web_crawl.warc.gz"] = crawl

    # Exact duplicates: ~5% of all documents again under mirror URLs, copied from the non-WARC files
    # (the WARC text is wrapped in HTML, so copies of it would not be byte-identical after extraction).
    n_total = sum(len(v) for v in files.values())
    eligible = [r for name, recs in files.items() if not name.endswith(".warc.gz") for r in recs]
    n_dup = min(len(eligible), max(1, round(DUPLICATE_FRACTION * n_total / (1 - DUPLICATE_FRACTION))))
    originals = [eligible[i] for i in sorted(_rng(seed, "mirror").sample(range(len(eligible)), n_dup))]
    files["mirror.jsonl.gz"] = [
        {"text": r["text"], "url": f"https://{HOST_MIRROR}/{urlsplit(r['url']).hostname}{urlsplit(r['url']).path}",
         "id": f"mirror-{i:05d}", "source": "mirror"} for i, r in enumerate(originals)]

    # Write.
    for name, recs in files.items():
        path = raw / name
        clean = [{k: r[k] for k in ("text", "url", "id", "source")} for r in recs]
        if name.endswith(".jsonl.gz"):
            formats.write_jsonl_gz(path, clean)
        elif name.endswith(".jsonl.zst"):
            formats.write_jsonl_zst(path, clean)
        elif name.endswith(".parquet"):
            formats.write_parquet(path, clean)
        elif name.endswith(".warc.gz"):
            formats.write_warc(path, recs, seed)
        else:
            formats.write_hf_disk(path, clean, seed)
    planted_bad = formats.write_bad_inputs(raw / "bad", _assign_ids(spare, "spare"))

    domains: dict[str, int] = {}
    for recs in files.values():
        for r in recs:
            host = urlsplit(r["url"]).hostname
            domains[host] = domains.get(host, 0) + 1
    summary = {
        "files": {name: len(recs) for name, recs in files.items()},
        "domains": dict(sorted(domains.items(), key=lambda kv: (-kv[1], kv[0]))),
        "planted_bad": planted_bad,
        "duplicates": len(files["mirror.jsonl.gz"]),
        "total_records": sum(len(v) for v in files.values()),
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


