"""Readers: every input format, every bad-input case, and input discovery.

Every input is built in tmp_path with the real library that writes that format (gzip, zstandard,
pyarrow, warcio, datasets), so the readers are tested against files like the ones they will meet.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.config import FieldMapping, InputSpec
from pipeline.errors import UserError
from pipeline.io import RawDoc, Rejected, Skipped
from pipeline.io.html import decode_payload, html_to_text
from pipeline.io.readers import discover_inputs, format_from_name, read_file


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def read_all(path, **spec) -> list:
    """Discover one input spec and read every file it expands to."""
    out = []
    for f in discover_inputs(InputSpec(path=str(path), **spec)):
        out.extend(read_file(f))
    return out


def docs(records) -> list[RawDoc]:
    return [r for r in records if isinstance(r, RawDoc)]


def rejected(records) -> list[Rejected]:
    return [r for r in records if isinstance(r, Rejected)]


def reasons(records) -> list[str]:
    return [r.reason for r in rejected(records)]


def skipped_types(records) -> list[str]:
    return [r.record_type for r in records if isinstance(r, Skipped)]


def jsonl_bytes(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def numbered_rows(n: int) -> list[dict]:
    # Varied text so that compressors emit several blocks and a cut lands inside the data.
    rng = random.Random(n)
    return [{"text": f"doc {i} " + " ".join(str(rng.random()) for _ in range(20)), "id": i} for i in range(n)]


# ---------------------------------------------------------------------------------------------
# JSONL
# ---------------------------------------------------------------------------------------------

def test_jsonl_good_records_with_fields_and_line_numbers(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(
        b'{"text": "first", "url": "http://a.com/1", "id": 7, "lang": "en", "other": 1}\n'
        b"\n"                                                   # blank lines are not records
        b'{"text": "second", "url": null, "lang": "fr"}\n'
        b"   \n"
        b'{"text": "third", "id": "x-3"}'                        # no trailing newline
    )
    records = read_all(path, fields=FieldMapping(metadata=["lang"]))

    assert [type(r) for r in records] == [RawDoc] * 3
    first, second, third = records
    assert (first.text, first.url, first.source_id, first.metadata) == ("first", "http://a.com/1", "7", {"lang": "en"})
    assert (second.url, second.source_id, second.metadata) == (None, None, {"lang": "fr"})
    assert (third.source_id, third.metadata) == ("x-3", None)   # a missing extra field is just absent
    assert [r.source_offset for r in records] == [1, 3, 5]
    assert {r.source_format for r in records} == {"jsonl"}
    assert first.source_file == str(path)


def test_jsonl_custom_field_mapping(tmp_path):
    path = tmp_path / "a.ndjson"
    path.write_bytes(jsonl_bytes([{"content": "hello", "link": "http://x", "doc": 12, "a": [1], "url": "ignored"}]))
    fields = FieldMapping(text="content", url="link", id="doc", metadata=["a", "b"])
    (doc,) = read_all(path, fields=fields)
    assert (doc.text, doc.url, doc.source_id, doc.metadata) == ("hello", "http://x", "12", {"a": [1]})

    (doc,) = read_all(path, fields=FieldMapping(text="content", url=None, id=None))
    assert (doc.url, doc.source_id) == (None, None)


def test_jsonl_bad_lines_become_rejected_with_line_numbers(tmp_path):
    lines = [
        b'{"text": "good"}',
        b'{"text": "caf\xe9"}',            # latin-1 byte: not UTF-8
        b'{"text": "unclosed',
        b'["an", "array"]',
        b'"a string"',
        b'{"url": "http://no-text"}',
        b'{"text": null}',
        b'{"text": 42}',
        b'{"text": "good again"}',
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    records = read_all(path)

    assert len(records) == len(lines)                          # one record per planted line
    assert [d.text for d in docs(records)] == ["good", "good again"]
    assert reasons(records) == ["invalid_utf8", "malformed_json", "not_an_object", "not_an_object",
                                "missing_text", "missing_text", "missing_text"]
    assert [r.source_offset for r in rejected(records)] == [2, 3, 4, 5, 6, 7, 8]
    bad_utf8 = rejected(records)[0]
    assert bad_utf8.raw == lines[1] + b"\n" and bad_utf8.source_format == "jsonl"
    assert "int" in rejected(records)[-1].detail               # names what the text field held
    assert all(r.detail for r in rejected(records))


@pytest.mark.parametrize("suffix, compress", [
    (".jsonl.gz", gzip.compress),
    (".json.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
    (".jsonl", lambda b: b),
])
def test_jsonl_compressed_reads_every_record(tmp_path, suffix, compress):
    rows = numbered_rows(300)
    path = tmp_path / f"data{suffix}"
    path.write_bytes(compress(jsonl_bytes(rows)))
    records = read_all(path)
    assert [d.text for d in records] == [r["text"] for r in rows]
    assert [d.source_offset for d in records] == list(range(1, 301))
    assert records[-1].source_id == "299"


def test_jsonl_zstd_with_several_frames(tmp_path):
    rows = numbered_rows(50)
    cctx = zstandard.ZstdCompressor()
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(cctx.compress(jsonl_bytes(rows[:20])) + cctx.compress(jsonl_bytes(rows[20:])))
    assert [d.text for d in read_all(path)] == [r["text"] for r in rows]


def assert_prefix_then_corrupt(records, rows):
    """Records read before a corruption are intact and in order; one corrupt_compression ends them."""
    *good, last = records
    assert all(isinstance(d, RawDoc) for d in good)
    assert [d.text for d in good] == [r["text"] for r in rows[:len(good)]]
    assert len(good) < len(rows)
    assert last.reason == "corrupt_compression"
    assert last.source_offset == len(good) + 1                  # the line where reading stopped
    return good, last


def test_truncated_gzip_keeps_records_before_the_cut(tmp_path):
    rows = numbered_rows(1000)
    data = gzip.compress(jsonl_bytes(rows))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    good, last = assert_prefix_then_corrupt(read_all(path), rows)
    assert len(good) > 100
    assert "EOFError" in last.detail


def test_gzip_missing_only_its_trailer_is_still_reported(tmp_path):
    rows = numbered_rows(10)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl_bytes(rows))[:-4])      # every line decompresses, the CRC doesn't
    records = read_all(path)
    assert [d.text for d in docs(records)] == [r["text"] for r in rows]
    assert reasons(records) == ["corrupt_compression"]


def test_truncated_zstd_keeps_records_before_the_cut(tmp_path):
    # zstandard's stream_reader reports a clean end-of-file here; the reader must not.
    rows = numbered_rows(3000)                                     # > one 128 KiB zstd block
    data = zstandard.ZstdCompressor().compress(jsonl_bytes(rows))
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(data[: len(data) * 2 // 3])
    good, last = assert_prefix_then_corrupt(read_all(path), rows)
    assert len(good) > 100
    assert "truncated" in last.detail


def test_corrupt_zstd(tmp_path):
    rows = numbered_rows(3000)
    data = bytearray(zstandard.ZstdCompressor().compress(jsonl_bytes(rows)))
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path = tmp_path / "bad.jsonl.zst"
    path.write_bytes(bytes(data))
    good, last = assert_prefix_then_corrupt(read_all(path), rows)
    assert "ZstdError" in last.detail


def test_file_named_gz_that_is_not_gzip(tmp_path):
    path = tmp_path / "liar.jsonl.gz"
    path.write_bytes(b'{"text": "plain"}\n')
    (rej,) = read_all(path)
    assert (rej.reason, rej.source_offset) == ("corrupt_compression", None)


@pytest.mark.parametrize("name, content", [
    ("empty.jsonl", b""),
    ("empty.jsonl.gz", gzip.compress(b"")),
    ("empty.jsonl.zst", zstandard.ZstdCompressor().compress(b"")),
    ("blank.jsonl", b"\n  \n\n"),
    ("empty.parquet", b""),
    ("empty.warc.gz", b""),
])
def test_empty_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    (rej,) = read_all(path)
    assert (rej.reason, rej.source_offset, rej.source_file) == ("empty_file", None, str(path))


def test_unknown_extension_is_quarantined_not_skipped(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    (f,) = discover_inputs(InputSpec(path=str(path)))
    assert f.format == "unknown"
    (rej,) = read_file(f)
    assert rej.reason == "unknown_format" and ".jsonl" in rej.detail and ".parquet" in rej.detail


def test_read_error_on_vanished_file(tmp_path):
    path = tmp_path / "gone.jsonl"
    path.write_bytes(b'{"text": "x"}\n')
    (f,) = discover_inputs(InputSpec(path=str(path)))
    path.unlink()
    (rej,) = read_file(f)
    assert rej.reason == "read_error" and "FileNotFoundError" in rej.detail


# ---------------------------------------------------------------------------------------------
# Byte-order marks and JSON arrays
# ---------------------------------------------------------------------------------------------

BOM = b"\xef\xbb\xbf"
COMPRESSIONS = [("", lambda b: b), (".gz", gzip.compress), (".zst", lambda b: zstandard.ZstdCompressor().compress(b))]


@pytest.mark.parametrize("compression, compress", COMPRESSIONS)
def test_jsonl_starting_with_a_bom_keeps_its_first_row(tmp_path, compression, compress):
    rows = [{"text": "first"}, {"text": "second"}]
    # Two files saved with a mark and concatenated (`cat a.jsonl b.jsonl`): the second mark starts line 3.
    path = tmp_path / f"bom.jsonl{compression}"
    path.write_bytes(compress(BOM + jsonl_bytes(rows) + BOM + jsonl_bytes(rows)))
    records = read_all(path)
    assert [(d.text, d.source_offset) for d in records] == [("first", 1), ("second", 2), ("first", 3), ("second", 4)]


def json_array_layouts(rows) -> dict[str, bytes]:
    return {"pretty": json.dumps(rows, indent=2).encode(), "compact": json.dumps(rows).encode() + b"\n",
            "bom": BOM + json.dumps(rows).encode()}


@pytest.mark.parametrize("layout", ["pretty", "compact", "bom"])
@pytest.mark.parametrize("compression, compress", COMPRESSIONS)
def test_json_array_file_is_read_as_documents(tmp_path, layout, compression, compress):
    rows = [{"text": "a", "url": "http://a", "id": 1}, "a string", {"text": "b"}, [1, 2], {"body": "no text"},
            None, {"text": "c"}]
    path = tmp_path / f"rows.json{compression}"
    path.write_bytes(compress(json_array_layouts(rows)[layout]))
    (f,) = discover_inputs(InputSpec(path=str(path)))              # format: auto
    records = list(read_file(f))

    assert len(records) == len(rows)                                # one input row per element
    assert [r.source_offset for r in records] == list(range(len(rows)))  # the element's index
    assert {r.source_format for r in records} == {"json"}
    assert [(d.text, d.source_offset) for d in docs(records)] == [("a", 0), ("b", 2), ("c", 6)]
    assert (records[0].url, records[0].source_id) == ("http://a", "1")
    assert [(r.reason, r.source_offset) for r in rejected(records)] == [
        ("not_an_object", 1), ("not_an_object", 3), ("missing_text", 4), ("not_an_object", 5)]
    assert rejected(records)[0].raw == b'"a string"' and "str" in rejected(records)[0].detail
    assert rejected(records)[1].raw.replace(b" ", b"").replace(b"\n", b"") == b"[1,2]"


def test_json_array_and_jsonl_both_read_under_auto(tmp_path):
    (tmp_path / "array.json").write_bytes(json.dumps([{"text": "from array"}], indent=1).encode())
    (tmp_path / "lines.json").write_bytes(jsonl_bytes([{"text": "line 1"}, {"text": "line 2"}]))
    (tmp_path / "lines.jsonl").write_bytes(BOM + jsonl_bytes([{"text": "line a"}]))
    found = discover_inputs(InputSpec(path=str(tmp_path), format="auto"))
    assert [f.format for f in found] == ["jsonl"] * 3               # the content tells which layout
    records = [r for f in found for r in read_file(f)]
    assert [(d.text, d.source_format, d.source_offset) for d in records] == [
        ("from array", "json", 0), ("line 1", "jsonl", 1), ("line 2", "jsonl", 2), ("line a", "jsonl", 1)]


def test_jsonl_whose_rows_are_arrays_stays_line_by_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'["an", "array"]\n\n{"text": "x"}\n[1]\n')
    records = read_all(path)
    assert [(type(r).__name__, r.source_offset, r.source_format) for r in records] == [
        ("Rejected", 1, "jsonl"), ("RawDoc", 3, "jsonl"), ("Rejected", 4, "jsonl")]
    assert reasons(records) == ["not_an_object", "not_an_object"]


@pytest.mark.parametrize("content, reason, n_docs", [
    (b'[{"text": "a"}, {"text": "b"}, {"text": "unterminated', "malformed_json", 2),
    (b'[{"text": "a"} {"text": "b"}]', "malformed_json", 1),                  # a comma is missing
    (b'[{"text": "a"}, {"text": "b"}] {"text": "c"}', "malformed_json", 2),  # data after the array
    (b'[{"text": "a"}, {"text": "b"}, {"text": "caf\xe9"}]', "invalid_utf8", 2),
])
def test_bad_json_array_keeps_the_elements_before_the_damage(tmp_path, content, reason, n_docs):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    records = read_all(path)
    assert [d.text for d in docs(records)] == ["a", "b"][:n_docs]
    (rej,) = rejected(records)
    assert (rej.reason, rej.source_offset, rej.source_format) == (reason, n_docs, "json")
    assert f"{n_docs} elements before" in rej.detail


def test_truncated_gzip_json_array_keeps_the_elements_before_the_cut(tmp_path):
    rows = numbered_rows(1000)
    data = gzip.compress(json.dumps(rows, indent=1).encode())
    path = tmp_path / "cut.json.gz"
    path.write_bytes(data[: len(data) // 2])
    *good, last = read_all(path)
    assert 100 < len(good) < 1000
    assert [d.text for d in good] == [r["text"] for r in rows[:len(good)]]
    assert (last.reason, last.source_offset) == ("corrupt_compression", len(good))


def test_empty_json_array_is_an_empty_file(tmp_path):
    path = tmp_path / "empty.json"
    path.write_bytes(b"[\n]\n")
    (rej,) = read_all(path)
    assert rej.reason == "empty_file"


# ---------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------

def test_parquet_rows_across_batches(tmp_path):
    n = 2500                                                      # more than one record batch
    texts = [f"row {i}" for i in range(n)]
    texts[1500] = None
    table = pa.table({
        "text": texts,
        "url": [f"http://e.com/{i}" for i in range(n)],
        "id": list(range(n)),
        "lang": ["en"] * n,
        "unused": [b"x"] * n,
    })
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path, row_group_size=700)
    records = read_all(path, fields=FieldMapping(metadata=["lang", "absent"]))

    assert len(records) == n
    assert [r.source_offset for r in records] == list(range(n))   # 0-based row index
    (rej,) = rejected(records)
    assert (rej.reason, rej.source_offset) == ("missing_text", 1500)
    doc = records[2499]
    assert (doc.text, doc.url, doc.source_id, doc.metadata, doc.source_format) == (
        "row 2499", "http://e.com/2499", "2499", {"lang": "en"}, "parquet")


def test_parquet_non_string_text_column(tmp_path):
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), path)
    records = read_all(path)
    assert reasons(records) == ["missing_text"] * 3
    assert "int" in records[0].detail


def test_parquet_without_text_column(tmp_path):
    path = tmp_path / "notext.parquet"
    pq.write_table(pa.table({"body": ["a", "b"], "url": ["u", "v"]}), path)
    (rej,) = read_all(path)
    assert (rej.reason, rej.source_offset) == ("missing_text", None)
    assert "body" in rej.detail and "url" in rej.detail           # the columns that are there


def test_corrupt_parquet(tmp_path):
    random_bytes = tmp_path / "random.parquet"
    random_bytes.write_bytes(random.Random(0).randbytes(4096))
    truncated = tmp_path / "truncated.parquet"
    pq.write_table(pa.table({"text": ["a"] * 100}), truncated)
    truncated.write_bytes(truncated.read_bytes()[:-50])
    for path in (random_bytes, truncated):
        (rej,) = read_all(path)
        assert (rej.reason, rej.source_offset, rej.source_format) == ("corrupt_file", None, "parquet")


# ---------------------------------------------------------------------------------------------
# WARC and WET
# ---------------------------------------------------------------------------------------------

HTML_PAGE = (b"<!doctype html><html><head><title>T</title><style>p {color: red}</style></head>"
             b"<body><script>var x = 1;</script><h1>Heading</h1><p>First   paragraph\n continues.</p>"
             b"<ul><li>one</li><li>two</li></ul><noscript>enable js</noscript></body></html>")


def http_response(writer, url, body: bytes, content_type: str):
    headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
    return writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers)


def write_archive(path, make_records, gzip_members=True) -> list[str]:
    """Write records with warcio's WARCWriter; returns their WARC-Record-IDs in order."""
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=gzip_members)
        ids = []
        for record in make_records(writer):
            writer.write_record(record)
            ids.append(record.rec_headers.get_header("WARC-Record-ID"))
    return ids


