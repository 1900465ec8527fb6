"""`curate mix`: data-mixture optimisation with Aioli and its baselines on proxy models."""
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
