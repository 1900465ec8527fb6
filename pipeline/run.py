"""`curate run`: the stage registry, the config check before a run, the run itself and its summary.

The registry is the one list of stages, in pipeline order. A stage is a package with a `stage.py`
whose run function returns a `StageResult`; its entry here says how a pipeline run calls it (each
stage resumes, so a run brings every output in line with the config), what in the config it needs
before anything starts, and how its result reads (`report`) and sums up (`summary_row`).

Nothing here prints: an `Output` (the CLI's rich console, or `TextOutput`) shows sections, progress
and reports, so a notebook or `spark-submit` runs the same code as `curate run`.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Protocol

import pyarrow as pa

from pipeline.config import Config, apply_overrides, load_config
from pipeline.correlations import stage as correlate
from pipeline.distill import stage as distill
from pipeline.errors import UserError
from pipeline.evaluate import stage as evaluation
from pipeline.export import stage as export
from pipeline.ingest import stage as ingest
from pipeline.mixing import stage as mixing
from pipeline.rating import stage as rating
from pipeline.scoring import stage as scoring
from pipeline.selection import stage as selection
from pipeline.stage import Report, StageResult
from pipeline.train import stage as train

# progress(phase, done, total, detail=""): how far a stage's current phase is.
Progress = Callable[..., None]


class Output(Protocol):
    def section(self, title: str) -> None: ...

    def progress(self) -> ContextManager[Progress]: ...

    def report(self, report: Report) -> None: ...


def _spark(config: Config):
    from pipeline.spark import LazySpark
    return LazySpark(config.spark)


@dataclass(frozen=True)
class Stage:
    name: str
    section: str                                   # the config section it reads
    run: Callable[[Config, Progress], StageResult]  # as a pipeline run calls it: resuming, replacing what changed
    check: Callable[[Config], None]                # raises UserError for a config it cannot run with
    report: Callable[[StageResult], Report]
    summary_row: Callable[[StageResult], dict]     # documents, tokens, status, output


def _no_check(config: Config) -> None:
    return None


STAGES: dict[str, Stage] = {stage.name: stage for stage in [
    Stage("ingest", "ingest", lambda c, p: ingest.run_ingest(c, _spark(c), progress=p),
          ingest.check_config, ingest.report, ingest.summary_row),
    Stage("train_reference", "reference", lambda c, p: train.run_train_reference(c, progress=p, retrain=False),
          _no_check, train.report, train.summary_row),
    Stage("score", "score", lambda c, p: scoring.run_score(c, _spark(c), progress=p),
          scoring.check_config, scoring.report, scoring.summary_row),
    Stage("distill", "distill", lambda c, p: distill.run_distill(c, _spark(c), progress=p),
          distill.check_config, distill.report, distill.summary_row),
    Stage("correlate", "correlate", lambda c, p: correlate.run_correlate(c, _spark(c), progress=p),
          correlate.check_config, correlate.report, correlate.summary_row),
    Stage("rate", "rate", lambda c, p: rating.run_rate(c, _spark(c), progress=p),
          rating.check_config, rating.report, rating.summary_row),
    Stage("select", "select", lambda c, p: selection.run_select(c, overwrite=True),
          _no_check, selection.report, selection.summary_row),
    Stage("mix", "mix", lambda c, p: mixing.run_mix(c, progress=p),
          mixing.check_config, mixing.report, mixing.summary_row),
    Stage("export", "export", lambda c, p: export.run_export(c, _spark(c), progress=p, overwrite=True),
          export.check_config, export.report, export.summary_row),
    Stage("evaluate", "evaluate", lambda c, p: evaluation.run_evaluate(c, progress=p),
          evaluation.check_config, evaluation.report, evaluation.summary_row),
]}


def load_run_config(path: str | Path | None, overrides: dict[str, Any], will_train: bool = False) -> Config:
    """The config of a command: the file (or the defaults), the CLI's overrides, and the configured
    reference model as the scorer when score.model is unset and the model exists (or will)."""
    return train.with_reference_model(apply_overrides(load_config(path), overrides), will_train)


def check_stages(config: Config) -> Config:
    """Catch a config that cannot run to the end before the first stage starts; returns it with the
    reference model as the scorer when this run trains it and score.model is unset."""
    unknown = [s for s in config.stages if s not in STAGES]
    if unknown:
        raise UserError(f"stages: unknown stage(s) {', '.join(map(repr, unknown))}; the stages are "
                        f"{', '.join(STAGES)}")
    config = train.with_reference_model(config, will_train="train_reference" in config.stages)
    for name in config.stages:
        STAGES[name].check(config)
    return config


def run_pipeline(config: Config, output: Output) -> list[dict]:
    """Run config.stages in pipeline order, each resuming what is finished; returns one summary row
    per stage (stage, seconds, documents, tokens, status, output, and the stage's result)."""
    config = check_stages(config)
    rows = []
    for stage in [s for name, s in STAGES.items() if name in config.stages]:
        output.section(stage.name)
        started = time.time()
        with output.progress() as progress:
            result = stage.run(config, progress)
        output.report(stage.report(result))
        rows.append({"stage": stage.name, "seconds": time.time() - started, **stage.summary_row(result),
                     "result": result})
    return rows


def run_summary(rows: list[dict], started: float) -> Report:
    """The closing report of a run: documents and tokens through each stage, time, and outputs."""
    table = pa.Table.from_pylist([{"stage": r["stage"], "status": r["status"], "documents": r.get("documents"),
                                   "tokens": r.get("tokens"), "time": f"{r['seconds']:.0f}s", "output": r["output"]}
                                  for r in rows],
                                 schema=pa.schema([("stage", pa.string()), ("status", pa.string()),
                                                   ("documents", pa.int64()), ("tokens", pa.int64()),
                                                   ("time", pa.string()), ("output", pa.string())]))
    stage = {r["stage"]: r for r in rows}
    parts = []
    if "ingest" in stage:
        parts.append(f"documents in {stage['ingest']['documents']:,}")
    if "select" in stage:
        parts.append(f"kept {stage['select']['documents']:,}")
    if "export" in stage:
        parts.append(f"out {stage['export']['documents']:,} ({stage['export']['tokens']:,} tokens)")
    notes = [", ".join(parts) + f"; total time {time.time() - started:.0f}s"]
    if "export" in stage:
        notes.append(f"training shards: {stage['export']['output']} (manifest.json lists every shard)")
    return Report("", tables=[("curate run: summary", table)], notes=notes)


class TextOutput:
    """An Output as plain text: reports on stdout, progress on stderr (at most every 10 seconds)."""

    def section(self, title: str) -> None:
        print(f"== {title} ==", flush=True)

    @contextmanager
    def progress(self) -> Iterator[Progress]:
        last: dict[str, float] = {}

        def report(phase: str, done: int, total: int | None, detail: str = "") -> None:
            if time.time() - last.get(phase, 0.0) >= 10 or done == total:
                last[phase] = time.time()
                print(f"{phase}: {done}/{total if total is not None else '?'} {detail}".rstrip(), file=sys.stderr)
        yield report

    def report(self, report: Report) -> None:
        print(report.text(), flush=True)
