"""Correlate stage: from a ladder of models and their benchmark errors, which domains' bits-per-byte go
with benchmark performance (Thrush et al., 2025), the sampling weights that follow, and a page selector
that carries them to every page of the store.

    sample     pages_per_domain pages of every `group_by` domain with min_domain_pages (seeded); the
               target documents (below) are never sampled
    ladder     the configured models, plus `ladder.rungs` small models trained here on seeded domain
               subsets (pipeline.correlations.ladder), never on the sample or the target
    scores     the score stage with each model on the sample (its first max_tokens tokens): rows a
               scorer already wrote are reused
    benchmark  errors from a leaderboard file, or `curate benchmark` on a task: a JSONL file, or a cloze
               task built from target_docs held-out documents (target_where)
    estimate   the token-weighted bits-per-byte matrix, every estimator, the projection onto caps
               tau = token share / keep_fraction
    selector   a fastText classifier of include (the domain has weight) vs exclude on the pages of the
               matrix's domains, 95/5 split, then P(include) of every page of the store

Outputs go to correlations/<name>/ (matrix, benchmarks, estimates, page_scores, selector.bin,
task.jsonl, _correlations.json), written aside and swapped in whole.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

import schemas
from pipeline.config import Config
from pipeline.correlations import estimators, ladder, matrix, projection, selector, tasks
from pipeline.correlations.sources import (SMOLLM2, docs_dataset, make_task, model_entries, parse_entry, read_index,
                                           read_leaderboard, read_texts, smallest_keys, target_ids, task_sha256)
from pipeline.errors import UserError
from pipeline.hashing import short_digest
from pipeline.stage import Report, StageResult, StageRun
from pipeline.store import Store, code_version, utc_now
from schemas import sidecars

STAGE = "correlate"
SCORE_PARTS = 200_000          # page scores per part file


# -- the models ----------------------------------------------------------------------------------------
def scoring_config(config: Config, path: str) -> Config:
    """`config` scoring the first max_tokens tokens of each page (at most the model's context) with the
    model at `path` (a directory, in-process) or the service at `path` (a URL)."""
    from pipeline.scoring.identity import default_max_tokens
    service = "://" in path
    return config.model_copy(update={"score": config.score.model_copy(update={
        "model": None if service else path, "service_url": path if service else None, "where": None,
        "max_tokens": None if service else min(config.correlate.max_tokens, default_max_tokens(path)),
        "truncation": "first_n"})})


def ladder_dir(config: Config) -> Path:
    out = config.correlate.ladder.out
    return Path(out) if out else Path(Store(config.store).path("models", "ladder"))


def train_ladder(config: Config, index, excluded: set[str], domains: list[str], progress=None) -> tuple[list, int]:
    """Train the ladder's rungs that are not already trained with the same settings and documents;
    returns ([(name, dir)], rungs trained now)."""
    cfg = config.correlate.ladder
    rungs = ladder.plan_ladder(domains, cfg)
    if not rungs:
        return [], 0
    eligible = index[~index["doc_id"].isin(excluded)]
    chosen = {r.name: smallest_keys(eligible.loc[eligible["domain"].isin(r.domains), "doc_id"], cfg.max_docs,
                                    f"ladder:{r.seed}") for r in rungs}
    keys = {r.name: short_digest({"rung": r.__dict__, "settings": cfg.model_dump(mode="json"), "docs": chosen[r.name]})
            for r in rungs}
    todo = [r for r in rungs if not ladder.is_trained(ladder_dir(config) / r.name, keys[r.name])]
    if todo:
        from pipeline.scoring.core import quiet_transformers
        quiet_transformers()
    texts = read_texts(Store(config.store), {d for r in todo for d in chosen[r.name]})
    for n, rung in enumerate(todo):
        if progress:
            progress("train the ladder", n, len(todo), rung.name)
        ladder.train_rung(rung, [texts[d] for d in chosen[rung.name]], ladder_dir(config) / rung.name, cfg,
                          keys[rung.name], device=config.score.device)
    if progress and todo:
        progress("train the ladder", len(todo), len(todo), "")
    return [(r.name, str(ladder_dir(config) / r.name)) for r in rungs], len(todo)


def score_sample(config: Config, spark, models: list[tuple[str, str]], sample: list[str], index, progress=None):
    """Score the sample under every model through the score stage (rows already there are reused);
    returns the rows bpb_matrix reads, [{name, path, scorer_id}] and pages scored now."""
    from pipeline.scoring.stage import run_score
    store = Store(config.store)
    domain_of = dict(zip(index["doc_id"], index["domain"]))
    frames, described, scored_now = [], [], 0
    for name, path in models:
        report = (lambda phase, done, total, detail="", name=name: progress(f"score: {name}", done, total, detail)) \
            if progress else None
        result = run_score(scoring_config(config, path), spark, report, doc_ids=sample)
        scorer_id = result.outputs["scorer_id"]
        scored_now += result.counts["scored_now"]
        described.append({"name": name, "path": path, "scorer_id": scorer_id})
        parts = [store.path("scores", f"scorer={scorer_id}", p)
                 for p in store.list_files("scores", f"scorer={scorer_id}", suffix=".parquet")]
        rows = ds.dataset(parts, filesystem=store.fs, format="parquet").to_table(
            columns=["doc_id", "nll_sum", "n_bytes", "n_predicted", "error"],
            filter=ds.field("doc_id").isin(sample)).to_pandas()
        rows.loc[rows["error"].notna(), "nll_sum"] = np.nan
        rows["model"] = name
        frames.append(rows)
    import pandas as pd
    rows = pd.concat(frames, ignore_index=True)
    rows["domain"] = rows["doc_id"].map(domain_of)
    return rows, described, scored_now


# -- the benchmark ------------------------------------------------------------------------------------
def benchmark_table(config: Config, models: list[dict], items: list[tasks.TaskItem], task_sha: str,
                    benchmark: str, progress=None) -> pa.Table:
    """`curate benchmark` on the task for every model, a model's result cached by (scorer, task) in
    <store>/_benchmarks/ so that a re-run measures only new models."""
    from pipeline.correlations.benchmark import choice_logprobs, leaderboard_row
    store = Store(config.store)
    rows = []
    for model in models:
        if "://" in model["path"]:
            raise UserError(f"model {model['name']} is a scoring service: `curate benchmark` needs its "
                            "directory; give correlate.leaderboard for it instead")
        rel = ("_benchmarks", f"{model['scorer_id']}-{task_sha[:16]}.json")
        if store.exists(*rel):
            result = store.read_json(*rel)
        else:
            report = (lambda done, total, name=model["name"]: progress(f"benchmark: {name}", done, total)) \
                if progress else None
            result = tasks.accuracy(items, choice_logprobs(model["path"], items, device=config.score.device,
                                                           progress=report))
            store.atomic_write(rel, lambda p, result=result: _write_text(store, p, json.dumps(result)))
        rows.append(leaderboard_row(model["name"], benchmark, result))
    return pa.Table.from_pylist(rows)


# -- the stage ---------------------------------------------------------------------------------------
def run_correlate(config: Config, spark, progress: Callable | None = None) -> StageResult:
    """Sample, ladder, scores, benchmark, estimates, projection and page selector; see the module.
    outputs: name, estimates (pyarrow table), leaderboard, models, missing, sample, selector metrics."""
    cfg = config.correlate
    run = StageRun(STAGE, config, requires=("docs",))
    store = run.store
    work = ("_staging", STAGE, f"{cfg.name}-{run.run_id}")
    with run:
        with run.phase("sample"):
            index = read_index(store, cfg.group_by, cfg.target_where)
            target = target_ids(config, index)   # held out even when unused: the same sample either way
            pool = index[~index["doc_id"].isin(set(target))]
            picked, left_out = matrix.domain_sample(pool["doc_id"].to_numpy(), pool["domain"].to_numpy(),
                                                    cfg.pages_per_domain, cfg.min_domain_pages, cfg.seed)
            sample = sorted(pool["doc_id"].to_numpy()[picked].tolist())
            domains = sorted(set(pool["domain"].to_numpy()[picked].tolist()))
            if len(domains) < 2:
                raise UserError(f"correlate: {len(domains)} domain(s) have {cfg.min_domain_pages}+ pages "
                                f"(group_by {cfg.group_by!r}); at least 2 are needed: lower min_domain_pages")
        with run.phase("ladder"):
            rungs, trained_now = train_ladder(config, index, set(target) | set(sample), domains, progress)
            models = model_entries(cfg.models, store.path("models")) + rungs
            if len(models) < max(3, cfg.min_models):
                raise UserError(f"correlate: {len(models)} model(s); at least {max(3, cfg.min_models)} are needed "
                                "(correlate.models, or correlate.ladder.rungs to train small ones here)")
        with run.phase("scores"):
            rows, described, scored_now = score_sample(config, spark, models, sample, index, progress)
            try:
                bpb = matrix.bpb_matrix(pa.Table.from_pandas(rows[["model", "doc_id", "domain", "nll_sum", "n_bytes",
                                                                  "n_predicted"]], preserve_index=False))
            except ValueError as e:
                raise UserError(f"correlate: {e}") from None
        with run.phase("benchmark"):
            if cfg.leaderboard:
                board = read_leaderboard(cfg.leaderboard)
                bench = {"source": cfg.leaderboard, "benchmarks": cfg.benchmarks or None, "metric": cfg.metric}
            else:
                items = make_task(config, target)
                sha = task_sha256(items)
                name = Path(cfg.task).stem if cfg.task else "cloze"
                board = benchmark_table(config, described, items, sha, name, progress)
                bench = {"source": cfg.task or f"cloze task from {len(target)} target documents",
                         "benchmarks": [name], "task_sha256": sha, "items": len(items), "target_docs": len(target),
                         "target_where": cfg.target_where, "metric": cfg.metric}
                store.atomic_write((*work, "task.jsonl"), lambda p: _write_text(store, p, _task_jsonl(items)))
            try:
                errors = matrix.benchmark_errors(board, cfg.benchmarks or None, cfg.metric)
                X, y, used, missing = matrix.align(bpb, errors, cfg.min_models)
            except ValueError as e:
                raise UserError(f"correlate: {e}") from None
        with run.phase("estimate"):
            estimates = estimate_domains(config, bpb, X, y, index)
        with run.phase("selector"):
            include = dict(zip(estimates["domain"], estimates["weight"] > 0))
            model, metrics = train_selector(config, index, set(target), include)
            n_scored = write_page_scores(config, store, work, model, include)
            _save_selector(store, work, model)
        store.write_table(_with_run(cfg.name, _matrix_table(bpb, rows)), schemas.BPB_MATRIX, *work, "matrix",
                          "part-00000.parquet")
        board_rows = _leaderboard_rows(board, errors, set(used))
        store.write_table(_with_run(cfg.name, board_rows), schemas.BENCHMARK_RESULTS, *work, "benchmarks",
                          "part-00000.parquet")
        est_table = store.write_table(_with_run(cfg.name, pa.Table.from_pandas(estimates, preserve_index=False)),
                                      schemas.CORRELATION_ESTIMATES, *work, "estimates", "part-00000.parquet")
        sample_info = {"group_by": cfg.group_by, "pages_per_domain": cfg.pages_per_domain,
                       "min_domain_pages": cfg.min_domain_pages, "seed": cfg.seed, "pages": len(sample),
                       "domains": len(domains), "left_out": left_out}
        counts = {"models": len(used), "domains": len(domains), "sample_pages": len(sample),
                  "pages_scored_now": scored_now, "rungs_trained_now": trained_now, "page_scores": n_scored,
                  "left_out_domains": len(left_out), "dropped_pages": bpb.dropped_pages}
        store.write_json(sidecars.CORRELATIONS, {
            "name": cfg.name, "config": cfg.model_dump(mode="json"), "models": described, "sample": sample_info,
            "benchmark": bench, "missing": missing, "dropped_pages": bpb.dropped_pages,
            "selector": metrics, "counts": counts, "timings": run.timings, "code_version": code_version(),
            "created_at": utc_now()}, *work, "_correlations.json")
        store.replace_dir(work, ("correlations", cfg.name))
        store.delete("_staging", STAGE)
        return run.finish(counts, name=cfg.name, config=cfg.model_dump(mode="json"), estimates=est_table, leaderboard=board_rows, missing=missing,
                          sample=sample_info, selector=metrics, models=described)


def estimate_domains(config: Config, bpb: "matrix.BpbMatrix", X: np.ndarray, y: np.ndarray, index):
    """One row per domain: every estimator, the chosen one and its rank, the domain's share of the
    store's tokens (its bytes times the sample's tokens per byte), the cap and the projected weight."""
    import pandas as pd
    cfg = config.correlate
    values = {m: estimators.estimate(X, y, m, center=cfg.double_center) for m in estimators.ESTIMATORS}
    chosen = values[cfg.method]
    store_pages = index.groupby("domain")["doc_id"].count().reindex(bpb.domains).to_numpy()
    store_bytes = index.groupby("domain")["n_bytes"].sum().reindex(bpb.domains).to_numpy()
    tokens = store_bytes * bpb.tokens_per_byte
    tau = projection.caps(tokens, cfg.keep_fraction)
    weight = (projection.linear if cfg.projection == "linear" else projection.l2)(chosen, tau)
    rank = np.empty(len(chosen), dtype=np.int64)
    rank[np.argsort(-chosen, kind="stable")] = np.arange(1, len(chosen) + 1)
    return pd.DataFrame({"domain": bpb.domains, "estimate": chosen, "rank": rank, "method": cfg.method, **values,
                         "pages": bpb.pages, "store_pages": store_pages, "store_bytes": store_bytes,
                         "token_share": tokens / tokens.sum(), "tau": tau, "weight": weight,
                         "projection": cfg.projection})


def train_selector(config: Config, index, target: set[str], include: dict[str, bool]):
    """The fastText selector trained on (at most selector_max_pages) pages of the matrix's domains."""
    cfg = config.correlate
    pages = index[index["domain"].isin(include.keys()) & ~index["doc_id"].isin(target)]
    ids = smallest_keys(pages["doc_id"], cfg.selector_max_pages, f"selector:{cfg.seed}")
    texts = read_texts(Store(config.store), ids)
    domain_of = dict(zip(pages["doc_id"], pages["domain"]))
    labels = np.array([include[domain_of[d]] for d in ids], dtype=bool)
    settings = selector.SelectorSettings(epochs=cfg.selector_epochs, heldout_fraction=cfg.selector_heldout,
                                         seed=cfg.seed)
    try:
        model, metrics = selector.train(ids, [texts[d] for d in ids], labels, settings)
    except ValueError as e:
        raise UserError(f"correlate: {e}") from None
    return model, {**settings.__dict__, **metrics, "include_pages": int(labels.sum()),
                   "exclude_pages": int((~labels).sum())}


