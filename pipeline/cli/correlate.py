"""`curate correlate` and `curate benchmark`: perplexity-benchmark correlations over a ladder of models."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli import CONFIG, MASTER, STORE, _config, _run_stage, app
from pipeline.console import RichOutput, console


@app.command()
def correlate(
    store: Optional[str] = STORE,
    config: Optional[Path] = CONFIG,
    name: Optional[str] = typer.Option(None, "--name", "-n", help="correlations/<name>/ (correlate.name)"),
    model: Optional[list[str]] = typer.Option(None, "--model", "-m", help="a model of the ladder: DIR, NAME=DIR or "
                                              "smollm2-135m (repeat it; replaces correlate.models)"),
    rungs: Optional[int] = typer.Option(None, "--rungs", help="small models to train on domain subsets "
                                        "(correlate.ladder.rungs)"),
    leaderboard: Optional[str] = typer.Option(None, "--leaderboard", help="CSV/Parquet of model, benchmark, "
                                              "accuracy (default: curate benchmark on the task)"),
    task: Optional[str] = typer.Option(None, "--task", help="a JSONL multiple-choice task (default: a cloze task "
                                       "from held-out target documents)"),
    target_where: Optional[str] = typer.Option(None, "--target-where", help="docs predicate of the target set"),
    metric: Optional[str] = typer.Option(None, "--metric", help="error | error_norm | bits_per_byte"),
    method: Optional[str] = typer.Option(None, "--method", help="sign_cdf | sign | sign_sign | product | spearmanr"),
    keep_fraction: Optional[float] = typer.Option(None, "--keep-fraction", help="correlate.keep_fraction"),
    report: bool = typer.Option(False, "--report", help="show the stored run's report; compute nothing"),
    master: Optional[str] = MASTER,
):
    """Estimate which domains' bits-per-byte go with benchmark performance across a ladder of models,
    project the estimate onto sampling weights and train a fastText page selector on them. Writes
    store/correlations/<name>/; select with --rule correlation:<name>:<keep fraction>."""
    from pipeline.run import STAGES
    cfg = _config(config, {"store": store, "correlate.name": name, "correlate.models": model or None,
                           "correlate.ladder.rungs": rungs, "correlate.leaderboard": leaderboard,
                           "correlate.task": task, "correlate.target_where": target_where, "correlate.metric": metric,
                           "correlate.method": method, "correlate.keep_fraction": keep_fraction,
                           "spark.master": master})
    if report:
        from pipeline.correlations.report import stored_report
        from pipeline.store import Store
        RichOutput().report(stored_report(Store(cfg.store), cfg.correlate.name))
        return
    STAGES["correlate"].check(cfg)
    _run_stage("correlate", lambda progress: STAGES["correlate"].run(cfg, progress))


@app.command()
def benchmark(
    model: list[str] = typer.Option(..., "--model", "-m", help="a model: DIR, NAME=DIR or smollm2-135m (repeat it)"),
    task: Optional[Path] = typer.Option(None, "--task", help="a JSONL task: {context, choices, gold} per line"),
    make_task: Optional[str] = typer.Option(None, "--make-task", help="instead: build a cloze task from this store's "
                                            "held-out target documents (see --target-where) and write it to --task "
                                            "(default: beside --out)"),
    target_where: Optional[str] = typer.Option(None, "--target-where", help="docs predicate of the target set"),
    items: int = typer.Option(100, "--items", help="cloze items to build"),
    name: Optional[str] = typer.Option(None, "--name", help="the benchmark's name (default: the task file's)"),
    out: Path = typer.Option(Path("leaderboard.csv"), "--out", "-o", help="the leaderboard CSV (appended to)"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
):
    """Multiple-choice accuracy of each model as lm-evaluation-harness scores it (log-likelihood of each
    choice given the context: acc, and acc_norm per byte), plus the gold choices' bits per byte; writes a
    leaderboard CSV that `curate correlate --leaderboard` reads."""
    from pipeline.correlations.sources import run_benchmark
    with RichOutput().progress() as progress:
        table, written = run_benchmark(model, task, out, make_task, target_where, items, name, device, progress)
    from pipeline.console import print_arrow
    print_arrow(table)
    console.print(f"wrote {written}", highlight=False, soft_wrap=True)