def warc_records(writer):
    yield writer.create_warcinfo_record("crawl.warc.gz", {"software": "test"})
    yield writer.create_warc_record("http://e.com/", "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n"),
                                    warc_content_type="application/http; msgtype=request")
    yield http_response(writer, "http://e.com/page", HTML_PAGE, "text/html; charset=utf-8")
    yield http_response(writer, "http://e.com/latin", "<p>café crème</p>".encode("latin-1"),
                        "text/html; charset=ISO-8859-1")
    yield http_response(writer, "http://e.com/plain.txt", b"just  text", "text/plain")
    yield http_response(writer, "http://e.com/logo.png", b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png")
    yield http_response(writer, "http://e.com/empty", b"<html><script>only()</script></html>", "text/html")
    yield writer.create_warc_record("http://e.com/page", "metadata", payload=io.BytesIO(b"fetchTimeMs: 12"),
                                    warc_content_type="application/warc-fields")


@pytest.mark.parametrize("gzip_members, name", [(True, "crawl.warc.gz"), (False, "crawl.warc")])
def test_warc_reader(tmp_path, gzip_members, name):
    path = tmp_path / name
    ids = write_archive(path, warc_records, gzip_members)
    records = read_all(path, html_text="all_text")

    assert len(records) == 8                                     # one result per planted record
    # Records that never hold a page are skipped, not quarantined; a response without text is bad data.
    assert skipped_types(records) == ["warcinfo", "request", "metadata"]
    assert reasons(records) == ["unsupported_content_type", "missing_text"]
    page, latin, plain = docs(records)
    assert page.text == "Heading\n\nFirst paragraph continues.\n\none\ntwo"
    assert (page.url, page.source_format, page.source_id) == ("http://e.com/page", "warc", ids[2])
    assert page.metadata["warc_record_id"] == ids[2]
    assert page.metadata["content_type"] == "text/html; charset=utf-8"
    assert page.metadata["warc_date"]
    assert latin.text == "café crème"                             # decoded with the declared charset
    assert plain.text == "just  text"                             # text/plain is not HTML-processed
    assert rejected(records)[0].raw.startswith(b"\x89PNG")

    # Offsets are where each record starts: warcio started there reads the same record.
    offsets = [r.source_offset for r in records]
    assert offsets[0] == 0 and offsets == sorted(set(offsets))
    with open(path, "rb") as fh:
        for offset, record_id in zip(offsets, ids):
            fh.seek(offset)
            record = next(iter(ArchiveIterator(fh)))
            assert record.rec_headers.get_header("WARC-Record-ID") == record_id


BLOG_PAGE = ("<html><head><title>Gardens</title></head><body><nav><a href=/>Home</a> | <a href=/about>About</a> | "
             "<a href=/contact>Contact</a></nav><header><h1>A Garden Blog</h1></header><div class=sidebar><ul>"
             "<li><a href=/archive>Archive</a></li><li><a href=/tags>Tags</a></li></ul></div><article>"
             "<h2>On gardens</h2><p>The garden was planted in spring, with roses along the wall and a row of beans."
             "</p><p>By summer the beans had climbed the fence, and the roses were in full bloom.</p></article>"
             "<footer>Copyright 2024 A Garden Blog. <a href=/privacy>Privacy Policy</a></footer></body></html>")


def test_warc_pages_keep_their_main_content_by_default(tmp_path):
    path = tmp_path / "blog.warc.gz"
    write_archive(path, lambda w: [http_response(w, "http://e.com/garden", BLOG_PAGE.encode(), "text/html")])
    (main,) = docs(read_all(path))
    (everything,) = docs(read_all(path, html_text="all_text"))
    paragraphs = ["The garden was planted in spring, with roses along the wall and a row of beans.",
                  "By summer the beans had climbed the fence, and the roses were in full bloom."]
    assert "\n\n".join(paragraphs) in main.text                 # paragraphs kept, apart
    for boilerplate in ("Contact", "Archive", "Tags", "Privacy Policy", "Copyright"):
        assert boilerplate not in main.text and boilerplate in everything.text
    assert "\n\n".join(paragraphs) in everything.text


def many_pages(writer):
    for i in range(40):
        body = f"<p>page {i} ".encode() + random.Random(i).randbytes(2000).hex().encode() + b"</p>"
        yield http_response(writer, f"http://e.com/{i}", body, "text/html")


@pytest.mark.parametrize("gzip_members, name, reason", [
    (True, "cut.warc.gz", "corrupt_compression"),
    (False, "cut.warc", "corrupt_file"),
])
def test_truncated_warc_yields_what_was_read_then_one_rejection(tmp_path, gzip_members, name, reason):
    path = tmp_path / name
    write_archive(path, many_pages, gzip_members)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 1234])              # cut inside a record
    records = read_all(path)

    *good, last = records
    assert 10 < len(good) < 40
    assert [d.url for d in good] == [f"http://e.com/{i}" for i in range(len(good))]
    assert last.reason == reason and last.source_offset is not None


