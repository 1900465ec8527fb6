"""Reading WARC and WET files (FastWARC) into `RawDoc` / `Rejected` records: HTML and text responses
(the text extracted from the HTML: the main content with Resiliparse by default, or every visible
word with the standard library, `html_text: all_text`), WET conversion records, and truncation, which
the WARC readers themselves do not report. The records that never hold a page (requests, metadata,
warcinfo, ...) are `Skipped`: counted, but neither documents nor quarantine rows.
"""
from __future__ import annotations

import re
import zlib
from collections.abc import Iterator

import schemas
from pipeline.io import InputFile, RawDoc, Record, Rejected, Skipped, is_gzip
from pipeline.io.html import decode_payload, html_to_text

HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = HTML_TYPES + ("text/plain",)
_CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*(\d+)", re.IGNORECASE | re.MULTILINE)


def read_warc(f: InputFile, start: int = 0, end: int | None = None) -> Iterator[Record]:
    """HTML and plain-text `response` records; the text is extracted from the HTML. `start`, `end`:
    only the records that begin in [start, end) (a chunk; `start` is where a record begins)."""
    extract = main_content_text if f.options.get("html_text", "main_content") == "main_content" else html_to_text
    yield from _read_archive(f, lambda record, payload, offset: _warc_record(record, payload, offset, f, extract),
                             start, end)


def read_wet(f: InputFile, start: int = 0, end: int | None = None) -> Iterator[Record]:
    """`conversion` records of a WET file, whose payload already is the page's text; `start`, `end` as
    for `read_warc`."""
    yield from _read_archive(f, lambda record, payload, offset: _wet_record(record, payload, offset, f), start, end)


def record_offsets(path: str) -> list[int]:
    """Where every record of a WARC/WET file begins (a gzip member's offset, in a .warc.gz), as far as
    the file can be read: one pass, decompressing but parsing no payload."""
    from fastwarc.warc import ArchiveIterator
    offsets = []
    with open(path, "rb") as fh:
        try:
            for record in ArchiveIterator(fh, parse_http=False):
                offsets.append(record.stream_pos)
        except Exception:
            pass  # damaged: the chunk that reaches the damage reports it
    return offsets


def main_content_text(html: str) -> str:
    """The main content of a page as plain text, paragraphs kept (Resiliparse, as DCLM extracts it):
    navigation, headers, footers and sidebars are left out."""
    from resiliparse.extract.html2text import extract_plain_text
    return extract_plain_text(html, main_content=True, preserve_formatting=True, alt_texts=False)


def _read_archive(f: InputFile, to_record, start: int = 0, end: int | None = None) -> Iterator[Record]:
    """Walk a WARC/WET file with FastWARC and report truncation, which it does not.

    A record is handed on only once the next one was read, or, for the last, once the file is
    known to hold all of it: a file cut inside its last record gives the records before the cut and
    one rejection, never a page cut in half. A gzip file whose last member lacks only its CRC/size
    trailer keeps its last record and is reported too."""
    from fastwarc.warc import ArchiveIterator

    compressed = is_gzip(f.path)
    broken = "corrupt_compression" if compressed else "corrupt_file"
    held = None  # (record, payload, offset) read but not yet handed on
    with open(f.path, "rb") as fh:
        fh.seek(start)
        try:
            for record in ArchiveIterator(fh, parse_http=True, auto_decode="all"):
                if end is not None and record.stream_pos >= end:  # the next chunk's first record
                    if held is not None:
                        yield to_record(*held)
                    return
                payload = record.reader.read()
                if held is not None:
                    yield to_record(*held)
                held = (record, payload, record.stream_pos)
        except Exception as e:  # FastWARC raises OSError on a header it cannot parse
            if held is not None:
                yield to_record(*held)
            at = held[2] if held else 0
            yield Rejected(f.path, broken, f"unreadable after the record at byte {at}: {type(e).__name__}: {e}",
                           at, f.format)
            return
    if held is None:
        return
    record, payload, offset = held
    # The file ended: the last chunk's last record is checked for being whole (any chunk's, if cut short).
    state = _last_record_state(f.path, offset, compressed)
    if state == "cut":
        yield Rejected(f.path, broken, f"record at byte {offset} is cut short: file truncated?", offset, f.format,
                       payload[:schemas.MAX_RAW_BYTES])
        return
    yield to_record(record, payload, offset)
    if state == "no_trailer":
        yield Rejected(f.path, broken, f"the gzip member at byte {offset} has no end-of-stream trailer: file "
                       "truncated?", offset, f.format)


