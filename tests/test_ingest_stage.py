"""The ingest stage end to end on a real local Spark session, real files of every format and real Parquet."""
import gzip
import io
import json
import shutil

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

import schemas
from pipeline.config import Config
from pipeline import hashing
from pipeline.ingest.documents import normalize_text
from pipeline.errors import UserError
from pipeline.ingest.stage import run_ingest

pytestmark = pytest.mark.spark

ENGLISH = [
    "The river rose overnight after three days of heavy rain, and the town council closed the bridge.",
    "Researchers measured the growth of wheat under different irrigation schedules across two seasons.",
    "A function returns a value to its caller; without a return statement it returns None.",
    "The museum reopened its east wing with a collection of maps from the sixteenth century.",
    "Interest rates were left unchanged, as the central bank waited for clearer signs of inflation.",
]


def _text(i: int) -> str:
    return f"{ENGLISH[i % len(ENGLISH)]} This is document number {i}, written for the ingest test."


def _warc(path, records):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        writer.write_record(writer.create_warcinfo_record("crawl.warc.gz", {"software": "test"}))
        for url, html in records:
            req = writer.create_warc_record(url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n"))
            writer.write_record(req)
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.0")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(html.encode()),
                                                          http_headers=headers))


@pytest.fixture
def mixed_inputs(tmp_path):
    """Real files of every reader's format, with planted bad rows and files. Returns (folder, expected)."""
    raw = tmp_path / "raw"
    (raw / "bad").mkdir(parents=True)
    expected = {"input_rows": 0, "quarantined": 0, "skipped_records": 0, "texts": []}

    def good(text):
        expected["input_rows"] += 1
        expected["texts"].append(normalize_text(text))

    def bad(n=1):
        expected["input_rows"] += n
        expected["quarantined"] += n

    def skipped(n):
        expected["input_rows"] += n
        expected["skipped_records"] += n

    with gzip.open(raw / "a.jsonl.gz", "wt", encoding="utf-8") as f:  # 30 docs
        for i in range(30):
            f.write(json.dumps({"text": _text(i), "url": f"https://news.example.co.uk/{i}", "id": i}) + "\n")
            good(_text(i))
    with open(raw / "b.jsonl.zst", "wb") as f:  # 20 docs, 5 of them exact duplicates of a.jsonl.gz
        texts = [_text(i if i < 5 else 600 + i) for i in range(20)]
        lines = [json.dumps({"text": t, "url": f"https://mirror.org/{i}"}) for i, t in enumerate(texts)]
        f.write(zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode()))
        for t in texts:
            good(t)
    pq.write_table(pa.table({"text": [_text(100 + i) for i in range(25)] + [None],
                             "url": [f"https://docs.example.org/{i}" for i in range(26)]}), raw / "c.parquet")
    for i in range(25):
        good(_text(100 + i))
    bad()  # the null text row
    _warc(raw / "d.warc.gz", [(f"https://blog.example.net/{i}",
                               f"<html><head><script>x()</script></head><body><p>{_text(200 + i)}</p></body></html>")
                              for i in range(10)])
    for i in range(10):
        good(_text(200 + i))
    skipped(1 + 10)  # warcinfo + 10 request records hold no page: skipped, not quarantined
    from datasets import Dataset
    Dataset.from_dict({"text": [_text(300 + i) for i in range(15)],
                       "url": [f"https://hf.example.com/{i}" for i in range(15)]}).save_to_disk(str(raw / "e_dataset"))
    for i in range(15):
        good(_text(300 + i))
    # Planted bad inputs.
    with open(raw / "bad" / "broken.jsonl", "wb") as f:
        f.write(json.dumps({"text": _text(400)}).encode() + b"\n")
        f.write(b'{"text": "unterminated\n')                  # malformed JSON
        f.write(b'{"text": "bad bytes \xff\xfe here"}\n')     # invalid UTF-8
        f.write(json.dumps({"url": "https://x.org"}).encode() + b"\n")  # no text
        f.write(json.dumps({"text": "   "}).encode() + b"\n")            # empty after normalisation
    good(_text(400))
    bad(4)
    blob = gzip.compress("".join(json.dumps({"text": _text(500 + i)}) + "\n" for i in range(200)).encode())
    (raw / "bad" / "truncated.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    (raw / "bad" / "empty.jsonl").write_bytes(b"")
    bad()
    (raw / "bad" / "notes.xml").write_text("<xml/>")
    bad()
    return raw, expected


def _config(tmp_path, raw, store="store", **ingest):
    return Config.model_validate({"store": str(tmp_path / store),
                                  "ingest": {"inputs": [str(raw)], "num_shards": 3, **ingest}})


def _docs(store_path) -> pa.Table:
    return pq.read_table(store_path / "docs", schema=schemas.DOCS).sort_by("doc_id")


def test_ingest_mixed_inputs_reconciles(spark, tmp_path, mixed_inputs):
    raw, expected = mixed_inputs
    result = run_ingest(_config(tmp_path, raw), spark=spark)
    c = result.counts
    store = tmp_path / "store"
    quarantine = pq.read_table(store / "quarantine")
    docs = _docs(store)
    # The truncated gzip yields the records before the damage plus one corrupt_compression row.
    truncated_rows = quarantine.filter(pa.compute.match_substring(quarantine["source_file"], "truncated"))
    assert truncated_rows.num_rows == 1 and truncated_rows["reason"][0].as_py() == "corrupt_compression"
    n_before_damage = c["input_rows"] - expected["input_rows"] - 1
    assert 0 < n_before_damage < 200
    assert c["input_rows"] == docs.num_rows + c["duplicates"] + quarantine.num_rows + c["skipped_records"]
    assert c["quarantined"] == quarantine.num_rows == expected["quarantined"] + 1
    assert c["skipped_records"] == expected["skipped_records"] == 11
    assert c["duplicates"] == 5 and c["docs"] == docs.num_rows
    reasons = set(quarantine["reason"].to_pylist())
    assert {"malformed_json", "invalid_utf8", "missing_text", "empty_text", "empty_file", "unknown_format",
            "corrupt_compression"} <= reasons
    assert "warc_not_response" not in reasons
    assert all(quarantine["source_file"].to_pylist())
    # Every expected text is there exactly once, keyed by the hash of its normalised text.
    ids = docs["doc_id"].to_pylist()
    assert len(ids) == len(set(ids))
    assert {hashing.doc_id(t) for t in expected["texts"]} <= set(ids)
    # Duplicates keep their sources; the first occurrence (smallest file, offset) is the row.
    dup = docs.filter(pa.compute.equal(docs["doc_id"], hashing.doc_id(normalize_text(_text(0))))).to_pylist()[0]
    assert dup["duplicate_count"] == 2 and dup["source_file"].endswith("a.jsonl.gz") and dup["source_offset"] == 1
    assert sorted(s["url"] for s in dup["duplicate_sources"]) == ["https://mirror.org/0", "https://news.example.co.uk/0"]
    # Metadata columns are filled.
    row = docs.filter(pa.compute.equal(docs["doc_id"], hashing.doc_id(normalize_text(_text(7))))).to_pylist()[0]
    assert row["domain"] == "example.co.uk" and row["host"] == "news.example.co.uk" and row["language"] == "en"
    assert row["n_bytes"] == len(row["text"].encode()) and row["language_score"] > 0.5 and row["source_id"] == "7"
    warc_row = docs.filter(pa.compute.equal(docs["source_format"], "warc")).to_pylist()[0]
    assert "x()" not in warc_row["text"] and warc_row["url"].startswith("https://blog.example.net/")
    # Shards: exactly num_shards files, balanced by bytes, each sorted by doc_id.
    parts = sorted((store / "docs").glob("part-*.parquet"))
    assert len(parts) == 3
    sizes = [pa.compute.sum(pq.read_table(p)["n_bytes"]).as_py() for p in parts]
    assert max(sizes) - min(sizes) <= max(len(t.encode()) for t in docs["text"].to_pylist()) * 2
    for p in parts:
        ids = pq.read_table(p)["doc_id"].to_pylist()
        assert ids == sorted(ids)
    record = json.loads(next((store / "_runs" / "ingest").glob("*.json")).read_text())
    assert record["status"] == "finished" and record["counts"]["docs"] == docs.num_rows


def test_ingest_is_deterministic(spark, tmp_path, mixed_inputs):
    raw, _ = mixed_inputs
    run_ingest(_config(tmp_path, raw, store="s1"), spark=spark)
    run_ingest(_config(tmp_path, raw, store="s2"), spark=spark)
    for name in [p.name for p in (tmp_path / "s1" / "docs").glob("part-*.parquet")]:
        a = pq.read_table(tmp_path / "s1" / "docs" / name)
        b = pq.read_table(tmp_path / "s2" / "docs" / name)
        assert a.equals(b), name


def test_ingest_resumes_without_duplicates(spark, tmp_path, mixed_inputs):
    raw, _ = mixed_inputs
    cfg = _config(tmp_path, raw)
    first = run_ingest(cfg, spark=spark)
    store = tmp_path / "store"
    docs_before = _docs(store)
    # Same config again: every file is skipped and nothing is rewritten.
    again = run_ingest(cfg, spark=spark)
    assert again.counts["files_processed"] == 0 and again.counts["files_skipped"] == first.counts["files_processed"]
    assert again.counts["dedup_skipped"] == 1 and _docs(store).equals(docs_before)
    # A run killed after some files: simulate by removing one file's finished marker and outputs.
    marker = sorted((store / "_staging" / "ingest").glob("*.json"))[0]
    marker.unlink()
    resumed = run_ingest(cfg, spark=spark)
    assert resumed.counts["files_processed"] == 1
    assert _docs(store).equals(docs_before)
    assert pq.read_table(store / "quarantine").num_rows == first.counts["quarantined"]
    # A new input file: only it is read; its duplicate of an existing doc is collapsed.
    (raw / "more.jsonl").write_text(json.dumps({"text": _text(900)}) + "\n" + json.dumps({"text": _text(1)}) + "\n")
    grown = run_ingest(cfg, spark=spark)
    assert grown.counts["files_processed"] == 1
    assert grown.counts["docs"] == first.counts["docs"] + 1
    assert grown.counts["duplicates"] == first.counts["duplicates"] + 1
    assert grown.counts["input_rows"] == (grown.counts["docs"] + grown.counts["duplicates"] + grown.counts["quarantined"]
                                          + grown.counts["skipped_records"])
    # --overwrite starts over, and a failed one leaves the store as it was (here: no Spark to read with).
    docs_before = _docs(store)
    with pytest.raises(UserError):
        run_ingest(cfg, spark=None, overwrite=True)
    assert _docs(store).equals(docs_before)
    assert pq.read_table(store / "quarantine").num_rows == grown.counts["quarantined"]
    fresh = run_ingest(cfg, spark=spark, overwrite=True)
    assert fresh.counts["files_skipped"] == 0 and fresh.counts["docs"] == grown.counts["docs"]
    assert len(list((store / "_runs" / "ingest").glob("*.json"))) == 6  # the history is kept
    # Overwriting with fewer inputs: the left-out file's documents and staged rows leave the store.
    (raw / "more.jsonl").unlink()
    fewer = run_ingest(cfg, spark=spark, overwrite=True)
    assert fewer.counts["docs"] == first.counts["docs"] and fewer.counts["input_files"] == fresh.counts["input_files"] - 1
    assert _docs(store).num_rows == first.counts["docs"]
    assert len(list((store / "_staging" / "ingest").glob("*.json"))) == fewer.counts["input_files"]


def test_changed_settings_reprocess_files(spark, tmp_path, mixed_inputs):
    raw, _ = mixed_inputs
    run_ingest(_config(tmp_path, raw), spark=spark)
    strict = run_ingest(_config(tmp_path, raw, min_chars=150), spark=spark)
    assert strict.counts["files_skipped"] == 0
    q = duckdb.execute(f"SELECT count(*) FROM read_parquet('{tmp_path}/store/quarantine/*.parquet') "
                   "WHERE reason = 'too_short'").fetchone()[0]
    assert q > 0 and strict.outputs["reasons"]["too_short"] == q
    assert strict.counts["input_rows"] == (strict.counts["docs"] + strict.counts["duplicates"]
                                           + strict.counts["quarantined"] + strict.counts["skipped_records"])


def test_no_documents_still_writes_empty_shards(spark, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "empty.jsonl").write_bytes(b"")
    result = run_ingest(_config(tmp_path, raw), spark=spark)
    assert result.counts["docs"] == 0 and result.counts["quarantined"] == 1
    assert len(list((tmp_path / "store" / "docs").glob("part-*.parquet"))) == 3
    assert duckdb.execute(f"SELECT count(*) FROM read_parquet('{tmp_path}/store/docs/*.parquet')").fetchone()[0] == 0
    shutil.rmtree(raw)


def _large_inputs(raw, n_docs: int = 6000):
    """A plain and a gzip JSON Lines file of ~1 KB pages, each larger than a 1 MB chunk; the gzip file is
    one member, so its chunks share where they open and are read in runs."""
    import random
    rng = random.Random(0)
    words = [w for t in ENGLISH for w in t.lower().strip(".").split()]
    lines = [json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(100, 250))),
                         "url": f"https://site{i % 13}.example.com/{i}"}) + "\n" for i in range(n_docs)]
    lines[5] = "{broken\n"
    (raw / "big.jsonl").write_text("".join(lines[: n_docs // 2]) + lines[7])  # one duplicate across files
    (raw / "big.jsonl.gz").write_bytes(gzip.compress("".join(lines[n_docs // 2:]).encode()))


def test_large_files_are_read_in_chunks_and_resume_inside_a_file(spark, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    _large_inputs(raw)
    no_language = {"language": {"enabled": False}}
    whole = run_ingest(_config(tmp_path, raw, store="whole", **no_language), spark=spark)
    cfg = _config(tmp_path, raw, store="chunked", chunk_mb=1, **no_language)
    chunked = run_ingest(cfg, spark=spark)
    assert whole.counts["chunks"] == 2 and chunked.counts["chunks"] >= 6
    for key in ("input_rows", "docs", "duplicates", "quarantined"):
        assert chunked.counts[key] == whole.counts[key]
    assert chunked.counts["duplicates"] == 1 and chunked.counts["quarantined"] == 1
    # The same shards, byte for byte, and the same quarantine rows, whatever the chunks.
    for name in sorted(p.name for p in (tmp_path / "whole" / "docs").glob("part-*.parquet")):
        assert (tmp_path / "whole" / "docs" / name).read_bytes() == (tmp_path / "chunked" / "docs" / name).read_bytes()
    assert (pq.read_table(tmp_path / "whole" / "quarantine").to_pylist()
            == pq.read_table(tmp_path / "chunked" / "quarantine").to_pylist())
    plans = list((tmp_path / "chunked" / "_staging" / "ingest-plans").glob("*.json"))
    assert len(plans) == 2
    # Killed inside the gzip file: one of its middle chunks never finished. Only that chunk is read again.
    markers = sorted(m for m in (tmp_path / "chunked" / "_staging" / "ingest").glob("*.json")
                     if json.loads(m.read_text())["path"].endswith(".gz"))
    assert len(markers) >= 3
    markers[len(markers) // 2].unlink()
    resumed = run_ingest(cfg, spark=spark)
    assert resumed.counts["chunks_read"] == 1 and resumed.counts["files_processed"] == 1
    assert resumed.counts["docs"] == whole.counts["docs"]
    assert _docs(tmp_path / "chunked").equals(_docs(tmp_path / "whole"))


def test_a_small_input_is_ingested_in_process_with_the_same_result(spark, tmp_path, mixed_inputs):
    from pipeline.spark import LazySpark
    raw, _ = mixed_inputs
    in_spark = run_ingest(_config(tmp_path, raw, store="spark"), spark=spark)
    cfg = _config(tmp_path, raw, store="local")
    lazy = LazySpark(cfg.spark)
    local = run_ingest(cfg, spark=lazy)
    assert not lazy.started  # Spark never started for a few kilobytes
    assert local.counts == {**in_spark.counts}
    for name in sorted(p.name for p in (tmp_path / "spark" / "docs").glob("part-*.parquet")):
        assert (tmp_path / "spark" / "docs" / name).read_bytes() == (tmp_path / "local" / "docs" / name).read_bytes()


def test_shard_boundaries_by_doc_id_prefix_give_the_same_shards_on_a_small_store(spark, tmp_path, mixed_inputs,
                                                                                  monkeypatch):
    # Above EXACT_BOUNDARY_ROWS the boundaries fall between 5-hex-digit doc_id prefixes, summed by Spark; a
    # few hundred documents all have prefixes of their own, so the shards are the exact ones.
    from pipeline.ingest import stage
    raw, _ = mixed_inputs
    exact = run_ingest(_config(tmp_path, raw, store="exact"), spark=spark)
    monkeypatch.setattr(stage, "EXACT_BOUNDARY_ROWS", 0)
    bucketed = run_ingest(_config(tmp_path, raw, store="bucketed"), spark=spark)
    assert bucketed.counts == exact.counts
    for name in sorted(p.name for p in (tmp_path / "exact" / "docs").glob("part-*.parquet")):
        assert (tmp_path / "exact" / "docs" / name).read_bytes() == (tmp_path / "bucketed" / "docs" / name).read_bytes()


def test_a_shard_written_in_parts_holds_the_same_documents(spark, tmp_path, mixed_inputs, monkeypatch):
    # A shard's task collapses about PART_BYTES of text at a time: with tiny parts, every shard still
    # holds exactly its documents, in doc_id order.
    from pipeline.ingest import stage
    raw, _ = mixed_inputs
    run_ingest(_config(tmp_path, raw, store="whole"), spark=spark)
    monkeypatch.setattr(stage, "PART_BYTES", 2_000)
    run_ingest(_config(tmp_path, raw, store="parts"), spark=spark)
    for name in sorted(p.name for p in (tmp_path / "whole" / "docs").glob("part-*.parquet")):
        whole, parts = (pq.ParquetFile(tmp_path / s / "docs" / name) for s in ("whole", "parts"))
        assert parts.num_row_groups > 3 * whole.num_row_groups
        assert parts.read().equals(whole.read())


def test_a_store_staged_before_chunks_is_taken_over_without_reading_again(spark, tmp_path, mixed_inputs):
    raw, _ = mixed_inputs
    cfg = _config(tmp_path, raw)
    first = run_ingest(cfg, spark=spark)
    staging, quarantine = tmp_path / "store" / "_staging" / "ingest", tmp_path / "store" / "quarantine"
    # Put the staging back as it was before chunks: `<file key>.json` markers without chunk keys.
    for marker in staging.glob("*-c00000.json"):
        stem = marker.name.removesuffix("-c00000.json")
        legacy = {k: v for k, v in json.loads(marker.read_text()).items() if k not in ("chunk", "chunks", "plan")}
        (staging / f"{stem}.json").write_text(json.dumps(legacy))
        marker.unlink()
        (staging / f"{stem}-c00000.parquet").rename(staging / f"{stem}.parquet")
        (quarantine / f"part-{stem}-c00000.parquet").rename(quarantine / f"part-{stem}.parquet")
    again = run_ingest(cfg, spark=spark)
    assert again.counts["files_processed"] == 0 and again.counts["docs"] == first.counts["docs"]
    assert again.counts["quarantined"] == first.counts["quarantined"] == pq.read_table(quarantine).num_rows
    assert sorted(p.name for p in staging.glob("*.json")) == sorted(p.name for p in staging.glob("*-c00000.json"))
