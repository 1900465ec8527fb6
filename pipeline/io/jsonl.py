"""Reading JSON Lines and JSON array files, plain, gzip or zstd, into `RawDoc` / `Rejected` records.

A file is JSON Lines (one object per line) unless its first non-blank character is `[`: then it is one
JSON array whose elements are the rows (what `json.dump(rows, f)` writes), except when its first line
is a whole JSON value followed by more lines (JSON Lines whose rows happen to be arrays). A UTF-8
byte-order mark is dropped. Compression is told by the magic bytes, not the name, so a mislabelled
file still reads.
"""
from __future__ import annotations

import codecs
import gzip
import io
import json
import os
import re
import zlib
from collections.abc import Iterator
from itertools import chain, islice

import zstandard

import schemas
from pipeline.config import FieldMapping
from pipeline.io import GZIP_MAGIC, InputFile, Record, Rejected, file_magic
from pipeline.io.rows import fields_of, row_to_doc

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
UTF8_BOM = codecs.BOM_UTF8
# gzip raises EOFError/BadGzipFile/zlib.error, our zstd stream EOFError/ZstdError
DECOMPRESSION_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError)
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
ARRAY_READ_BYTES = 1 << 20


class _ZstdRaw(io.RawIOBase):
    """A zstd-decompressing raw stream that raises on a truncated frame.

    `ZstdDecompressor().stream_reader` silently reports end-of-file when the input ends in the
    middle of a frame, so a cut-off .zst would look complete. Here each frame gets a decompressobj
    (whose `eof` says the frame ended properly) and running out of input inside a frame raises.
    """

    def __init__(self, fh) -> None:
        self._fh = fh
        self._frame = None      # decompressobj of the frame in progress, None between frames
        self._out = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._pos >= len(self._out):
            chunk = self._fh.read(1 << 16)
            if not chunk:
                if self._frame is not None:
                    raise EOFError("zstd data ended in the middle of a frame (file truncated?)")
                return 0
            self._out, self._pos = self._decompress(chunk), 0
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos:self._pos + n]
        self._pos += n
        return n

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:  # a file may hold several concatenated frames
            if self._frame is None:
                self._frame = zstandard.ZstdDecompressor().decompressobj()
            out.append(self._frame.decompress(data))
            data = b""
            if self._frame.eof:
                data, self._frame = self._frame.unused_data, None
        return b"".join(out)

    def close(self) -> None:
        self._fh.close()
        super().close()


def _open_lines(path: str) -> tuple[io.BufferedIOBase, str | None]:
    """A binary line stream over a plain, gzip or zstd file, and the compression's name.

    Compression is told by the magic bytes, not the name, so a mislabelled file still reads.
    """
    compression = _compression(file_magic(path))
    if compression == "gzip":
        return gzip.open(path, "rb"), "gzip"
    if compression == "zstd":
        return io.BufferedReader(_ZstdRaw(open(path, "rb")), buffer_size=1 << 16), "zstd"
    return open(path, "rb"), None



