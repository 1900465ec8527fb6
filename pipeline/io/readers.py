"""Finding input files and reading them into `RawDoc` / `Rejected` / `Skipped` records.

`discover_inputs` expands one configured input (a file, a folder or a glob) into `InputFile`s with a
resolved format. `read_file` streams one of them. Readers are generators that never raise on bad
data: a bad line, row, record or file becomes a `Rejected` with its position and a reason code, and
everything readable before a corruption is still yielded. The readers of each family live beside
this module: `jsonl` (JSON Lines and JSON arrays), `warc` (WARC and WET); Parquet and datasets here.

Reason codes: empty_file, unknown_format, invalid_utf8, malformed_json, not_an_object, missing_text,
corrupt_compression, corrupt_file, unsupported_content_type, read_error (an unexpected failure such
as a permission error; the detail has the exception).
"""
from __future__ import annotations

import copy
import glob
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.config import InputSpec
from pipeline.errors import UserError
from pipeline.io import InputFile, RawDoc, Record, Rejected
from pipeline.io.jsonl import read_jsonl
from pipeline.io.rows import fields_of, row_bytes, row_to_doc
from pipeline.io.warc import read_warc, read_wet

PARQUET_BATCH_ROWS = 1024

ACCEPTED_EXTENSIONS = (".jsonl .ndjson .json (JSON Lines, or a JSON array of objects; each optionally .gz or "
                       ".zst), .parquet, .warc, .warc.gz, .wet, .wet.gz, .warc.wet.gz, or a datasets "
                       "save_to_disk folder")
HF_BUILDER_BY_SUFFIX = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv",
                        ".txt": "text", ".parquet": "parquet", ".arrow": "arrow"}
COMPRESSION_SUFFIXES = (".gz", ".zst", ".bz2", ".xz")  # datasets decompresses these itself


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------

def discover_inputs(spec: InputSpec) -> list[InputFile]:
    """Expand `spec.path` (file, folder or glob) into sorted `InputFile`s with a resolved format.

    Folders are walked recursively, skipping hidden and `_`-prefixed names (Spark and Hadoop
    write `_SUCCESS`, `.crc` files). A datasets `save_to_disk` folder is one input. Files whose
    format can't be told from the name get format "unknown" so that they are quarantined, not lost.
    """
    path = os.path.expanduser(spec.path)
    is_glob = glob.has_magic(path)
    if is_glob:
        matches = sorted(glob.glob(path, recursive=True))
    else:
        matches = [path] if os.path.exists(path) else []
    if not matches:
        raise UserError(f"input not found: {spec.path}")

    options = {"fields": spec.fields.model_dump(), "hf_builder": spec.hf_builder, "hf_split": spec.hf_split}
    found: dict[str, str] = {}  # absolute path -> format; a dict keeps order and drops glob overlaps
    for match in matches:
        if is_glob and _is_skipped(match):
            continue  # `data/*` should not pick up `_SUCCESS` any more than a folder walk does
        if os.path.isfile(match) and is_hf_disk_folder(os.path.dirname(match)):
            continue  # `**/*.json` should not pick up a datasets folder's state.json
        match = os.path.abspath(match)
        expanded = list(_expand(match, spec.format, top=True))
        if not expanded and spec.format == "hf_disk":
            expanded = [(match, "hf_disk")]  # not a datasets folder: load_from_disk will say why
        for file_path, fmt in expanded:
            found.setdefault(file_path, fmt)
    if not found:
        raise UserError(f"input not found: {spec.path} (no input files in it)")
    # How HTML becomes text matters to WARC files alone: a change re-reads them, and only them.
    return [_input_file(p, fmt, {**options, "html_text": spec.html_text} if fmt == "warc" else options)
            for p, fmt in found.items()]


def _is_skipped(path: str) -> bool:
    """Hidden files and `_`-prefixed ones (Spark's `_SUCCESS`, `.crc`) are not data."""
    return os.path.basename(path.rstrip(os.sep)).startswith((".", "_"))


