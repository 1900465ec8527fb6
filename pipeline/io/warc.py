"""Reading WARC and WET files (warcio) into `RawDoc` / `Rejected` records: HTML and text responses
(the text extracted from the HTML), WET conversion records, and truncation, which warcio itself
does not report. The records that never hold a page (requests, metadata, warcinfo, ...) are
`Skipped`: counted, but neither documents nor quarantine rows.
"""
from __future__ import annotations

import os
import zlib
from collections.abc import Iterator

import schemas
from pipeline.io import InputFile, RawDoc, Record, Rejected, Skipped, is_gzip
from pipeline.io.html import decode_payload, html_to_text

HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = HTML_TYPES + ("text/plain",)


def read_warc(f: InputFile) -> Iterator[Record]:
    """HTML and plain-text `response` records; the text is extracted from the HTML."""
    yield from _read_archive(f, _warc_record)


def read_wet(f: InputFile) -> Iterator[Record]:
    """`conversion` records of a WET file, whose payload already is the page's text."""
    yield from _read_archive(f, _wet_record)


def _read_archive(f: InputFile, to_record) -> Iterator[Record]:
    """Walk a WARC/WET file with warcio and report truncation, which warcio itself does not.

    warcio ends iteration quietly on a truncated or damaged file, so three checks: a record whose
    block is shorter than its Content-Length, a stream that stops before the end of the file
    (bytes that could not be read as records), and a last gzip member without its trailer.
    """
    from warcio.archiveiterator import WARCIterator

    compressed = is_gzip(f.path)
    file_size = os.path.getsize(f.path)
    broken = "corrupt_compression" if compressed else "corrupt_file"
    end, last_offset = 0, None   # where the last good record ends and starts
    with open(f.path, "rb") as fh:
        records = WARCIterator(fh)  # not ArchiveIterator: it would take any text line for an ARC record
        try:
            for record in records:
                payload = record.content_stream().read()
                offset = records.get_record_offset()  # also drains the rest of the record
                missing = getattr(record.raw_stream, "limit", 0)
                if missing > 0:
                    yield Rejected(f.path, broken, f"record at byte {offset} is cut short ({missing} bytes "
                                   "missing): file truncated?", offset, f.format, payload[:schemas.MAX_RAW_BYTES])
                    return
                end, last_offset = records.offset, offset
                yield to_record(record, payload, offset, f)
        except Exception as e:  # warcio's ArchiveLoadFailed, StatusAndHeadersParserException, ...
            yield Rejected(f.path, broken, f"unreadable from byte {end} on: {type(e).__name__}: {e}", end, f.format)
            return
    if end < file_size:
        yield Rejected(f.path, broken, f"only the first {end} of {file_size} bytes could be read as "
                       "records: file truncated or damaged", end, f.format)
    elif compressed and last_offset is not None and not _gzip_member_complete(f.path, last_offset):
        yield Rejected(f.path, broken, f"the gzip member at byte {last_offset} has no end-of-stream "
                       "trailer: file truncated?", last_offset, f.format)


def _gzip_member_complete(path: str, offset: int) -> bool:
    """Whether the gzip member starting at `offset` ends properly.

    warcio does not notice a member that lacks its 8-byte CRC/size trailer (a file cut by a few
    bytes), so the last member, one record, is decompressed again to check.
    """
    decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)  # | 16: expect a gzip header
    with open(path, "rb") as fh:
        fh.seek(offset)
        try:
            while not decompressor.eof and (chunk := fh.read(1 << 16)):
                decompressor.decompress(chunk)
        except zlib.error:
            return False
    return decompressor.eof


def _record_meta(record, content_type: str | None) -> dict:
    headers = record.rec_headers
    return {"warc_record_id": headers.get_header("WARC-Record-ID"),
            "warc_date": headers.get_header("WARC-Date"),
            "content_type": content_type}


def _warc_record(record, payload: bytes, offset: int, f: InputFile) -> Record:
    """One WARC record to a RawDoc (an HTML/text response), a Skipped (not a response) or a Rejected."""
    if record.rec_type != "response":  # request, metadata, warcinfo, revisit: no page by design
        return Skipped(f.path, record.rec_type, offset, f.format)
    raw = payload[:schemas.MAX_RAW_BYTES]
    headers = record.http_headers or record.rec_headers  # non-HTTP responses (dns:) have no HTTP headers
    content_type = headers.get_header("Content-Type")
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime not in TEXT_TYPES:
        return Rejected(f.path, "unsupported_content_type", f"content type {content_type!r} is not HTML or text",
                        offset, f.format, raw)
    text = decode_payload(payload, content_type)
    if mime in HTML_TYPES:
        text = html_to_text(text)
    if not text.strip():
        return Rejected(f.path, "missing_text", "response has no extractable text", offset, f.format, raw)
    return RawDoc(text=text, source_file=f.path, source_offset=offset, source_format=f.format,
                  url=record.rec_headers.get_header("WARC-Target-URI"),
                  source_id=record.rec_headers.get_header("WARC-Record-ID"),
                  metadata=_record_meta(record, content_type))


def _wet_record(record, payload: bytes, offset: int, f: InputFile) -> Record:
    """One WET record to a RawDoc (a conversion), a Skipped (not a conversion) or a Rejected."""
    if record.rec_type != "conversion":  # warcinfo, metadata: no page by design
        return Skipped(f.path, record.rec_type, offset, f.format)
    raw = payload[:schemas.MAX_RAW_BYTES]
    try:
        text = payload.decode("utf-8-sig")  # -sig: a byte-order mark is not text
    except UnicodeDecodeError as e:
        return Rejected(f.path, "invalid_utf8", f"conversion payload is not valid UTF-8: {e}", offset, f.format, raw)
    if not text.strip():
        return Rejected(f.path, "missing_text", "conversion record has no text", offset, f.format, raw)
    return RawDoc(text=text, source_file=f.path, source_offset=offset, source_format=f.format,
                  url=record.rec_headers.get_header("WARC-Target-URI"),
                  source_id=record.rec_headers.get_header("WARC-Record-ID"),
                  metadata=_record_meta(record, record.rec_headers.get_header("Content-Type")))