def _last_record_state(path: str, offset: int, compressed: bool) -> str:
    """"complete", "cut" (the file ends inside the record) or "no_trailer" (a gzip member whose data is
    all there but whose CRC/size trailer is missing) for the record starting at byte `offset`."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        if compressed:
            decompressor, parts = zlib.decompressobj(zlib.MAX_WBITS | 16), []  # | 16: a gzip header
            try:
                while not decompressor.eof and (chunk := fh.read(1 << 16)):
                    parts.append(decompressor.decompress(chunk))
            except zlib.error:
                return "cut"
            data, ended = b"".join(parts), decompressor.eof
        else:
            data, ended = fh.read(), True
    header_end = data.find(b"\r\n\r\n")
    length = _CONTENT_LENGTH.search(data, 0, header_end) if header_end >= 0 else None
    if length is None or len(data) < header_end + 4 + int(length.group(1)):
        return "cut"
    return "complete" if ended else "no_trailer"


def _record_meta(record, content_type: str | None) -> dict:
    return {"warc_record_id": record.headers.get("WARC-Record-ID"), "warc_date": record.headers.get("WARC-Date"),
            "content_type": content_type}


def _type(record) -> str:
    return str(record.record_type)  # WarcRecordType.response -> "response"


def _warc_record(record, payload: bytes, offset: int, f: InputFile, extract) -> Record:
    """One WARC record to a RawDoc (an HTML/text response), a Skipped (not a response) or a Rejected."""
    if _type(record) != "response":  # request, metadata, warcinfo, revisit: no page by design
        return Skipped(f.path, _type(record), offset, f.format)
    raw = payload[:schemas.MAX_RAW_BYTES]
    headers = record.http_headers if record.is_http else record.headers  # dns: responses have no HTTP headers
    content_type = headers.get("Content-Type")
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime not in TEXT_TYPES:
        return Rejected(f.path, "unsupported_content_type", f"content type {content_type!r} is not HTML or text",
                        offset, f.format, raw)
    text = decode_payload(payload, content_type)
    if mime in HTML_TYPES:
        text = extract(text)
    if not text.strip():
        return Rejected(f.path, "missing_text", "response has no extractable text", offset, f.format, raw)
    return RawDoc(text=text, source_file=f.path, source_offset=offset, source_format=f.format,
                  url=record.headers.get("WARC-Target-URI"), source_id=record.headers.get("WARC-Record-ID"),
                  metadata=_record_meta(record, content_type))


def _wet_record(record, payload: bytes, offset: int, f: InputFile) -> Record:
    """One WET record to a RawDoc (a conversion), a Skipped (not a conversion) or a Rejected."""
    if _type(record) != "conversion":  # warcinfo, metadata: no page by design
        return Skipped(f.path, _type(record), offset, f.format)
    raw = payload[:schemas.MAX_RAW_BYTES]
    try:
        text = payload.decode("utf-8-sig")  # -sig: a byte-order mark is not text
    except UnicodeDecodeError as e:
        return Rejected(f.path, "invalid_utf8", f"conversion payload is not valid UTF-8: {e}", offset, f.format, raw)
    if not text.strip():
        return Rejected(f.path, "missing_text", "conversion record has no text", offset, f.format, raw)
    return RawDoc(text=text, source_file=f.path, source_offset=offset, source_format=f.format,
                  url=record.headers.get("WARC-Target-URI"), source_id=record.headers.get("WARC-Record-ID"),
                  metadata=_record_meta(record, record.headers.get("Content-Type")))