def test_warc_gz_missing_only_its_trailer_is_still_reported(tmp_path):
    # Every record decompresses; only the last member's CRC/size is gone. warcio says nothing.
    path = tmp_path / "cut.warc.gz"
    write_archive(path, many_pages)
    path.write_bytes(path.read_bytes()[:-4])
    records = read_all(path)
    assert len(docs(records)) == 40 and reasons(records) == ["corrupt_compression"]
    assert "trailer" in records[-1].detail


def test_not_a_warc(tmp_path):
    path = tmp_path / "fake.warc"
    path.write_bytes(b"this is not a warc file\n" * 10)
    (rej,) = read_all(path)
    assert rej.reason == "corrupt_file"


def wet_records(writer):
    yield writer.create_warcinfo_record("crawl.warc.wet.gz", {"software": "test"})
    for url, payload in [("http://e.com/a", "Première page.\nLine two.".encode()),
                         ("http://e.com/b", b"bad \xff byte"),
                         ("http://e.com/c", b"  \n"),
                         ("http://e.com/d", b"Second good page.")]:
        yield writer.create_warc_record(url, "conversion", payload=io.BytesIO(payload), warc_content_type="text/plain")
    yield writer.create_warc_record("http://e.com/d", "metadata", payload=io.BytesIO(b"x: 1"),
                                    warc_content_type="application/warc-fields")