class _Lines:
    """The lines of a binary stream, counted, each without a leading UTF-8 byte-order mark.

    Every line, not only the first: `cat a.jsonl b.jsonl` of two files saved with a mark puts the
    second mark at the start of a line, and no JSON text may begin with one."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.read = 0  # lines read so far

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        for line in self.stream:
            self.read += 1
            yield self.read, line.removeprefix(UTF8_BOM)


def read_jsonl(f: InputFile) -> Iterator[Record]:
    """JSON Lines (offsets: 1-based line numbers; blank lines skipped) or a JSON array (0-based element
    indexes, source_format "json")."""
    fields = fields_of(f)
    stream, compression = _open_lines(f.path)
    suffix = os.path.splitext(f.path)[1].lower()
    if compression is None and suffix in (".gz", ".zst"):
        yield Rejected(f.path, "corrupt_compression",
                       f"named {suffix} but does not start with {suffix[1:]} magic bytes", None, f.format)
        stream.close()
        return
    lines = _Lines(stream)
    numbered = iter(lines)
    with stream:
        try:
            head = _head(numbered)
            if _is_json_array([line for _, line in head if line.strip()]):
                yield from _read_json_array(b"".join(line for _, line in head), stream, compression, fields, f)
                return
            for line_no, line in chain(head, numbered):
                if line.strip():
                    yield _parse_json_line(line, line_no, fields, f)
        except DECOMPRESSION_ERRORS as e:
            yield _unreadable(f, compression, lines.read, e)


def read_jsonl_lines(f: InputFile, start: int, first: int, skip: int, size: int | None) -> Iterator[Record]:
    """A run of JSON Lines: open at byte `start` (a line start, or a gzip member / zstd frame that begins
    one), pass over `skip` lines, then read `size` lines (None: to the end). `first` lines come before
    `start`, so offsets and messages are those of reading the whole file."""
    compression, fields = _compression(file_magic(f.path)), fields_of(f)
    with open(f.path, "rb") as raw:
        raw.seek(start)
        stream = (gzip.GzipFile(fileobj=raw, mode="rb") if compression == "gzip" else
                  io.BufferedReader(_ZstdRaw(raw), buffer_size=1 << 16) if compression == "zstd" else raw)
        lines = _Lines(stream)
        lines.read = first
        numbered = iter(lines)
        try:
            for _ in range(skip):
                if next(numbered, None) is None:
                    return
            for line_no, line in (numbered if size is None else islice(numbered, size)):
                if line.strip():
                    yield _parse_json_line(line, line_no, fields, f)
        except DECOMPRESSION_ERRORS as e:
            yield _unreadable(f, compression, lines.read, e)


def _compression(magic: bytes) -> str | None:
    return "gzip" if magic.startswith(GZIP_MAGIC) else "zstd" if magic == ZSTD_MAGIC else None


def _unreadable(f: InputFile, compression: str | None, lines_read: int, e: Exception) -> Rejected:
    return Rejected(f.path, "corrupt_compression" if compression else "corrupt_file",
                    f"{compression or 'file'} data unreadable from line {lines_read + 1} on "
                    f"({type(e).__name__}: {e}); the {lines_read} lines before were read",
                    lines_read + 1, f.format)


def _head(numbered: Iterator[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """The lines up to the second non-blank one: enough to tell JSON Lines from a JSON array."""
    head, non_blank = [], 0
    for item in numbered:
        head.append(item)
        non_blank += bool(item[1].strip())
        if non_blank == 2:
            break
    return head


def _is_json_array(first_lines: list[bytes]) -> bool:
    """Whether a file whose first (at most two) non-blank lines are `first_lines` is one JSON array."""
    if not first_lines or not first_lines[0].lstrip().startswith(b"["):
        return False
    if len(first_lines) == 1:
        return True  # `[...]` on one line, as json.dump writes it
    try:
        json.loads(first_lines[0])
    except ValueError:  # JSONDecodeError or UnicodeDecodeError: the array goes on past its first line
        return True
    return False  # a whole value, then more lines: JSON Lines whose rows are arrays


def _parse_json_line(line: bytes, line_no: int, fields: FieldMapping, f: InputFile) -> Record:
    """One non-blank JSONL line to a RawDoc or a Rejected."""
    raw = line[:schemas.MAX_RAW_BYTES]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejected(f.path, "invalid_utf8", f"line is not valid UTF-8: {e}", line_no, f.format, raw)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return Rejected(f.path, "malformed_json", f"not valid JSON: {e}", line_no, f.format, raw)
    return _object_to_record(obj, fields, f, line_no, raw, f.format)


def _object_to_record(obj, fields: FieldMapping, f: InputFile, offset: int, raw: bytes, fmt: str) -> Record:
    if not isinstance(obj, dict):
        return Rejected(f.path, "not_an_object", f"JSON {type(obj).__name__}, expected an object", offset, fmt, raw)
    return row_to_doc(obj, fields, f, offset, raw, source_format=fmt)


def _read_json_array(start: bytes, stream, compression: str | None, fields: FieldMapping,
                     f: InputFile) -> Iterator[Record]:
    """The elements of one JSON array, each an input row; `start` is what was read of it already.

    The file is held in memory whole (a JSON array has no line breaks to stream by; ijson would
    stream it, at the cost of a dependency for a rarer layout), but elements are decoded one at a
    time, so the parsed rows never all sit in memory at once. The elements before a syntax error,
    invalid UTF-8 or a cut in the compressed data are yielded, then one Rejected says why reading
    stopped (offset: the index of the element where it stopped)."""
    chunks, cut = [start], None
    try:
        while chunk := stream.read1(ARRAY_READ_BYTES):  # read1: a cut loses one chunk, not all of a read
            chunks.append(chunk)
    except DECOMPRESSION_ERRORS as e:
        cut = e
    data = b"".join(chunks)
    chunks.clear()
    bad_utf8 = None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad_utf8, text = e, data[:e.start].decode("utf-8")

    decoder, index, problem = json.JSONDecoder(), 0, None
    pos = _JSON_WHITESPACE.match(text, text.index("[") + 1).end()
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            try:
                value, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                problem = f"element {index} is not valid JSON: {e}"
                break
            raw = text[pos:min(end, pos + schemas.MAX_RAW_BYTES)].encode("utf-8")[:schemas.MAX_RAW_BYTES]
            yield _object_to_record(value, fields, f, index, raw, "json")
            index += 1
            pos = _JSON_WHITESPACE.match(text, end).end()
            if text.startswith(",", pos):
                pos = _JSON_WHITESPACE.match(text, pos + 1).end()
            elif text.startswith("]", pos):
                pos += 1
                break
            else:
                problem = f"expected ',' or ']' after element {index - 1} (line {_line_of(text, pos)})"
                break
    if problem is None and _JSON_WHITESPACE.match(text, pos).end() < len(text):
        problem = f"data after the end of the JSON array (line {_line_of(text, pos)})"

    # A cut or bad bytes also explain the syntax error they cause, so they are reported instead of it.
    if cut is not None:
        yield Rejected(f.path, "corrupt_compression" if compression else "corrupt_file",
                       f"{compression or 'file'} data unreadable after byte {len(data)} ({type(cut).__name__}: "
                       f"{cut}); the {index} array elements before were read", index, "json")
    elif bad_utf8 is not None:
        yield Rejected(f.path, "invalid_utf8", f"byte {bad_utf8.start} of the JSON array is not valid UTF-8 "
                       f"({bad_utf8.reason}); the {index} elements before it were read", index, "json",
                       data[bad_utf8.start:bad_utf8.start + 64])
    elif problem is not None:
        yield Rejected(f.path, "malformed_json", f"not a valid JSON array: {problem}; the {index} elements "
                       "before were read", index, "json", text[pos:pos + 256].encode("utf-8"))


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1
