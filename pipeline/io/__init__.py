"""Reading raw input files into records, and the types that flow out of readers.

A reader turns one input file into a stream of `RawDoc` (a record that carries text),
`Rejected` (a row or a whole file that cannot be used, with a reason) and `Skipped` (a record that
by design holds no document, such as a WARC request). Readers never raise on bad data: everything
they cannot read becomes a `Rejected` with its position, so nothing is lost silently. Normalisation, hashing and language ID happen later, in `pipeline.ingest`.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RawDoc:
    text: str                       # as read, before normalisation
    source_file: str
    source_offset: int              # JSONL: line number (1-based); JSON array: element index; Parquet/datasets:
                                    # row index; WARC/WET: record byte offset
    source_format: str              # jsonl | json (an element of a JSON array) | parquet | warc | wet | hf_disk | hf_files
    url: str | None = None
    source_id: str | None = None
    metadata: dict | None = None


@dataclass
class Rejected:
    source_file: str
    reason: str                     # a short code: malformed_json, invalid_utf8, corrupt_compression, ...
    detail: str                     # what a person needs to know to find and fix it
    source_offset: int | None = None  # None when the whole file is rejected
    source_format: str | None = None
    raw: bytes | None = None        # the offending bytes (truncated by the writer)


@dataclass
class Skipped:
    """A record that is not meant to be a document: a WARC request, metadata, warcinfo or revisit
    record, a WET warcinfo record. Counted apart from quarantine (it is not bad data) and not stored."""
    source_file: str
    record_type: str                # the WARC-Type, e.g. request
    source_offset: int              # the record's byte offset
    source_format: str


@dataclass(frozen=True)
class InputFile:
    """One unit of ingest work: a file (or a datasets folder) and how to read it."""
    path: str                       # absolute path
    format: str                     # a resolved format, or "unknown"
    size: int = 0
    mtime_ns: int = 0
    options: dict = field(default_factory=dict, hash=False, compare=False)  # fields mapping, hf_builder, hf_split

    @property
    def fingerprint(self) -> str:
        return f"{self.size}:{self.mtime_ns}"


Record = RawDoc | Rejected | Skipped
GZIP_MAGIC = b"\x1f\x8b"


def file_magic(path: str) -> bytes:
    """The first 4 bytes of a file: how compressed input is recognised whatever its name."""
    with open(path, "rb") as fh:
        return fh.read(4)


def is_gzip(path: str) -> bool:
    return file_magic(path).startswith(GZIP_MAGIC)