def write_page_scores(config: Config, store: Store, work: tuple, model, include: dict[str, bool]) -> int:
    """P(include) of every page of the store, in parts of SCORE_PARTS rows."""
    cfg = config.correlate
    n, part = 0, 0
    for batch in docs_dataset(store).to_batches(columns=["doc_id", cfg.group_by, "text"], batch_size=SCORE_PARTS):
        domains = [None if d is None else str(d) for d in batch.column(cfg.group_by).to_pylist()]
        labels = [None if d not in include else ("include" if include[d] else "exclude") for d in domains]
        table = pa.table({"doc_id": batch.column("doc_id"), "run": [cfg.name] * batch.num_rows,
                          "p_include": selector.predict_include(model, batch.column("text").to_pylist()),
                          "domain": domains, "label": labels})
        store.write_table(table, schemas.PAGE_SCORES, *work, "page_scores", f"part-{part:05d}.parquet")
        n, part = n + batch.num_rows, part + 1
    return n


def _save_selector(store: Store, work: tuple, model) -> None:
    fd, path = tempfile.mkstemp(suffix=".bin", prefix="curate-selector-")
    os.close(fd)
    try:
        model.save_model(path)
        data = Path(path).read_bytes()
    finally:
        os.unlink(path)
    store.atomic_write((*work, "selector.bin"), lambda p: _write_bytes(store, p, data))


