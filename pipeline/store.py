"""The corpus store: one folder (local path or Hadoop-compatible URI) of Parquet tables.

    docs/part-*.parquet                  one row per document (+ _manifest.json)
    quarantine/part-*.parquet            rejected input rows with a reason
    scores/scorer=<id>/part-*.parquet    one table per scorer (+ _scorer.json, its identity)
    reference_splits/model=<name>/       the documents each trained reference model saw
    selections/<name>/part-*.parquet     kept or dropped, per document (+ _selection.json)
    exports/<name>/                      training shards, documents.parquet, manifest.json
    mixtures/<name>.json                 group weights an export can sample to
    models/<name>/                       reference models trained on the store
    _runs/<stage>/<run_id>.json          run records
    _staging/<stage>/...                 finished units of work of unfinished runs (resume)

Tables are declared in `schemas`, JSON sidecars in `schemas.sidecars`. Files are written to a
temporary name and renamed, so a killed job never leaves a half-written part that a re-run would
mistake for finished work.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

import schemas
from pipeline import __version__
from pipeline.errors import UserError
from schemas.sidecars import Sidecar


def code_version() -> str:
    """The package version, plus the git commit when run from a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Store:
    def __init__(self, root: str | Path):
        root = str(root)
        if "://" in root:
            self.fs, self.base = pafs.FileSystem.from_uri(root)
            self.uri = root.rstrip("/")
        else:
            if Path(root).exists() and not Path(root).is_dir():
                raise UserError(f"store {root} is a file: a store is a folder (give a new or existing folder)")
            self.fs, self.base = pafs.LocalFileSystem(), str(Path(root).resolve())
            self.uri = self.base
        self.base = self.base.rstrip("/")

    # -- paths ---------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """A path inside the store, for pyarrow.fs calls."""
        return "/".join([self.base, *parts])

    def spark_path(self, *parts: str) -> str:
        """The same location as Spark and DuckDB want it (absolute local path or URI)."""
        return "/".join([self.uri, *parts])

    # -- files ---------------------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def list_files(self, *parts: str, suffix: str = "") -> list[str]:
        """Names (not paths) of the files directly inside a folder, sorted; [] if absent."""
        info = self.fs.get_file_info(pafs.FileSelector(self.path(*parts), allow_not_found=True))
        return sorted(i.base_name for i in info
                      if i.type == pafs.FileType.File and i.base_name.endswith(suffix)
                      and not i.base_name.startswith((".", "_")))

    def delete(self, *parts: str) -> None:
        p = self.path(*parts)
        info = self.fs.get_file_info(p)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(p)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(p)

    def replace_dir(self, new: tuple[str, ...], final: tuple[str, ...]) -> None:
        """Put the folder `new` in place of `final`: the old one is renamed aside, the new one renamed in,
        then the old one deleted, so readers see the old table or the new one, whole."""
        aside = f"replaced-{uuid.uuid4().hex}"
        self.fs.create_dir(self.path("_staging"), recursive=True)
        if self.exists(*final):
            self.fs.move(self.path(*final), self.path("_staging", aside))
        self.fs.create_dir(self.path(*final[:-1]), recursive=True)
        self.fs.move(self.path(*new), self.path(*final))
        self.delete("_staging", aside)

    def clear_temporary(self, *parts: str) -> int:
        """Delete the `.tmp-*` files a killed writer left in a folder; returns how many."""
        info = self.fs.get_file_info(pafs.FileSelector(self.path(*parts), allow_not_found=True))
        stale = [i.path for i in info if i.type == pafs.FileType.File and i.base_name.startswith(".tmp-")]
        for path in stale:
            self.fs.delete_file(path)
        return len(stale)

    def atomic_write(self, rel: tuple[str, ...], write) -> None:
        """`write(path)` fills a temporary file beside `rel`, which is then renamed to `rel`."""
        final = self.path(*rel)
        tmp = self.path(*rel[:-1], f".tmp-{uuid.uuid4().hex}-{rel[-1]}")
        self.fs.create_dir(self.path(*rel[:-1]), recursive=True)
        write(tmp)
        self.fs.move(tmp, final)

    def write_table(self, table: pa.Table, schema: pa.Schema, *rel: str) -> pa.Table:
        """Validate against `schema` and write one Parquet file atomically."""
        table = schemas.validate(table, schema)
        self.atomic_write(rel, lambda p: pq.write_table(table, p, filesystem=self.fs, compression="zstd"))
        return table

    def read_table(self, *rel: str) -> pa.Table:
        return pq.read_table(self.path(*rel), filesystem=self.fs)

    def write_json(self, sidecar: Sidecar, obj: dict, *rel: str) -> dict:
        """Validate `obj` against its sidecar declaration and write it atomically; returns what was
        written (with `schema_version`)."""
        obj = sidecar.validate(obj)
        self._write_json(obj, rel)
        return obj

    def _write_json(self, obj: dict, rel: tuple[str, ...]) -> None:
        blob = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()

        def write(p):
            with self.fs.open_output_stream(p) as f:
                f.write(blob)
        self.atomic_write(rel, write)

    def read_json(self, *rel: str):
        with self.fs.open_input_stream(self.path(*rel)) as f:
            return json.loads(f.read())

    # -- run records ---------------------------------------------------------------------
    def run_record(self, stage: str, run_id: str) -> dict | None:
        name = f"{run_id}.json"
        return self.read_json("_runs", stage, name) if self.exists("_runs", stage, name) else None

    def write_run_record(self, record: dict) -> None:
        """Validate a run record against schemas.RUN_RECORD and store it as JSON."""
        row = dict(record)
        for key in ("counts", "timings"):
            row[key] = list((row.get(key) or {}).items())
        schemas.validate(pa.Table.from_pylist([row], schema=schemas.RUN_RECORD), schemas.RUN_RECORD)
        self._write_json(record, ("_runs", record["stage"], f"{record['run_id']}.json"))

    def file_digest(self, *rel: str) -> dict:
        """{bytes, sha256} of a file as it is on disk."""
        h, size = hashlib.sha256(), 0
        with self.fs.open_input_stream(self.path(*rel), compression=None) as f:
            while block := f.read(1 << 22):
                h.update(block)
                size += len(block)
        return {"bytes": size, "sha256": h.hexdigest()}