def test_wet_reader(tmp_path):
    path = tmp_path / "crawl.warc.wet.gz"
    ids = write_archive(path, wet_records)
    records = read_all(path)

    assert len(records) == 6
    assert [type(r).__name__ for r in records] == ["Skipped", "RawDoc", "Rejected", "Rejected", "RawDoc", "Skipped"]
    assert reasons(records) == ["invalid_utf8", "missing_text"]
    assert skipped_types(records) == ["warcinfo", "metadata"]
    assert (records[0].source_offset, records[0].source_format) == (0, "wet")
    a, d = docs(records)
    assert (a.text, a.url, a.source_format, a.source_id) == ("Première page.\nLine two.", "http://e.com/a", "wet", ids[1])
    assert d.metadata["content_type"] == "text/plain"
    assert records[2].raw == b"bad \xff byte"
    assert all(r.source_offset is not None for r in records)


def test_wet_conversion_starting_with_a_bom(tmp_path):
    path = tmp_path / "bom.warc.wet.gz"
    write_archive(path, lambda w: [w.create_warc_record("http://e.com/", "conversion", warc_content_type="text/plain",
                                                        payload=io.BytesIO(BOM + "Été.".encode()))])
    (doc,) = read_all(path)
    assert doc.text == "Été."


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets
# ---------------------------------------------------------------------------------------------