def _expand(path: str, fmt: str, top: bool) -> Iterator[tuple[str, str]]:
    """(path, format) for a file, or for every input inside a folder, in sorted order."""
    if os.path.isdir(path) and fmt in ("auto", "hf_disk") and is_hf_disk_folder(path):
        yield path, "hf_disk"  # one input: its arrow files are not inputs of their own
    elif os.path.isfile(path):
        if fmt == "auto":
            yield path, format_from_name(path)
        elif top or fmt != "hf_disk":  # with hf_disk, loose files inside a folder are not datasets
            yield path, fmt
    elif os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            if not _is_skipped(name):
                yield from _expand(os.path.join(path, name), fmt, top=False)


def is_hf_disk_folder(path: str) -> bool:
    """A folder written by `Dataset.save_to_disk` (state.json) or `DatasetDict.save_to_disk`."""
    return os.path.isfile(os.path.join(path, "state.json")) or os.path.isfile(os.path.join(path, "dataset_dict.json"))


def format_from_name(path: str) -> str:
    """The input format a file name implies, or "unknown"."""
    name = os.path.basename(path).lower()
    if name.endswith((".wet", ".wet.gz")):  # covers .warc.wet.gz
        return "wet"
    if name.endswith((".warc", ".warc.gz")):
        return "warc"
    if name.endswith(".parquet"):
        return "parquet"
    stem, extension = os.path.splitext(name)
    if extension in (".gz", ".zst"):
        name = stem
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    return "unknown"


def _input_file(path: str, fmt: str, options: dict) -> InputFile:
    """An InputFile; a folder's size and mtime sum up its files so that its fingerprint changes with them."""
    if os.path.isdir(path):
        stats = [p.stat() for p in Path(path).rglob("*") if p.is_file()]
        size = sum(s.st_size for s in stats)
        mtime_ns = max((s.st_mtime_ns for s in stats), default=os.stat(path).st_mtime_ns)
    else:
        st = os.stat(path)
        size, mtime_ns = st.st_size, st.st_mtime_ns
    return InputFile(path=path, format=fmt, size=size, mtime_ns=mtime_ns, options=copy.deepcopy(options))


# ---------------------------------------------------------------------------------------------
# Dispatch and shared helpers
# ---------------------------------------------------------------------------------------------

def read_file(f: InputFile) -> Iterator[Record]:
    """Stream the records of one input; never raises on bad data.

    Whatever the format, an input that yields nothing at all is reported as one `empty_file`,
    and an unexpected failure (permission denied, file vanished) ends the stream with one
    `read_error` after what was already read.
    """
    reader = READERS.get(f.format)
    if reader is None:
        yield Rejected(f.path, "unknown_format",
                       f"cannot tell the format of {os.path.basename(f.path)!r}; accepted: {ACCEPTED_EXTENSIONS}"
                       " (or set `format` on the input)", source_format=f.format)
        return
    yielded = False
    try:
        if os.path.isfile(f.path) and os.path.getsize(f.path) == 0:
            yield Rejected(f.path, "empty_file", "file is empty (0 bytes)", source_format=f.format)
            return
        for record in reader(f):
            yielded = True
            yield record
    except Exception as e:  # the last resort that keeps "readers never raise" true
        yielded = True
        yield Rejected(f.path, "read_error", f"{type(e).__name__}: {e}", source_format=f.format)
    if not yielded:
        yield Rejected(f.path, "empty_file", "contains no records (it may decompress to nothing)",
                       source_format=f.format)


# ---------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------

def read_parquet(f: InputFile, row_groups: range | None = None, first_row: int = 0) -> Iterator[Record]:
    """Rows in record batches (never the whole file at once); offsets are 0-based row indexes.
    `row_groups`: only those (a chunk), the first of which starts at row `first_row`."""
    import pyarrow.parquet as pq

    fields = fields_of(f)
    try:
        parquet = pq.ParquetFile(f.path)
        names = parquet.schema_arrow.names
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a non-Parquet file
        yield Rejected(f.path, "corrupt_file", f"not a readable Parquet file: {e}", None, f.format)
        return
    if fields.text not in names:
        yield Rejected(f.path, "missing_text", f"no column {fields.text!r}; columns are {names}", None, f.format)
        return
    wanted = [fields.text, fields.url, fields.id, *fields.metadata]
    columns = list(dict.fromkeys(c for c in wanted if c and c in names))
    row_index = first_row
    with parquet:
        try:
            for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns,
                                              row_groups=list(row_groups) if row_groups is not None else None):
                for row in batch.to_pylist():
                    yield row_to_doc(row, fields, f, row_index, row_bytes(row))
                    row_index += 1
        except Exception as e:  # a damaged page or row group
            yield Rejected(f.path, "corrupt_file", f"unreadable from row {row_index} on: {e}", row_index, f.format)


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets
# ---------------------------------------------------------------------------------------------

