"""The corpus store: one folder (local path or Hadoop-compatible URI) of Parquet tables.

    docs/part-*.parquet                  one row per document
    quarantine/part-*.parquet            rejected input rows with a reason
    scores/scorer=<id>/part-*.parquet    (later stages) one table per stage, keyed by doc_id
    _runs/<stage>/<run_id>.json          run records
    _staging/<stage>/...                 finished units of work of unfinished runs (resume)

Files are written to a temporary name and renamed, so a killed job never leaves a half-written
part that a re-run would mistake for finished work.
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

import schemas
from pipeline import __version__


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


def new_run_record(stage: str, config, inputs: list[str]) -> dict:
    """A stage run's record (schemas.RUN_RECORD) with a fresh run_id, status running; `config` is the
    run's pipeline Config."""
    return {"stage": stage, "run_id": f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}",
            "status": "running", "config": json.dumps(config.model_dump(mode="json"), sort_keys=True),
            "inputs": inputs, "code_version": code_version(), "started_at": utc_now(), "finished_at": None,
            "counts": {}, "timings": {}, "error": None}


class Store:
    def __init__(self, root: str | Path):
        root = str(root)
        if "://" in root:
            self.fs, self.base = pafs.FileSystem.from_uri(root)
            self.uri = root.rstrip("/")
        else:
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

    def write_json(self, obj, *rel: str) -> None:
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
        self.write_json(record, "_runs", record["stage"], f"{record['run_id']}.json")

    @contextmanager
    def recorded_run(self, record: dict) -> Iterator[dict]:
        """Store `record` (running); an exception inside the block is recorded (failed) and re-raised."""
        self.write_run_record(record)
        try:
            yield record
        except BaseException as e:
            record.update(status="failed", finished_at=utc_now(), error=f"{type(e).__name__}: {e}"[:2000])
            self.write_run_record(record)
            raise

    def finish_run(self, record: dict, counts: dict, timings: dict) -> None:
        record.update(status="finished", finished_at=utc_now(), counts=counts, timings=timings)
        self.write_run_record(record)
