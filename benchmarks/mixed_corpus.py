"""A mixed-source corpus with degraded copies, from the real text in ../shared/data/nltk.

Seven sources whose clean text differs several-fold in perplexity (movie reviews, science and rural
news, wine notes, overheard conversations, a browser's support forum, the Brown corpus), each on its
own host, and a share of degraded copies of five kinds spread over the same hosts. A document's URL
path says what it is: https://<source>.mixed.example.com/<kind>/<n>, kind `clean` or a degradation.
"""
from __future__ import annotations

import gzip
import json
import random
import re
import zipfile
from pathlib import Path

SOURCES = ("brown", "forum", "overheard", "reviews", "rural", "science", "wine")
DEGRADATIONS = ("word_shuffle", "char_noise", "keyword_spam", "boilerplate", "cut_repeats")
NAV_ITEMS = ["Home", "About Us", "Contact", "Privacy Policy", "Terms of Use", "Sitemap", "Login", "Register",
             "Blog", "News", "Shop", "Cart", "FAQ", "Careers", "Archive", "Categories", "Tags", "Subscribe"]
SPAM_WORDS = ["best", "cheap", "free", "buy", "online", "top", "deals", "discount", "review", "sale", "2024"]


def _runs(lines: list[str], size: int) -> list[str]:
    lines = [x.strip() for x in lines if x.strip()]
    return ["\n".join(lines[i:i + size]) for i in range(0, len(lines) - size + 1, size)]


def _brown_text(raw: str) -> str:
    """Brown's `word/TAG` tokens as plain text, one paragraph per line."""
    paragraphs = []
    for para in raw.split("\n\n"):
        words = [t.rsplit("/", 1)[0] for t in para.split()]
        text = " ".join(words).replace("``", '"').replace("''", '"')
        text = re.sub(r" ([.,;:!?')])", r"\1", text)
        if text:
            paragraphs.append(text)
    return "\n".join(paragraphs)


def source_documents(nltk_dir: Path) -> dict[str, list[str]]:
    """Clean documents per source name."""
    out: dict[str, list[str]] = {}
    with zipfile.ZipFile(nltk_dir / "movie_reviews.zip") as z:
        out["reviews"] = [z.read(n).decode("utf-8", "replace").strip() for n in sorted(z.namelist())
                          if n.endswith(".txt")]
    with zipfile.ZipFile(nltk_dir / "abc.zip") as z:
        out["science"] = _runs(z.read("abc/science.txt").decode("utf-8", "replace").splitlines(), 8)
        out["rural"] = _runs(z.read("abc/rural.txt").decode("utf-8", "replace").splitlines(), 8)
    with zipfile.ZipFile(nltk_dir / "webtext.zip") as z:
        read = lambda n: z.read(f"webtext/{n}").decode("utf-8", "replace").splitlines()  # noqa: E731
        out["wine"] = _runs(read("wine.txt"), 12)
        out["overheard"] = _runs(read("overheard.txt"), 16)
        out["forum"] = _runs(read("firefox.txt"), 12)
    with zipfile.ZipFile(nltk_dir / "brown.zip") as z:
        names = sorted(n for n in z.namelist() if re.fullmatch(r"brown/c[a-r]\d\d", n))
        brown = []
        for n in names:
            text = _brown_text(z.read(n).decode("utf-8", "replace"))
            brown += [text[i:i + 2500].strip() for i in range(0, len(text) - 1500, 2500)]
        out["brown"] = brown
    return out


def degrade(text: str, kind: str, rng: random.Random) -> str:
    """A degraded copy of `text` of one of DEGRADATIONS' kinds."""
    words = text.split()
    if kind == "word_shuffle":
        rng.shuffle(words)
        return " ".join(words)
    if kind == "char_noise":
        letters = "abcdefghijklmnopqrstuvwxyz"
        return "".join(rng.choice(letters) if c.isalpha() and rng.random() < 0.15 else c for c in text)
    if kind == "keyword_spam":   # SEO spam: a few of the page's words in stock phrases, over and over
        content = sorted({w.strip(".,;:!?\"'()").lower() for w in words if len(w) > 4}) or ["product"]
        keywords = rng.sample(content, min(3, len(content)))
        phrases = [f"{p} {k}" for k in keywords for p in ("best", "cheap", "buy", "free", "top 10", "discount")]
        phrases += [f"{k} online" for k in keywords] + [f"{k} for sale" for k in keywords]
        return "\n".join(", ".join(rng.choice(phrases) for _ in range(rng.randint(4, 8)))
                         for _ in range(max(6, len(words) // 15)))
    if kind == "boilerplate":    # a navigation page: menus, a teaser of the text, footer links
        menu = " | ".join(rng.sample(NAV_ITEMS, 8))
        snippet = " ".join(words[: rng.randint(12, 25)])
        return "\n".join([menu, "Skip to main content", menu, snippet + " ... Read more",
                          "Share on Facebook | Share on Twitter | Email this page", menu,
                          f"Copyright © {rng.randint(2005, 2024)} All rights reserved. | Privacy Policy | Terms of Use",
                          menu])
    if kind == "cut_repeats":
        lines = [x for x in text.splitlines() if x.strip()]
        if len(lines) < 4:   # one paragraph: cut it into pieces of a dozen words first
            lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
        cut = "\n".join(" ".join(line.split()[:3]) for line in lines)
        return "\n".join([cut] * 3)
    raise ValueError(f"unknown degradation {kind!r}")


def build(nltk_dir: Path, per_source: int, degraded_fraction: float, seed: int = 0,
          sources: tuple[str, ...] = SOURCES, kinds: tuple[str, ...] = DEGRADATIONS) -> list[dict]:
    """Records {id, text, url, source, kind}: `per_source` clean documents from each source and
    degraded copies of a `degraded_fraction` share of them (the kinds in turn), shuffled."""
    rng = random.Random(seed)
    records = []
    for source, docs in sorted(source_documents(nltk_dir).items()):
        if source not in sources:
            continue
        for text in rng.sample(docs, min(per_source, len(docs))):
            records.append({"text": text, "source": source, "kind": "clean"})
    clean = list(records)
    for i, doc in enumerate(rng.sample(clean, int(len(clean) * degraded_fraction))):
        kind = kinds[i % len(kinds)]
        records.append({"text": degrade(doc["text"], kind, rng), "source": doc["source"], "kind": kind})
    rng.shuffle(records)
    for i, r in enumerate(records):
        r["id"] = f"{r['kind']}-{i}"
        r["url"] = f"https://{r['source']}.mixed.example.com/{r['kind']}/{i}"
    return records


def write(records: list[dict], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "corpus.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({"id": r["id"], "text": r["text"], "url": r["url"]}) + "\n")
    return path
