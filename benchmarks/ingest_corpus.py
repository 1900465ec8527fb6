"""The ingest benchmark's corpus: every text of the NLTK archives in ../shared/data, cut into 1-4 KB
pages, four times over with different cuts, written as JSON Lines shards (gzip). Real text in many
languages (the UDHR's), of the size and shape of a small crawl shard.
"""
from __future__ import annotations

import gzip
import json
import random
import re
import zipfile
from pathlib import Path

ARCHIVES = ("brown", "webtext", "abc", "udhr", "movie_reviews")


def _texts(nltk_dir: Path) -> list[tuple[str, str]]:
    """(name, text) of every text file in the archives; Brown's word/TAG tokens back to words."""
    out = []
    for archive in ARCHIVES:
        path = nltk_dir / f"{archive}.zip"
        if not path.is_file():
            continue
        with zipfile.ZipFile(path) as z:
            for name in sorted(z.namelist()):
                if name.endswith("/") or "README" in name or name.endswith((".pickle", ".csv")):
                    continue
                text = z.read(name).decode("utf-8", "replace")
                if archive == "brown":
                    if not re.search(r"/c[a-r]\d\d$", name):
                        continue
                    text = " ".join(t.rsplit("/", 1)[0] for t in text.split(" "))
                if len(text.strip()) >= 1000:
                    out.append((name, text))
    return out


def pages(nltk_dir: Path, passes: int = 4, seed: int = 0) -> list[dict]:
    """Rows {"text", "url", "id"}: each text cut into pages of 1-4 KB, `passes` times with different cuts."""
    rng = random.Random(seed)
    rows = []
    texts = _texts(nltk_dir)
    for p in range(passes):
        for name, text in texts:
            at = 0
            while at < len(text) - 500:
                end = min(len(text), at + rng.randint(1000, 4000))
                host = name.split("/")[0].replace("_", "-")
                rows.append({"text": text[at:end], "url": f"https://{host}.example.org/{name}/{p}/{at}",
                             "id": f"{name}:{p}:{at}"})
                at = end
    rng.shuffle(rows)
    return rows


def write_shards(rows: list[dict], out: Path, shards: int = 2, copies: int = 1) -> list[Path]:
    """`rows` as `shards` JSONL.gz files (one gzip member each), each holding its rows `copies` times
    over (each copy's texts and ids made distinct: new documents to the pipeline, not duplicates)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"part-{i:03d}.jsonl.gz" for i in range(shards)]
    for i, path in enumerate(paths):
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as fh:
            for c in range(copies):
                for row in rows[i::shards]:
                    row = row if c == 0 else {**row, "text": f"{row['text']}\n[{c}]", "id": f"{row['id']}:{c}"}
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return paths
