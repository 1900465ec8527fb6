"""`curate mix` (data-mixture optimisation with Aioli and its baselines on proxy models) and `curate evaluate`
(does a curation choice help: proxies on curated and random data at equal tokens)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli import CONFIG, STORE, _config, _run_stage, app


@app.command()
def mix(
    store: Optional[str] = STORE,
    config: Optional[Path] = CONFIG,
    name: Optional[str] = typer.Option(None, "--name", "-n", help="store/mixtures/<name>.json (mix.name)"),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="a DuckDB expression over docs (mix.group_by)"),
    where: Optional[str] = typer.Option(None, "--where", help="a DuckDB predicate over docs"),
    selection: Optional[str] = typer.Option(None, "--selection", help="only this selection's kept documents"),
    steps: Optional[int] = typer.Option(None, "--steps", help="training steps of each proxy (mix.steps)"),
    method: Optional[list[str]] = typer.Option(None, "--method", help="stratified | token_share | log_linear | aioli "
                                               "(repeat it; replaces mix.methods)"),
    use: Optional[str] = typer.Option(None, "--use", help="the method whose proportions become the weights"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda"),
):
    """Find a data mixture over groups of the store: train a small proxy model under each method (stratified,
    token share, a fitted log-linear mixing law, Aioli) and compare their held-out losses. Writes
    store/mixtures/<name>.json; export with curate export --mixture <name>."""
    from pipeline.run import STAGES
    cfg = _config(config, {"store": store, "mix.name": name, "mix.group_by": group_by, "mix.where": where,
                           "mix.selection": selection, "mix.steps": steps, "mix.methods": method or None,
                           "mix.use": use, "mix.proxy.device": device})
    _run_stage("mix", lambda progress: STAGES["mix"].run(cfg, progress))


@app.command()
def evaluate(
    store: Optional[str] = STORE,
    config: Optional[Path] = CONFIG,
    name: Optional[str] = typer.Option(None, "--name", "-n", help="store/evaluations/<name>/ (evaluate.name)"),
    arm: Optional[list[str]] = typer.Option(None, "--arm", help="selection:<name> or export:<name> (repeat it; "
                                            "default: selection:<select.name>)"),
    pool_where: Optional[str] = typer.Option(None, "--pool-where", help="the random arm's documents (a DuckDB predicate)"),
    target_where: Optional[str] = typer.Option(None, "--target-where", help="the target set: documents held out "
                                               "from every arm, e.g. \"host = 'docs.python.org'\""),
    target_file: Optional[str] = typer.Option(None, "--target-file", help="or a JSONL (.gz) / Parquet file of texts"),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="the held-out groups (a DuckDB expression over docs)"),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="proxies per arm (evaluate.seeds)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="training steps of each proxy (evaluate.steps)"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda"),
):
    """Does a curation choice help? Train small proxy models on exactly the same number of tokens from a random
    subset of the store and from each curated selection or export, over several seeds, and compare their
    held-out losses per group and on a target set (mean, spread, and whether the difference exceeds the spread).
    Writes store/evaluations/<name>/ (views evaluations, evaluation_runs)."""
    from pipeline.run import STAGES
    cfg = _config(config, {"store": store, "evaluate.name": name, "evaluate.arms": arm or None,
                           "evaluate.pool_where": pool_where, "evaluate.target_where": target_where,
                           "evaluate.target_file": target_file, "evaluate.group_by": group_by,
                           "evaluate.seeds": seeds, "evaluate.steps": steps, "evaluate.proxy.device": device})
    _run_stage("evaluate", lambda progress: STAGES["evaluate"].run(cfg, progress))
