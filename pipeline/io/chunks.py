"""Cutting large input files into chunks: the units of reading, of parallelism and of resume.

A file is one chunk unless its data is larger than `chunk_bytes`; then it is cut where a reader can
start without reading what comes before:
- JSON Lines, plain: at line starts (byte offsets);
- JSON Lines, gzip or zstd: at a line start, opened at the last gzip member or zstd frame that begins
  on a line start before it, passing over the lines in between (a file of many members or frames,
  as bgzip and crawl tools write, costs nothing; the chunks of a single member are read in runs,
  `runs`, so that each run decompresses the member once);
- Parquet: at row groups;
- WARC/WET: at records (a gzip member each in a .warc.gz, as crawls write them).
JSON arrays and datasets folders are one chunk. The plan of a JSON Lines file costs one
pass over it (decompressing, counting lines, no parsing); offsets stay absolute (line numbers of the
file), so a chunked file gives exactly the records the whole file would.
"""
from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from typing import Iterator

from pipeline.hashing import path_key, short_digest
from pipeline.io import GZIP_MAGIC, InputFile, Record, Rejected, file_magic
from pipeline.io.jsonl import ZSTD_MAGIC, _head, _is_json_array, _Lines, _open_lines

READ_BYTES = 1 << 20
CHECKPOINTS_PER_CHUNK = 8  # candidate cut points per chunk: cuts land within 1/8 of a chunk of their target
RUN_CHUNKS = 8             # chunks read in one pass at most (see `runs`)


@dataclass(frozen=True)
class Chunk:
    """A part of one input file. JSON Lines: `size` lines after opening at byte `start` (a line start or
    a member/frame start) and passing over `skip` lines; `first` lines of the file come before `start`.
    Parquet: `size` row groups from row group `start`, `first` rows before. WARC/WET: the records that
    begin in the `size` bytes from `start`. `size` None: to the end of the file."""
    file: InputFile
    index: int = 0
    count: int = 1
    start: int = 0
    first: int = 0
    skip: int = 0
    size: int | None = None

    @property
    def key(self) -> str:
        """The chunk's name in the store: the file's key and the chunk's index."""
        return f"{path_key(self.file.path)}-c{self.index:05d}"

    def as_list(self) -> list[int | None]:
        return [self.start, self.first, self.skip, self.size]

    @property
    def plan_key(self) -> str:
        """A digest of the chunk's place in its file: a marker with another one is of another chunk."""
        return short_digest(self.as_list())