def test_hf_disk_dataset(tmp_path):
    import datasets

    folder = tmp_path / "ds"
    datasets.Dataset.from_dict({"text": ["a", None, "c"], "url": ["u0", "u1", "u2"], "id": [10, 11, 12],
                                "src": ["x", "y", "z"]}).save_to_disk(str(folder))
    records = read_all(folder, fields=FieldMapping(metadata=["src"]))

    assert len(records) == 3 and reasons(records) == ["missing_text"]
    assert [r.source_offset for r in records] == [0, 1, 2]
    c = records[2]
    assert (c.text, c.url, c.source_id, c.metadata, c.source_format) == ("c", "u2", "12", {"src": "z"}, "hf_disk")


def test_hf_disk_dataset_dict_reads_every_split(tmp_path):
    import datasets

    folder = tmp_path / "dd"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["t0", "t1"]}),
        "test": datasets.Dataset.from_dict({"text": ["e0"]}),
    }).save_to_disk(str(folder))
    records = read_all(folder)
    assert [(d.text, d.source_offset, d.metadata) for d in records] == [
        ("t0", 0, {"split": "train"}), ("t1", 1, {"split": "train"}), ("e0", 0, {"split": "test"})]


def test_hf_disk_without_text_column_and_broken_folder(tmp_path):
    import datasets

    folder = tmp_path / "notext"
    datasets.Dataset.from_dict({"body": ["a"]}).save_to_disk(str(folder))
    (rej,) = read_all(folder)
    assert (rej.reason, rej.source_offset) == ("missing_text", None) and "body" in rej.detail

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "state.json").write_text("{not json")
    (rej,) = read_all(broken)
    assert (rej.reason, rej.source_format) == ("corrupt_file", "hf_disk")


