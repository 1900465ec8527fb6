"""The demo corpus written in every input format ingest reads (JSONL.gz, JSONL.zst, Parquet, WARC.gz
with warcinfo + request + response records, a `datasets` save_to_disk folder), and the planted bad
inputs it must quarantine. Builds are byte-identical for a seed: no time stamps, fixed WARC dates,
record ids derived from the seed.
"""
from __future__ import annotations

import gzip
import hashlib
import html
import io
import json
import re
import uuid
import zlib
from pathlib import Path
from urllib.parse import urlsplit

WARC_DATE = "2024-01-15T12:00:00Z"          # fixed so that builds are byte-identical

N_BROKEN_VALID = 6                          # valid records mixed into bad/broken.jsonl
N_TRUNCATED = 20                            # records in bad/truncated.jsonl.gz before it is cut


def _jsonl_bytes(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in records)


def _gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def write_jsonl_gz(path: Path, records: list[dict]) -> None:
    path.write_bytes(_gzip_bytes(_jsonl_bytes(records)))


def write_jsonl_zst(path: Path, records: list[dict]) -> None:
    import zstandard
    path.write_bytes(zstandard.ZstdCompressor(level=10).compress(_jsonl_bytes(records)))


def _columns(records: list[dict]) -> dict[str, list]:
    return {k: [r[k] for r in records] for k in ("text", "url", "id", "source")}


def write_parquet(path: Path, records: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table(_columns(records)), path, compression="zstd")


def write_hf_disk(path: Path, records: list[dict], seed: int) -> None:
    import datasets
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        ds = datasets.Dataset.from_dict(_columns(records))
        ds._fingerprint = hashlib.sha256(f"demo:{seed}:{len(records)}".encode()).hexdigest()[:16]
        ds.save_to_disk(str(path))
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _record_id(seed: int, key: str) -> str:
    return f"<urn:uuid:{uuid.UUID(bytes=hashlib.sha256(f'{seed}:{key}'.encode()).digest()[:16], version=4)}>"


def _as_html(text: str, lang: str) -> bytes:
    title = html.escape(text.strip().split("\n", 1)[0][:80])
    paragraphs = "\n".join(f"<p>{html.escape(p)}</p>" for p in re.split(r"\n\s*\n", text) if p.strip())
    return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title></head>\n'
            f"<body>\n{paragraphs}\n</body></html>\n").encode("utf-8")


def write_warc(path: Path, records: list[dict], seed: int) -> None:
    """warcinfo, then a request and a response (HTML) record per document."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        info = (f"software: curate demo corpus\r\nformat: WARC File Format 1.0\r\n"
                f"description: generated demo crawl, seed {seed}\r\n").encode()
        warcinfo_headers = StatusAndHeaders("", [
            ("WARC-Type", "warcinfo"), ("WARC-Record-ID", _record_id(seed, "warcinfo")),
            ("WARC-Filename", path.name), ("WARC-Date", WARC_DATE)], protocol="WARC/1.0")
        writer.write_record(writer.create_warc_record("", "warcinfo", payload=io.BytesIO(info), length=len(info),
                                                      warc_headers=warcinfo_headers,
                                                      warc_content_type="application/warc-fields"))
        for r in records:
            parts = urlsplit(r["url"])
            response_id = _record_id(seed, f"response:{r['id']}")
            request_id = _record_id(seed, f"request:{r['id']}")
            req_http = StatusAndHeaders(f"GET {parts.path or '/'} HTTP/1.1", [
                ("Host", parts.hostname), ("User-Agent", "curate-demo-crawler/1.0"), ("Accept", "text/html")],
                is_http_request=True)
            writer.write_record(writer.create_warc_record(r["url"], "request", http_headers=req_http,
                                                          warc_headers_dict={"WARC-Record-ID": request_id,
                                                                             "WARC-Date": WARC_DATE,
                                                                             "WARC-Concurrent-To": response_id}))
            body = _as_html(r["text"], r.get("lang", "en"))
            resp_http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                                    ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(r["url"], "response", payload=io.BytesIO(body),
                                                          length=len(body), http_headers=resp_http,
                                                          warc_headers_dict={"WARC-Record-ID": response_id,
                                                                             "WARC-Date": WARC_DATE}))


# ----------------------------------------------------------------------------------------------
# Planted bad inputs
# ----------------------------------------------------------------------------------------------

def write_bad_inputs(bad_dir: Path, spare: list[dict]) -> dict:
    """Corrupt inputs the ingest job must quarantine; `spare` gives real records to mix in."""
    bad_dir.mkdir(parents=True, exist_ok=True)
    valid, truncated = spare[:N_BROKEN_VALID], spare[N_BROKEN_VALID:N_BROKEN_VALID + N_TRUNCATED]
    line = lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8")  # noqa: E731
    v = iter(valid)
    lines = [
        line(next(v)),
        b'{"text": "an object that never ends, "url": "https://broken.example.com/1"',      # malformed
        line(next(v)),
        b"{'text': 'single quotes are not JSON', 'url': 'https://broken.example.com/2'}",  # malformed
        b'{"text": "caf\xe9 cr\xe8me \xff\xfe not UTF-8", "url": "https://broken.example.com/3", "id": "bad-utf8"}',
        line(next(v)),
        b'{"url": "https://broken.example.com/4", "id": "no-text", "source": "broken"}',     # missing text
        b'<html><body>this is not JSON at all</body></html>',                                # malformed
        line(next(v)),
        b'{"text": null, "url": "https://broken.example.com/5", "id": "null-text", "source": "broken"}',
        line(next(v)),
        line(next(v)),
    ]
    (bad_dir / "broken.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    full = _gzip_bytes(_jsonl_bytes(truncated))
    cut = full[: int(len(full) * 0.6)]
    (bad_dir / "truncated.jsonl.gz").write_bytes(cut)
    readable = zlib.decompressobj(wbits=31).decompress(cut)
    complete = readable.count(b"\n")

    (bad_dir / "empty.jsonl").write_bytes(b"")
    (bad_dir / "sitemap.xml").write_bytes(
        b'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        b"  <url><loc>https://boilerplate-portal.example.com/</loc></url>\n</urlset>\n")
    return {
        "bad/broken.jsonl": {"lines": len(lines), "valid_records": len(valid), "malformed_json": 3,
                             "invalid_utf8": 1, "missing_text": 2},
        "bad/truncated.jsonl.gz": {"records_written": len(truncated), "complete_records_before_cut": complete,
                                   "bytes_kept": len(cut), "bytes_full": len(full)},
        "bad/empty.jsonl": {"empty_file": 1},
        "bad/sitemap.xml": {"unknown_format": 1},
    }


