"""One input row (a JSON object, a Parquet or datasets row) to a `RawDoc` through the input's field
mapping, or to a `Rejected` saying which field was missing. Shared by every row-shaped reader."""
from __future__ import annotations

import json

import schemas
from pipeline.config import FieldMapping
from pipeline.io import InputFile, RawDoc, Record, Rejected


def fields_of(f: InputFile) -> FieldMapping:
    return FieldMapping.model_validate(f.options.get("fields") or {})


def row_to_doc(row: dict, fields: FieldMapping, f: InputFile, offset: int, raw: bytes | None,
               extra_metadata: dict | None = None, source_format: str | None = None) -> Record:
    """Apply the field mapping to one row; `source_format` defaults to the file's format."""
    fmt = source_format or f.format
    text = row.get(fields.text)
    if text is None:
        return Rejected(f.path, "missing_text", f"no value in text field {fields.text!r}", offset, fmt, raw)
    if not isinstance(text, str):
        return Rejected(f.path, "missing_text",
                        f"text field {fields.text!r} holds a {type(text).__name__}, not a string", offset, fmt, raw)
    url = row.get(fields.url) if fields.url else None
    source_id = row.get(fields.id) if fields.id else None
    metadata = {k: row[k] for k in fields.metadata if k in row}
    metadata.update(extra_metadata or {})
    return RawDoc(text=text, source_file=f.path, source_offset=offset, source_format=fmt,
                  url=None if url is None else str(url),
                  source_id=None if source_id is None else str(source_id),
                  metadata=metadata or None)


def row_bytes(row: dict) -> bytes:
    """A row as JSON bytes, for the quarantine's raw column."""
    return json.dumps(row, default=str, ensure_ascii=False).encode("utf-8")[:schemas.MAX_RAW_BYTES]