def test_hf_files_csv_and_json(tmp_path):
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("text,url,id\nhello,http://a,1\nworld,http://b,2\n")
    records = read_all(csv_path, format="hf_files", hf_builder="csv")
    assert [(d.text, d.url, d.source_id, d.source_offset, d.source_format) for d in records] == [
        ("hello", "http://a", "1", 0, "hf_files"), ("world", "http://b", "2", 1, "hf_files")]

    json_path = tmp_path / "rows.jsonl"
    json_path.write_bytes(jsonl_bytes([{"content": "x"}, {"content": "y"}]))
    records = read_all(json_path, format="hf_files", hf_builder="json", fields=FieldMapping(text="content"))
    assert [d.text for d in records] == ["x", "y"]


@pytest.mark.parametrize("name, content, builder", [
    ("rows.csv", b"text,url\nhello,u1\nworld,u2\n", None),
    ("rows.tsv", b"text\turl\nhello\tu1\nworld\tu2\n", None),            # tabs, from the name
    ("rows.tsv.gz", b"text\turl\nhello\tu1\nworld\tu2\n", None),
    ("rows.txt", b"hello\nworld\n", None),                                  # one row per line
    ("rows.txt.gz", b"hello\nworld\n", "text"),
    ("rows.jsonl", b'{"text": "hello"}\n{"text": "world"}\n', None),
])
def test_hf_files_drop_a_bom(tmp_path, name, content, builder):
    path = tmp_path / name
    data = BOM + content
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    records = read_all(path, format="hf_files", hf_builder=builder)
    assert [(d.text, d.source_offset) for d in records] == [("hello", 0), ("world", 1)]


