import json
import random
import unicodedata

import pytest

from pipeline import hashing
from pipeline.ingest.documents import (IngestSettings, LanguageIdentifier, normalize_text, prepare_document,
                                       url_host_and_domain)
from pipeline.io import RawDoc, Rejected


def test_normalize_text_nfc_controls_and_line_endings():
    decomposed = "Cafe\u0301 au lait"  # e + combining acute
    assert normalize_text(decomposed) == "Café au lait" == unicodedata.normalize("NFC", decomposed)
    assert normalize_text("a\r\nb\rc\x00d\x1be\x7f\x85f\tg\n") == "a\nb\ncdef\tg"
    assert normalize_text("  \n x \n ") == "x"


def test_normalize_is_idempotent_and_removes_every_cc_but_tab_newline():
    rng = random.Random(0)
    for _ in range(200):
        s = "".join(chr(rng.choice([rng.randrange(0, 0x250), rng.randrange(0x300, 0x370)])) for _ in range(40))
        n = normalize_text(s)
        assert normalize_text(n) == n
        assert all(unicodedata.category(ch) != "Cc" or ch in "\t\n" for ch in n)


def test_doc_id_is_stable_hash_of_normalised_text():
    assert hashing.doc_id("hello") == hashing.doc_id("hello")
    assert hashing.doc_id("hello") != hashing.doc_id("hello!")
    assert len(hashing.doc_id("x")) == 32 and int(hashing.doc_id("x"), 16) >= 0
    assert hashing.doc_id(normalize_text("Cafe\u0301\r\n")) == hashing.doc_id(normalize_text("Café"))


@pytest.mark.parametrize("url,host,domain", [
    ("https://docs.python.org/3/index.html", "docs.python.org", "python.org"),
    ("http://news.bbc.co.uk/a", "news.bbc.co.uk", "bbc.co.uk"),
    ("http://127.0.0.1:8080/x", "127.0.0.1", "127.0.0.1"),
    (None, None, None),
    ("not a url", None, None),
    ("http://localhost:8000/x", "localhost", "localhost"),       # no public suffix: the host is the domain
    ("https://wiki.corp.internal/page", "wiki.corp.internal", "wiki.corp.internal"),
])
def test_url_host_and_registered_domain(url, host, domain):
    assert url_host_and_domain(url) == (host, domain)


def test_language_identifier_on_real_sentences():
    lid = LanguageIdentifier()
    texts = ["The committee will publish its report on the state of the economy next week.",
             "Le gouvernement a annoncé hier une nouvelle réforme des retraites.",
             "Die Bundesregierung hat gestern ein neues Gesetz zur Energiepolitik beschlossen.",
             "El presidente del gobierno anunció ayer nuevas medidas económicas.\nSegunda línea."]
    result = lid.predict(texts)
    assert [lang for lang, _ in result] == ["en", "fr", "de", "es"]
    assert all(0.5 < p <= 1.0 for _, p in result)


def test_prepare_document_rows_and_reasons():
    raw = RawDoc(text="  Hello\r\nworld  ", source_file="/f.jsonl", source_offset=3, source_format="jsonl",
                 url="https://a.example.co.uk/x", source_id="7", metadata={"k": 1})
    row = prepare_document(raw, IngestSettings())
    assert row["text"] == "Hello\nworld" and row["n_bytes"] == 11 and row["n_chars"] == 11
    assert row["domain"] == "example.co.uk" and row["metadata"] == '{"k": 1}' and row["doc_id"] == hashing.doc_id("Hello\nworld")
    cases = [(RawDoc("\x00 \n", "/f", 1, "jsonl"), IngestSettings(), "empty_text"),
             (RawDoc("short", "/f", 1, "jsonl"), IngestSettings(min_chars=10), "too_short"),
             (RawDoc("x" * 20, "/f", 1, "jsonl"), IngestSettings(max_chars=10), "too_long"),
             (RawDoc("bad \ud800 surrogate", "/f", 1, "jsonl"), IngestSettings(), "invalid_utf8")]
    for raw, settings, reason in cases:
        out = prepare_document(raw, settings)
        assert isinstance(out, Rejected) and out.reason == reason and out.source_offset == 1


