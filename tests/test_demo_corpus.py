"""The demo corpus: deterministic, readable by the standard libraries, and its summary tells the truth."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pipeline.config import Config
from pipeline.demo.corpus import build_demo_corpus
from pipeline.demo.queries import demo_config
from pipeline.errors import UserError

SMALL = 20
GOOD_HOSTS = {"docs.python.org", "pypi.org", "opensource.org", "licenses.example.org", "stdlib-docs.example.org",
              "nouvelles.example.fr", "nachrichten.example.de", "noticias.example.es", "notizie.example.it",
              "noticias.example.com.br", "nieuws.example.nl"}
JUNK_HOSTS = {"boilerplate-portal.example.com", "seo-spam.example.net", "autogen-tables.example.com",
              "mojibake.example.org", "thin-pages.example.com"}


def _build_in_subprocess(out_dir: Path, seed: int, max_docs: int) -> dict:
    """A build in a fresh interpreter with another hash seed: nothing may depend on process state."""
    code = ("import json, sys; from pipeline.demo.corpus import build_demo_corpus; "
            "print(json.dumps(build_demo_corpus(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", code, str(out_dir), str(seed), str(max_docs)], env=env,
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return {
        "a": (root / "a", build_demo_corpus(root / "a", seed=0, max_docs_per_source=SMALL)),
        "b": (root / "b", _build_in_subprocess(root / "b", seed=0, max_docs=SMALL)),
        "c": (root / "c", build_demo_corpus(root / "c", seed=1, max_docs_per_source=SMALL)),
    }


def _all_bytes(out_dir: Path) -> dict[str, bytes]:
    """Every file's bytes; for the datasets folder's Arrow files, their rows (datasets may cut the
    same rows into record batches differently from one process to the next)."""
    import pyarrow as pa
    raw = out_dir / "raw"
    contents = {}
    for p in sorted(raw.rglob("*")):
        if not p.is_file():
            continue
        if p.suffix == ".arrow":
            with pa.memory_map(str(p)) as source:
                contents[str(p.relative_to(raw))] = repr(pa.ipc.open_stream(source).read_all().to_pylist()).encode()
        else:
            contents[str(p.relative_to(raw))] = p.read_bytes()
    return contents


def read_records(path: Path) -> list[dict]:
    """Read one clean demo file with the plain libraries (not the pipeline's readers)."""
    name = path.name
    if name.endswith(".jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]
    if name.endswith(".jsonl.zst"):
        import zstandard
        with open(path, "rb") as fh:
            data = zstandard.ZstdDecompressor().stream_reader(fh).read()
        return [json.loads(line) for line in data.decode("utf-8").splitlines()]
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq
        return pq.read_table(path).to_pylist()
    if name.endswith(".warc.gz"):
        from warcio.archiveiterator import ArchiveIterator
        out, types = [], Counter()
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh):
                types[rec.rec_type] += 1
                if rec.rec_type == "response":
                    assert rec.http_headers.get_header("Content-Type").startswith("text/html")
                    body = rec.content_stream().read().decode("utf-8")
                    assert body.startswith("<!DOCTYPE html>")
                    out.append({"url": rec.rec_headers.get_header("WARC-Target-URI"), "html": body})
        assert types["warcinfo"] == 1 and types["request"] == types["response"] == len(out)
        return out
    if path.is_dir():
        import datasets
        return datasets.load_from_disk(str(path)).to_list()
    raise AssertionError(f"unexpected file {path}")


def test_same_seed_same_bytes_other_seed_differs(built):
    a, b, c = (_all_bytes(built[k][0]) for k in "abc")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], f"{name} differs between two builds with the same seed"
    assert built["a"][1] == built["b"][1]
    assert a != c


def test_every_file_readable_and_counts_match_summary(built):
    out_dir, summary = built["a"]
    raw = out_dir / "raw"
    on_disk = {p.name for p in raw.iterdir() if p.name != "bad"}
    assert on_disk == set(summary["files"])
    domains: Counter = Counter()
    ids = []
    for name, n in summary["files"].items():
        records = read_records(raw / name)
        assert len(records) == n, name
        for r in records:
            domains[urlsplit(r["url"]).hostname] += 1
            if "html" not in r:                       # the WARC carries HTML, the others the fields
                assert isinstance(r["text"], str) and r["text"].strip()
                assert r["source"] and r["id"]
                ids.append(r["id"])
    assert dict(domains) == summary["domains"]
    assert sum(domains.values()) == summary["total_records"] == sum(summary["files"].values())
    assert len(ids) == len(set(ids)), "ids are unique across files"
    formats = {n.split(".", 1)[1] if "." in n else "hf_disk" for n in summary["files"]}
    assert {"jsonl.gz", "jsonl.zst", "parquet", "warc.gz", "hf_disk"} <= formats