def read_hf_disk(f: InputFile) -> Iterator[Record]:
    """A `save_to_disk` folder; for a DatasetDict every split in turn, with {"split": name} in metadata."""
    import datasets

    try:
        loaded = datasets.load_from_disk(f.path)
    except Exception as e:  # FileNotFoundError, json errors, arrow errors: all mean "not a readable dataset"
        yield Rejected(f.path, "corrupt_file", f"not a loadable datasets folder: {type(e).__name__}: {e}",
                       None, f.format)
        return
    if isinstance(loaded, datasets.DatasetDict):
        for split, dataset in loaded.items():
            yield from _read_dataset(dataset, f, {"split": split})
    else:
        yield from _read_dataset(loaded, f, None)


def read_hf_files(f: InputFile) -> Iterator[Record]:
    """One data file through `datasets.load_dataset(builder, data_files=path)`, cached in a temp dir.

    The builder follows the name (`rows.tsv.gz`: csv with tabs) unless `hf_builder` is set. The csv
    and json builders drop a UTF-8 byte-order mark themselves; the text builder keeps it in the first
    line, so it is dropped here."""
    import datasets

    name = Path(f.path).name.lower()
    for compression in COMPRESSION_SUFFIXES:
        name = name.removesuffix(compression)
    suffix = Path(name).suffix
    builder = f.options.get("hf_builder") or HF_BUILDER_BY_SUFFIX.get(suffix)
    if builder is None:
        yield Rejected(f.path, "unknown_format", "set `hf_builder` (json, csv, text, parquet) for this input",
                       None, f.format)
        return
    options = {"sep": "\t"} if builder == "csv" and suffix == ".tsv" else {}
    # A temp cache keeps the Arrow copy out of ~/.cache and removes it when the file is read.
    with tempfile.TemporaryDirectory(prefix="curate-hf-") as cache_dir:
        try:
            dataset = datasets.load_dataset(builder, data_files=f.path, split=f.options.get("hf_split") or "train",
                                            cache_dir=cache_dir, **options)
        except Exception as e:
            yield Rejected(f.path, "corrupt_file", f"load_dataset({builder!r}) failed: {type(e).__name__}: {e}",
                           None, f.format)
            return
        for record in _read_dataset(dataset, f, None):
            if builder == "text" and isinstance(record, RawDoc) and record.source_offset == 0:
                record.text = record.text.removeprefix("\ufeff")
            yield record


def _read_dataset(dataset, f: InputFile, extra_metadata: dict | None) -> Iterator[Record]:
    """Rows of one datasets.Dataset in order; offsets are 0-based row indexes within it."""
    fields = fields_of(f)
    if fields.text not in dataset.column_names:
        yield Rejected(f.path, "missing_text", f"no column {fields.text!r}; columns are {dataset.column_names}",
                       None, f.format)
        return
    dataset = dataset.with_format(None)  # save_to_disk keeps a torch/numpy format; we want python values
    row_index = 0
    for batch in dataset.iter(batch_size=PARQUET_BATCH_ROWS):
        for row in _batch_rows(batch):
            yield row_to_doc(row, fields, f, row_index, row_bytes(row), extra_metadata)
            row_index += 1


def _batch_rows(batch: dict[str, list]) -> Iterable[dict]:
    """Columns-of-lists to row dicts."""
    names = list(batch)
    return (dict(zip(names, values)) for values in zip(*batch.values()))


READERS = {
    "jsonl": read_jsonl,
    "parquet": read_parquet,
    "warc": read_warc,
    "wet": read_wet,
    "hf_disk": read_hf_disk,
    "hf_files": read_hf_files,
}