def test_settings_key_changes_with_settings():
    assert IngestSettings().key == IngestSettings().key
    assert IngestSettings(min_chars=5).key != IngestSettings().key


# -- one input file through ingest_file (the body of a Spark task), on real files -------------------

def _crawl(path, n_pages: int) -> None:
    """A WARC as crawlers write it: warcinfo, then request, response and metadata per page; plus an
    image response and an HTML response without text, which are bad rows."""
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    def response(writer, url, body: bytes, content_type: str):
        headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
        return writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers)

    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "test"}))
        for i in range(n_pages):
            url = f"http://e.com/{i}"
            writer.write_record(writer.create_warc_record(url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n"),
                                                          warc_content_type="application/http; msgtype=request"))
            writer.write_record(response(writer, url, f"<p>Page number {i} of the crawl.</p>".encode(), "text/html"))
            writer.write_record(writer.create_warc_record(url, "metadata", payload=io.BytesIO(b"fetchTimeMs: 12"),
                                                          warc_content_type="application/warc-fields"))
        writer.write_record(response(writer, "http://e.com/logo.png", b"\x89PNG" + bytes(50), "image/png"))
        writer.write_record(response(writer, "http://e.com/empty", b"<script>x()</script>", "text/html"))


def test_ingest_file_counts_warc_requests_as_skipped_not_quarantined(tmp_path):
    import pyarrow.parquet as pq

    from pipeline.config import InputSpec
    from pipeline.ingest.stage import ingest_file
    from pipeline.io.readers import discover_inputs

    path = tmp_path / "crawl.warc.gz"
    _crawl(path, n_pages=10)
    (f,) = discover_inputs(InputSpec(path=str(path)))
    store = tmp_path / "store"
    marker = ingest_file(f, IngestSettings(language=False), str(store))

    quarantine = pq.read_table(store / "quarantine")
    (staged_file,) = (store / "_staging" / "ingest").glob("*.parquet")
    staged = pq.read_table(staged_file)
    assert staged.num_rows == marker["staged_rows"] == 10
    assert sorted(quarantine["reason"].to_pylist()) == ["missing_text", "unsupported_content_type"]
    assert marker["quarantined"] == 2 and marker["reasons"] == {"missing_text": 1, "unsupported_content_type": 1}
    assert marker["skipped_records"] == 1 + 10 + 10                    # warcinfo, requests, metadata
    assert marker["input_rows"] == 33 == marker["staged_rows"] + marker["quarantined"] + marker["skipped_records"]
    (marker_file,) = (store / "_staging" / "ingest").glob("*.json")
    assert json.loads(marker_file.read_text())["skipped_records"] == 21


def _ingest_result(**counts):
    from pipeline.stage import StageResult
    base = {"input_files": 1, "files_processed": 1, "files_skipped": 0, "input_rows": 118, "docs": 60,
            "duplicates": 2, "quarantined": 5, "skipped_records": 51, "doc_bytes": 9000, "shards": 2,
            "dedup_skipped": 0}
    return StageResult("ingest", "/store", "run-1", {**base, **counts},
                       {"total_s": 1.0, "read_s": 0.6, "dedup_shard_s": 0.4}, {"reasons": {"missing_text": 5}})


def test_ingest_report_reconciles_skipped_records_apart_from_quarantine():
    from pipeline.ingest.stage import report, summary_row

    shown = report(_ingest_result())
    rows = dict(shown.rows)
    assert rows["quarantined rows"] == 5 and rows["skipped records (WARC request, metadata, ...)"] == 51
    assert shown.notes[0] == ("input rows 118 = documents 60 + duplicates 2 + quarantined 5 + skipped records 51: "
                              "reconciled")
    assert report(_ingest_result(skipped_records=50)).notes[0].endswith("MISMATCH")
    assert summary_row(_ingest_result())["output"] == ("118 input rows, 2 duplicates, 5 quarantined, "
                                                       "51 skipped records")
