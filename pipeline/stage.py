"""The bookkeeping every stage shares, written once: the tables it needs first, its run record,
its timings and its result.

A stage driver reads like this:

    run = StageRun("score", config, requires=("docs",))   # inputs: the required tables, plus any given
    with run:                                    # run record "running"; "failed" on an exception
        with run.phase("read"):                  # timings["read_s"]
            ...
        return run.finish(counts, scorer_id=...)  # timings["total_s"], record "finished", the result

`run.skip(counts, ...)` finishes a run whose outputs were already up to date. What a run tells its
user is a `Report` (built by the stage's `report(result)`), which any front end can render: the CLI
as rich tables, a notebook or a log as text (`Report.text`).
"""
from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import pyarrow.fs as pafs

from pipeline.errors import UserError
from pipeline.lock import StoreLock
from pipeline.store import Store, code_version, utc_now

# What a stage may require, and the command that writes it (named in the error when it is missing).
TABLE_PRODUCERS = {"docs": "curate ingest", "scores": "curate score", "selections": "curate select"}


@dataclass
class StageResult:
    """What a stage run did. `outputs` holds what is particular to the stage (scorer_id, manifest,
    thresholds, ...); `skipped` says the outputs were already up to date and nothing was redone."""
    stage: str
    store: str
    run_id: str | None
    counts: dict[str, int]
    timings: dict[str, float]
    outputs: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


@dataclass
class Report:
    """What a stage run tells its user: a title, (what, value) rows, more tables (pyarrow), and lines."""
    title: str
    rows: list[tuple[str, Any]] = field(default_factory=list)
    tables: list[tuple[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The report as plain text (logs, notebooks)."""
        width = max((len(label) for label, _ in self.rows), default=0)
        lines = [self.title] if self.title else []
        lines += [f"  {label.ljust(width)}  {_fmt(value)}" for label, value in self.rows]
        for title, table in self.tables:
            lines += [title, table.to_pandas().to_string(index=False)]
        return "\n".join(lines + self.notes)


def _fmt(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def require(store: Store, *tables: str) -> None:
    """A UserError naming the command to run when one of `tables` has no Parquet part yet."""
    for table in tables:
        if not store.list_files(table, suffix=".parquet") and not _has_partitions(store, table):
            what = "documents" if table == "docs" else table
            raise UserError(f"no {what} in {store.uri}/{table}: run `{TABLE_PRODUCERS[table]}` first")


def _has_partitions(store: Store, table: str) -> bool:
    """A partitioned table (scores/scorer=<id>/, selections/<name>/) with at least one part."""
    info = store.fs.get_file_info(pafs.FileSelector(store.path(table), allow_not_found=True))
    return any(i.type == pafs.FileType.Directory and store.list_files(table, i.base_name, suffix=".parquet")
               for i in info)


def mark_abandoned(store: Store, stage: str, run_id: str) -> list[str]:
    """Mark `stage`'s records still "running" (other than `run_id`) abandoned. Called while holding the
    store lock: every running stage holds it, so such a run's process has gone (killed, machine lost)."""
    found = []
    for name in store.list_files("_runs", stage, suffix=".json"):
        record = store.read_json("_runs", stage, name)
        if record.get("status") == "running" and record.get("run_id") != run_id:
            record.update(status="abandoned", finished_at=record.get("finished_at") or utc_now(),
                          error=f"its process ended before it finished (found by run {run_id})")
            store.write_run_record(record)
            found.append(record["run_id"])
    return found


def new_run_record(stage: str, config, inputs: Sequence[str]) -> dict:
    """A stage run's record (schemas.RUN_RECORD) with a fresh run_id, status running; `config` is the
    run's pipeline Config."""
    return {"stage": stage, "run_id": f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}",
            "status": "running", "config": json.dumps(config.model_dump(mode="json"), sort_keys=True),
            "inputs": list(inputs), "code_version": code_version(), "started_at": utc_now(), "finished_at": None,
            "counts": {}, "timings": {}, "error": None}


class StageRun:
    """One run of a stage: checks the tables it requires, keeps its run record in _runs/<stage>/
    (unless `record` is False: dry runs), times its phases and builds its StageResult. The record's
    inputs are the required tables, then `inputs` (paths, or other store locations the stage reads).

    `with run:` holds the store's writer lock (pipeline.lock) for the block, so two runs never write
    one store at once; a stage writes nothing before it. Entering marks this stage's runs that were
    killed while running as abandoned."""

    def __init__(self, stage: str, config, inputs: Sequence[str] = (), requires: Sequence[str] = (),
                 record: bool = True):
        self.stage = stage
        self.store = Store(config.store)
        require(self.store, *requires)
        inputs = [self.store.spark_path(table) for table in requires] + list(inputs)
        self.record = new_run_record(stage, config, inputs) if record else None
        self.timings: dict[str, float] = {}
        self.started = time.time()
        self.lock: StoreLock | None = None
        self.abandoned: list[str] = []  # run ids of this stage found killed, marked abandoned

    @property
    def run_id(self) -> str | None:
        return self.record["run_id"] if self.record else None

    def __enter__(self) -> "StageRun":
        if self.record:
            self.lock = StoreLock(self.store, self.stage, self.run_id).acquire()
            try:
                self.abandoned = mark_abandoned(self.store, self.stage, self.run_id)
                self.store.write_run_record(self.record)
            except BaseException:
                self.lock.release()
                raise
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if error is not None and self.record and self.record["status"] == "running":
                self.record.update(status="failed", finished_at=utc_now(), error=f"{kind.__name__}: {error}"[:2000])
                self.store.write_run_record(self.record)
        finally:
            if self.lock:
                self.lock.release()
                self.lock = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block into timings[f"{name}_s"] (added up when a phase runs more than once)."""
        started = time.time()
        try:
            yield
        finally:
            key = f"{name}_s"
            self.timings[key] = round(self.timings.get(key, 0.0) + time.time() - started, 3)

    def finish(self, counts: dict[str, int], skipped: bool = False, **outputs) -> StageResult:
        """Record the run as finished (timings["total_s"] from the start) and return its result."""
        self.timings["total_s"] = round(time.time() - self.started, 3)
        if self.record:
            self.record.update(status="finished", finished_at=utc_now(),
                               counts={**counts, **({"skipped": 1} if skipped else {})}, timings=self.timings)
            self.store.write_run_record(self.record)
        return StageResult(self.stage, self.store.uri, self.run_id, counts, self.timings, outputs, skipped)

    def skip(self, counts: dict[str, int], **outputs) -> StageResult:
        """Finish a run whose outputs were already up to date."""
        with self:
            return self.finish(counts, skipped=True, **outputs)
