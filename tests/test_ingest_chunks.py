"""Large input files read in chunks (pipeline.io.chunks): every chunking gives exactly the records of
reading the whole file, on random files of every splittable layout, damaged ones included."""
from __future__ import annotations

import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.config import InputSpec
from pipeline.io import RawDoc, Rejected
from pipeline.io.chunks import Chunk, plan_chunks, read_chunk
from pipeline.io.readers import discover_inputs, read_file


def _lines(rng: random.Random, n: int) -> list[bytes]:
    """JSON Lines with the odd blank line, malformed line, missing text and byte-order mark."""
    out = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.03:
            out.append(b"\n")
        elif kind < 0.05:
            out.append(b'{"text": broken\n')
        elif kind < 0.06:
            out.append(json.dumps({"url": f"u{i}"}).encode() + b"\n")
        elif kind < 0.07:
            out.append(b"\xef\xbb\xbf" + json.dumps({"text": f"bom {i}"}).encode() + b"\n")
        else:
            vocabulary = ["alpha", "beta", "gamma", "delta", "épsilon"]
            words = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 60)))
            out.append(json.dumps({"text": f"{i} {words}", "url": f"https://h{i % 7}.example.com/{i}"},
                                  ensure_ascii=False).encode() + b"\n")
    return out


def _members(lines: list[bytes], rng: random.Random, cut_inside_lines: bool) -> list[bytes]:
    """The file's bytes in pieces, each to be its own gzip member / zstd frame."""
    data = b"".join(lines)
    cuts = sorted(rng.sample(range(1, len(data)), 12)) if cut_inside_lines else \
        sorted(sum(len(x) for x in lines[:k]) for k in rng.sample(range(1, len(lines)), 12))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


def _write(path, lines, layout: str, rng: random.Random):
    data = b"".join(lines)
    if layout == "plain":
        path.write_bytes(data)
    elif layout == "gzip":
        path.write_bytes(gzip.compress(data))
    elif layout.startswith("gzip_members"):
        path.write_bytes(b"".join(gzip.compress(m) for m in _members(lines, rng, layout.endswith("inside"))))
    elif layout == "zstd":
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    elif layout.startswith("zstd_frames"):
        path.write_bytes(b"".join(zstandard.ZstdCompressor().compress(m)
                                  for m in _members(lines, rng, layout.endswith("inside"))))


def _records(records) -> list[tuple]:
    return [(type(r).__name__, r.source_offset, r.text, r.url) if isinstance(r, RawDoc) else
            (type(r).__name__, r.source_offset, r.reason, (r.detail, r.raw)) if isinstance(r, Rejected) else
            (type(r).__name__, r.source_offset, r.record_type) for r in records]


def _one(path) -> object:
    (f,) = discover_inputs(InputSpec(path=str(path)))
    return f


@pytest.mark.parametrize("layout", ["plain", "gzip", "gzip_members", "gzip_members_inside", "zstd",
                                    "zstd_frames", "zstd_frames_inside"])
@pytest.mark.parametrize("seed", [0, 1])
def test_chunks_read_exactly_the_records_of_the_whole_file(tmp_path, layout, seed):
    rng = random.Random(seed)
    suffix = {"plain": ".jsonl", "gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}[layout.split("_")[0]]
    path = tmp_path / f"rows{suffix}"
    _write(path, _lines(rng, 3000), layout, rng)
    f = _one(path)
    chunk_bytes = rng.choice([20_000, 50_000, 90_000])
    chunks = plan_chunks(f, chunk_bytes)
    whole = _records(read_file(f))
    assert len(chunks) >= 3 and [c.index for c in chunks] == list(range(len(chunks)))
    assert _records(r for c in chunks for r in read_chunk(c)) == whole
    assert len({c.key for c in chunks}) == len(chunks)


@pytest.mark.parametrize("layout", ["gzip", "gzip_members", "zstd_frames"])
def test_a_damaged_file_read_in_chunks_reports_as_the_whole_file_does(tmp_path, layout):
    rng = random.Random(3)
    path = tmp_path / ("cut.jsonl.gz" if layout.startswith("gzip") else "cut.jsonl.zst")
    _write(path, _lines(rng, 3000), layout, rng)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.7)])
    f = _one(path)
    chunks = plan_chunks(f, 20_000)
    whole = _records(read_file(f))
    assert whole[-1][0] == "Rejected" and whole[-1][2] == "corrupt_compression"
    assert len(chunks) >= 2
    assert _records(r for c in chunks for r in read_chunk(c)) == whole