def _write_bytes(store: Store, path: str, data: bytes) -> None:
    with store.fs.open_output_stream(path) as f:
        f.write(data)


def _write_text(store: Store, path: str, text: str) -> None:
    _write_bytes(store, path, text.encode("utf-8"))


def _task_jsonl(items: list[tasks.TaskItem]) -> str:
    return "".join(json.dumps({"context": i.context, "choices": list(i.choices), "gold": i.gold}) + "\n" for i in items)


def _with_run(name: str, table: pa.Table) -> pa.Table:
    return table.append_column("run", pa.array([name] * table.num_rows, pa.string()))


def _matrix_table(bpb: "matrix.BpbMatrix", rows) -> pa.Table:
    out = []
    for i, model in enumerate(bpb.models):
        for j, domain in enumerate(bpb.domains):
            out.append({"model": model, "domain": domain, "bits_per_byte": float(bpb.bpb[i, j]),
                        "pages": int(bpb.pages[j]), "tokens": int(bpb.tokens[i, j])})
    return pa.Table.from_pylist(out)


def _leaderboard_rows(board: pa.Table, errors: dict[str, float], used: set[str]) -> pa.Table:
    """The leaderboard as stored: its known columns (missing ones null), `error` from accuracy when only
    that was given, and whether each model is in the estimate."""
    frame = board.to_pandas()
    if "error" not in frame and "accuracy" in frame:
        frame["error"] = 1 - frame["accuracy"]
    columns = ["model", "benchmark", "accuracy", "accuracy_norm", "error", "bits_per_byte", "items"]
    frame = frame.reindex(columns=columns)
    frame["used"] = frame["model"].isin(used)
    return pa.Table.from_pandas(frame, preserve_index=False)