def test_several_domains_and_mostly_good_text(built):
    summary = built["a"][1]
    domains = summary["domains"]
    assert len(GOOD_HOSTS & set(domains)) >= 8
    assert JUNK_HOSTS <= set(domains)
    good = sum(n for host, n in domains.items() if host in GOOD_HOSTS)
    assert good > summary["total_records"] / 2


def test_duplicates_are_exact_copies_from_other_files(built):
    out_dir, summary = built["a"]
    raw = out_dir / "raw"
    texts: Counter = Counter()
    for name in summary["files"]:
        if name not in ("mirror.jsonl.gz", "web_crawl.warc.gz"):
            texts.update(r["text"] for r in read_records(raw / name))
    assert max(texts.values()) == 1, "the only duplicates are the planted ones"
    mirrors = read_records(raw / "mirror.jsonl.gz")
    assert len(mirrors) == summary["duplicates"] >= 1
    for m in mirrors:
        assert texts[m["text"]] == 1
        assert urlsplit(m["url"]).hostname == "mirror.example.com"


def test_planted_bad_inputs_are_bad_as_reported(built):
    out_dir, summary = built["a"]
    bad = out_dir / "raw" / "bad"
    planted = summary["planted_bad"]
    assert {f"bad/{p.name}" for p in bad.iterdir()} == set(planted)

    counts = Counter()
    for line in (bad / "broken.jsonl").read_bytes().splitlines():
        try:
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            counts["invalid_utf8"] += 1
            continue
        except json.JSONDecodeError:
            counts["malformed_json"] += 1
            continue
        counts["valid_records" if isinstance(obj.get("text"), str) else "missing_text"] += 1
    expected = {k: v for k, v in planted["bad/broken.jsonl"].items() if k != "lines"}
    assert dict(counts) == expected

    truncated = planted["bad/truncated.jsonl.gz"]
    lines = []
    with pytest.raises(EOFError):
        with gzip.open(bad / "truncated.jsonl.gz", "rb") as fh:
            for line in fh:
                lines.append(line)
    assert 0 < truncated["complete_records_before_cut"] < truncated["records_written"]
    assert (bad / "empty.jsonl").stat().st_size == 0
    assert (bad / "sitemap.xml").read_bytes().startswith(b"<?xml")


def test_mojibake_and_languages_look_the_part(built):
    out_dir, _ = built["a"]
    garbled = read_records(out_dir / "raw" / "forum_posts.jsonl.gz")
    assert garbled and all("â€" in r["text"] for r in garbled)
    pages = read_records(out_dir / "raw" / "web_crawl.warc.gz")
    langs = {urlsplit(p["url"]).hostname for p in pages}
    assert {"nouvelles.example.fr", "nachrichten.example.de", "nieuws.example.nl"} <= langs


def test_rebuild_replaces_a_demo_but_not_other_folders(built, tmp_path):
    out = tmp_path / "x"
    first = build_demo_corpus(out, seed=3, max_docs_per_source=5)
    assert build_demo_corpus(out, seed=3, max_docs_per_source=5) == first
    other = tmp_path / "y"
    (other / "raw").mkdir(parents=True)
    (other / "raw" / "mine.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match="not a demo corpus"):
        build_demo_corpus(other)


def test_default_size_is_a_small_corpus_of_mostly_real_text(tmp_path):
    summary = build_demo_corpus(tmp_path)
    assert 1000 <= summary["total_records"] <= 3000
    good = sum(n for host, n in summary["domains"].items() if host in GOOD_HOSTS)
    assert good > summary["total_records"] / 2
    assert 0.03 <= summary["duplicates"] / summary["total_records"] <= 0.07


def test_demo_config_is_a_valid_config(tmp_path):
    cfg = Config.model_validate(demo_config(tmp_path))
    assert cfg.store == str(tmp_path / "store")
    assert cfg.ingest.inputs[0].path == str(tmp_path / "raw")
    assert cfg.ingest.inputs[0].fields.metadata == ["source"]
    assert cfg.ingest.num_shards == 4