def test_hf_files_unloadable(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b"{{{ not json")
    (rej,) = read_all(path, format="hf_files", hf_builder="json")
    assert rej.reason == "corrupt_file"


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, fmt", [
    ("a.jsonl", "jsonl"), ("a.json", "jsonl"), ("a.ndjson", "jsonl"), ("a.JSONL.GZ", "jsonl"),
    ("a.jsonl.zst", "jsonl"), ("a.json.gz", "jsonl"), ("a.parquet", "parquet"), ("a.warc", "warc"),
    ("a.warc.gz", "warc"), ("a.wet", "wet"), ("a.wet.gz", "wet"), ("a.warc.wet.gz", "wet"),
    ("a.txt", "unknown"), ("a.gz", "unknown"), ("a.csv", "unknown"), ("a.jsonl.bz2", "unknown"),
])
def test_format_from_name(name, fmt):
    assert format_from_name(name) == fmt


def build_mixed_folder(root):
    import datasets

    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.jsonl").write_bytes(jsonl_bytes([{"text": "a"}]))
    (root / "b.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes([{"text": "b"}])))
    pq.write_table(pa.table({"text": ["c"]}), root / "c.parquet")
    (root / "notes.txt").write_text("?")
    (root / ".hidden.jsonl").write_bytes(b"")
    (root / "_SUCCESS").write_bytes(b"")
    (root / "sub" / "d.ndjson.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl_bytes([{"text": "d"}])))
    write_archive(root / "sub" / "deeper" / "e.warc.wet.gz", wet_records)
    datasets.Dataset.from_dict({"text": ["f"]}).save_to_disk(str(root / "sub" / "ds"))


def test_discover_folder_mixing_formats(tmp_path):
    build_mixed_folder(tmp_path)
    spec = InputSpec(path=str(tmp_path), fields=FieldMapping(metadata=["m"]), hf_builder=None, hf_split="train")
    found = discover_inputs(spec)

    assert [(os.path.relpath(f.path, tmp_path), f.format) for f in found] == [
        ("a.jsonl", "jsonl"), ("b.jsonl.gz", "jsonl"), ("c.parquet", "parquet"), ("notes.txt", "unknown"),
        ("sub/d.ndjson.zst", "jsonl"), ("sub/deeper/e.warc.wet.gz", "wet"), ("sub/ds", "hf_disk")]
    for f in found:
        assert os.path.isabs(f.path) and f.size > 0 and f.mtime_ns > 0
        assert f.options == {"fields": spec.fields.model_dump(), "hf_builder": None, "hf_split": "train"}

    records = [r for f in found for r in read_file(f)]
    assert [d.text for d in docs(records)] == ["a", "b", "c", "d", "Première page.\nLine two.", "Second good page.", "f"]
    assert reasons(records) == ["unknown_format", "invalid_utf8", "missing_text"]
    assert skipped_types(records) == ["warcinfo", "metadata"]


def test_discover_glob_and_single_file(tmp_path):
    build_mixed_folder(tmp_path)
    found = discover_inputs(InputSpec(path=str(tmp_path / "**" / "*.*json*")))
    assert [os.path.basename(f.path) for f in found] == ["a.jsonl", "b.jsonl.gz", "d.ndjson.zst"]

    (one,) = discover_inputs(InputSpec(path=str(tmp_path / "a.jsonl")))
    assert one.path == str(tmp_path / "a.jsonl") and one.format == "jsonl"


def test_discover_hf_disk_folder_is_one_input(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["x"]})}).save_to_disk(str(tmp_path / "dd"))
    (f,) = discover_inputs(InputSpec(path=str(tmp_path)))
    assert (f.path, f.format) == (str(tmp_path / "dd"), "hf_disk")
    (f,) = discover_inputs(InputSpec(path=str(tmp_path / "dd"), format="hf_disk"))
    assert f.format == "hf_disk"