def needs_plan(f: InputFile, chunk_bytes: int) -> bool:
    """Whether `f` may be larger than one chunk (compressed text expands 3-5x: a compressed file over a
    quarter of a chunk is planned, at the cost of one decompression pass)."""
    if f.format in ("parquet", "warc", "wet"):  # WARC: a page's text is a fraction of its record
        return f.size > chunk_bytes
    if f.format == "jsonl":
        magic = file_magic(f.path) if os.path.isfile(f.path) else b""
        compressed = magic.startswith(GZIP_MAGIC) or magic == ZSTD_MAGIC
        return f.size > (chunk_bytes // 4 if compressed else chunk_bytes)
    return False


def plan_chunks(f: InputFile, chunk_bytes: int) -> list[Chunk]:
    """The chunks of `f`: one, or several of about `chunk_bytes` of data each."""
    try:
        if f.format == "jsonl" and needs_plan(f, chunk_bytes):
            cuts = _line_cuts(f.path, chunk_bytes)
        elif f.format == "parquet" and needs_plan(f, chunk_bytes):
            cuts = _row_group_cuts(f.path, chunk_bytes)
        elif f.format in ("warc", "wet") and needs_plan(f, chunk_bytes):
            cuts = _record_cuts(f.path, f.size, chunk_bytes)
        else:
            cuts = []
    except Exception:  # unreadable: one chunk, whose reader says what is wrong with the file
        cuts = []
    if not cuts:
        return [Chunk(f)]
    return [Chunk(f, i, len(cuts), *cut) for i, cut in enumerate(cuts)]


def chunks_from_plan(f: InputFile, plan: list[list[int | None]]) -> list[Chunk]:
    return [Chunk(f, i, len(plan), *cut) for i, cut in enumerate(plan)]


def read_chunk(chunk: Chunk) -> Iterator[Record]:
    """The records of one chunk; a one-chunk file is read whole (`read_file`)."""
    from pipeline.io.jsonl import read_jsonl_lines
    from pipeline.io.readers import read_file, read_parquet
    from pipeline.io.warc import read_warc, read_wet

    f = chunk.file
    if chunk.count == 1:
        yield from read_file(f)
        return
    try:
        if f.format == "jsonl":
            yield from read_jsonl_lines(f, chunk.start, chunk.first, chunk.skip, chunk.size)
        elif f.format in ("warc", "wet"):
            reader = read_warc if f.format == "warc" else read_wet
            yield from reader(f, chunk.start, None if chunk.size is None else chunk.start + chunk.size)
        else:
            yield from read_parquet(f, range(chunk.start, chunk.start + chunk.size), chunk.first)
    except Exception as e:  # the last resort that keeps "readers never raise" true, as in read_file
        yield Rejected(f.path, "read_error", f"{type(e).__name__}: {e}", source_format=f.format)


def runs(chunks: list[Chunk]) -> list[list[Chunk]]:
    """`chunks` (of any files) grouped into runs that one task reads in one pass: consecutive chunks
    opened at the same place (a single gzip member or zstd frame), at most RUN_CHUNKS in a run.
    Read apart, each would decompress everything before it again; a run of k costs one pass, and
    runs of a file still go in parallel."""
    out: list[list[Chunk]] = []
    for c in sorted(chunks, key=lambda c: (c.file.path, c.index)):
        last = out[-1][-1] if out else None
        if (last is not None and last.file.path == c.file.path and last.index + 1 == c.index
                and last.start == c.start and c.count > 1 and len(out[-1]) < RUN_CHUNKS):
            out[-1].append(c)
        else:
            out.append([c])
    return out


def read_run(run: list[Chunk]) -> Iterator[tuple[Chunk, Iterator[Record]]]:
    """(chunk, its records) for each chunk of a run, read in one pass; each chunk's records must be
    consumed before the next chunk's."""
    from pipeline.io.jsonl import read_jsonl_lines

    if len(run) == 1:
        yield run[0], read_chunk(run[0])
        return
    head, last = run[0], run[-1]
    lines = None if last.size is None else last.first + last.skip + last.size - (head.first + head.skip)
    records = read_jsonl_lines(head.file, head.start, head.first, head.skip, lines)
    held: list[Record] = []

    def part(end: int | None) -> Iterator[Record]:  # the records up to line `end` (1-based) of the file
        while True:
            record = held.pop() if held else next(records, None)
            if record is None:
                return
            if end is not None and record.source_offset is not None and record.source_offset > end:
                held.append(record)
                return
            yield record
    for chunk in run:
        yield chunk, part(None if chunk.size is None else chunk.first + chunk.skip + chunk.size)


# -- JSON Lines -----------------------------------------------------------------------------------
def _members(fh, compression: str | None) -> Iterator[tuple[int, bytes]]:
    """(byte offset where the current gzip member / zstd frame starts, decompressed data) over a file.
    A plain file is one member at 0. Raises on damaged data (the planning stops there)."""
    if compression is None:
        while data := fh.read(READ_BYTES):
            yield 0, data
        return
    import zstandard
    new = (lambda: zlib.decompressobj(zlib.MAX_WBITS | 16)) if compression == "gzip" else \
        (lambda: zstandard.ZstdDecompressor().decompressobj())
    offset, member_start, decompressor, pending = 0, 0, None, b""
    while True:
        if not pending:
            pending = fh.read(READ_BYTES)
            if not pending:
                break
        if decompressor is None:
            decompressor, member_start = new(), offset
        out = decompressor.decompress(pending)
        if decompressor.eof:
            rest = decompressor.unused_data
            offset += len(pending) - len(rest)
            pending, decompressor = rest, None
        else:
            offset += len(pending)
            pending = b""
        yield member_start, out
    if decompressor is not None:
        raise EOFError("compressed data ends inside a member")


def _line_cuts(path: str, chunk_bytes: int) -> list[list[int | None]]:
    """Cut points [start, first, skip, size] of a JSON Lines file; [] when it is one chunk."""
    stream, compression = _open_lines(path)
    with stream:
        if _is_json_array([line for _, line in _head(iter(_Lines(stream))) if line.strip()]):
            return []  # one JSON value: not splittable
    if compression is None and os.path.splitext(path)[1].lower() in (".gz", ".zst"):
        return []  # mislabelled: its reader quarantines it
    step = max(1, chunk_bytes // CHECKPOINTS_PER_CHUNK)
    # A checkpoint: (lines before it, decompressed byte offset, where to open, lines before that).
    checkpoints: list[tuple[int, int, int, int]] = []
    lines = position = 0
    restart = (0, 0)
    member, mark, ends_line = -1, step, True
    with open(path, "rb") as fh:
        try:
            for member_start, data in _members(fh, compression):
                if member_start != member and ends_line:
                    restart = (member_start, lines)  # a member that begins a line: a reader can open here
                member = member_start
                while position + len(data) >= mark:
                    newline = data.find(b"\n", max(0, mark - position))
                    if newline < 0:
                        break
                    line = lines + data.count(b"\n", 0, newline + 1)
                    at = position + newline + 1
                    checkpoints.append((line, at, *((at, line) if compression is None else restart)))
                    mark = (at // step + 1) * step
                lines += data.count(b"\n")
                position += len(data)
                if data:
                    ends_line = data.endswith(b"\n")
        except Exception:
            pass  # damaged: cut only before the damage; the last chunk reads on to it and reports it
    total = position
    n = math.ceil(total / chunk_bytes) if total else 1
    checkpoints = [c for c in checkpoints if c[1] < total]
    if n <= 1 or not checkpoints:
        return []
    cuts, previous = [(0, 0, 0, 0)], 0
    for i in range(1, n):
        best = min(checkpoints, key=lambda c: abs(c[1] - i * total / n))
        if best[0] > previous:
            cuts.append(best)
            previous = best[0]
    plan = []
    for i, (line, _, start, first) in enumerate(cuts):
        size = cuts[i + 1][0] - line if i + 1 < len(cuts) else None
        plan.append([start, first, line - first, size])
    return plan if len(plan) > 1 else []


# -- Parquet --------------------------------------------------------------------------------------
def _row_group_cuts(path: str, chunk_bytes: int) -> list[list[int | None]]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    sizes = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
    rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    total = sum(sizes)
    n = min(len(sizes), math.ceil(total / chunk_bytes)) if total else 1
    if n <= 1:
        return []
    plan, start, done_bytes = [], 0, 0
    for i in range(len(sizes)):
        done_bytes += sizes[i]
        if done_bytes >= (len(plan) + 1) * total / n or i == len(sizes) - 1:
            plan.append([start, sum(rows[:start]), 0, i + 1 - start])
            start = i + 1
    return plan if len(plan) > 1 else []


# -- WARC / WET -----------------------------------------------------------------------------------
def _record_cuts(path: str, size: int, chunk_bytes: int) -> list[list[int | None]]:
    from pipeline.io.warc import record_offsets

    offsets = record_offsets(path)[1:]
    n = math.ceil(size / chunk_bytes)
    if n <= 1 or not offsets:
        return []
    starts = sorted({0, *(min(offsets, key=lambda o: abs(o - i * size / n)) for i in range(1, n))})
    return [[a, 0, 0, (b - a) if b is not None else None] for a, b in zip(starts, [*starts[1:], None])]


def plan_record(f: InputFile, chunk_bytes: int, chunks: list[Chunk]) -> dict:
    return {"path": f.path, "fingerprint": f.fingerprint, "chunk_bytes": chunk_bytes,
            "chunks": [c.as_list() for c in chunks]}