def test_parquet_is_cut_at_row_groups(tmp_path):
    path = tmp_path / "rows.parquet"
    texts = [f"row {i} " + "word " * (i % 50) for i in range(5000)]
    pq.write_table(pa.table({"text": texts, "url": [f"https://e.com/{i}" for i in range(5000)]}), path,
                   row_group_size=400)
    f = _one(path)
    chunks = plan_chunks(f, 20_000)
    assert len(chunks) >= 3 and all(c.size for c in chunks)
    records = [r for c in chunks for r in read_chunk(c)]
    assert _records(records) == _records(read_file(f))
    assert [r.source_offset for r in records] == list(range(5000))


def test_what_cannot_be_cut_is_one_chunk(tmp_path):
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"text": "x" * 100} for _ in range(2000)]))
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps({"text": "a"}) + "\n")
    for path in (array, small):
        assert plan_chunks(_one(path), 10_000) == [Chunk(_one(path))]
    # A .gz that is not gzip: one chunk, whose reader quarantines it as the whole file's would.
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(b"".join(_lines(random.Random(0), 2000)))
    (chunk,) = plan_chunks(_one(fake), 10_000)
    (record,) = list(read_chunk(chunk))
    assert isinstance(record, Rejected) and record.reason == "corrupt_compression"


@pytest.mark.parametrize("layout", ["gzip", "zstd_frames_inside", "plain"])
def test_runs_read_their_chunks_in_one_pass_with_the_same_records(tmp_path, layout):
    from pipeline.io.chunks import RUN_CHUNKS, read_run, runs

    rng = random.Random(5)
    path = tmp_path / {"gzip": "rows.jsonl.gz", "zstd_frames_inside": "rows.jsonl.zst", "plain": "rows.jsonl"}[layout]
    _write(path, _lines(rng, 3000), layout, rng)
    f = _one(path)
    chunks = plan_chunks(f, 15_000)
    grouped = runs(chunks)
    assert [c for run in grouped for c in run] == chunks and max(map(len, grouped)) <= RUN_CHUNKS
    if layout == "plain":  # every chunk opens at its own line: each is its own task
        assert all(len(run) == 1 for run in grouped)
    else:  # one gzip member: chunks share where they open, and a run reads several in one pass
        assert any(len(run) > 1 for run in grouped)
    for run in grouped:
        for chunk, records in read_run(run):
            assert _records(records) == _records(read_chunk(chunk))


def _warc(path, n_pages: int, gzip_members: bool, wet: bool = False) -> None:
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter
    rng = random.Random(7)
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=gzip_members)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "test"}))
        for i in range(n_pages):
            url = f"http://e{i % 5}.com/{i}"
            vocabulary = ["river", "wheat", "maps", "rates", "bridge"]
            words = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(5, 400)))
            if wet:
                writer.write_record(writer.create_warc_record(url, "conversion", payload=io.BytesIO(words.encode()),
                                                              warc_content_type="text/plain"))
                continue
            writer.write_record(writer.create_warc_record(url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n"),
                                                          warc_content_type="application/http; msgtype=request"))
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
            body = f"<html><body><nav>Home</nav><p>{words}</p></body></html>".encode()
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          http_headers=headers))


@pytest.mark.parametrize("name, gzip_members, wet", [("crawl.warc.gz", True, False), ("crawl.warc", False, False),
                                                     ("crawl.warc.wet.gz", True, True)])
@pytest.mark.parametrize("cut", [False, True])
def test_warc_chunks_read_exactly_the_records_of_the_whole_file(tmp_path, name, gzip_members, wet, cut):
    path = tmp_path / name
    _warc(path, 300, gzip_members, wet)
    if cut:
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.8)])
    f = _one(path)
    chunks = plan_chunks(f, 40_000)
    whole = _records(read_file(f))
    assert len(chunks) >= 3 and len(whole) > 200
    assert whole[-1][0] == ("Rejected" if cut else "RawDoc")
    assert _records(r for c in chunks for r in read_chunk(c)) == whole