def report(result: StageResult) -> Report:
    from pipeline.correlations.report import result_report
    return result_report(result)


def summary_row(result: StageResult) -> dict:
    c = result.counts
    return {"documents": c["page_scores"], "tokens": None,
            "status": f"{c['models']} models x {c['domains']} domains, {c['pages_scored_now']:,} page scores new",
            "output": f"correlations/{result.outputs['name']}/"}


def check_config(config: Config) -> None:
    """What can be told before a run starts: the models, files and counts."""
    cfg = config.correlate
    for entry in cfg.models:
        path = parse_entry(entry)[1]
        if path == SMOLLM2:
            from pipeline.scoring.smollm2 import smollm2_gguf_path
            smollm2_gguf_path()   # a UserError saying how to install it when it is missing
        elif "://" not in path and not (Path(path) / "config.json").is_file():
            raise UserError(f"correlate.models: {path!r} is not a model directory (no config.json)")
    n_models = len(cfg.models) + cfg.ladder.rungs
    if n_models < max(3, cfg.min_models):
        raise UserError(f"correlate: {n_models} model(s) configured (models + ladder.rungs); at least "
                        f"{max(3, cfg.min_models)} are needed (correlate.min_models)")
    for key in ("leaderboard", "task"):
        path = getattr(cfg, key)
        if path and not Path(path).is_file():
            raise UserError(f"correlate.{key} {path!r}: no such file")