def test_discover_explicit_format_applies_to_every_file(tmp_path):
    (tmp_path / "x.data").write_bytes(jsonl_bytes([{"text": "x"}]))
    (tmp_path / "y.txt").write_bytes(jsonl_bytes([{"text": "y"}]))
    found = discover_inputs(InputSpec(path=str(tmp_path), format="jsonl"))
    assert [f.format for f in found] == ["jsonl", "jsonl"]
    assert [d.text for f in found for d in read_file(f)] == ["x", "y"]


def test_discover_missing_path(tmp_path):
    with pytest.raises(UserError, match="input not found: .*nope"):
        discover_inputs(InputSpec(path=str(tmp_path / "nope")))
    with pytest.raises(UserError, match="input not found"):
        discover_inputs(InputSpec(path=str(tmp_path / "*.parquet")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="input not found"):
        discover_inputs(InputSpec(path=str(tmp_path / "empty")))


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

def test_html_to_text():
    html = ("<html><head><title>gone</title></head><body><div>A  <b>bold</b>\n word</div>"
            "<template><p>hidden</p></template><table><tr><td>c1</td><td>c2</td></tr></table>"
            "<p>x<br>y</p><p></p><p></p><p>&amp; &lt;tag&gt;&nbsp;end</p></body></html>")
    assert html_to_text(html) == "A bold word\n\nc1 c2\n\nx\ny\n\n& <tag> end"
    # `</head>` may be omitted: the body must not be dropped with it
    assert html_to_text("<html><head><title>t</title><body><p>kept</p>") == "kept"
    assert html_to_text("<p>unclosed <div>tags") == "unclosed\n\ntags"


def test_decode_payload_charsets():
    assert decode_payload("naïve".encode("utf-8"), "text/html; charset=UTF-8") == "naïve"
    assert decode_payload("naïve".encode("latin-1"), 'text/html; charset="iso-8859-1"') == "naïve"
    assert decode_payload("naïve".encode("utf-8"), None) == "naïve"
    assert decode_payload("naïve — ok".encode("cp1252"), "text/html") == "naïve — ok"   # not UTF-8: cp1252
    assert decode_payload(b"a\x81b", "text/html; charset=made-up") == "a\ufffdb"         # neither: replaced
    assert decode_payload(b"\xef\xbb\xbfna\xc3\xafve", "text/html; charset=UTF-8") == "naïve"   # BOM dropped
    assert decode_payload(b"\xef\xbb\xbfna\xc3\xafve", "text/html; charset=iso-8859-1") == "naïve"  # BOM outranks it
