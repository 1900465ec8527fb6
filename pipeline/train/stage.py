"""Train-reference stage: a small LM trained on a random split of the store's documents.

As in perplexity pruning with small reference models (Ankner et al.): the reference split is chosen
per document by a seeded hash (`train.reference.split_reference`), the model trains on it, and the
split is recorded in `reference_splits/model=<name>/` so selection can exclude documents the
reference model has seen. Without `score.model`, the reference model is the scorer (and the export
tokenizer) of the run (`with_reference_model`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.dataset as ds

import schemas
from pipeline.config import Config, ReferenceConfig, apply_overrides
from pipeline.errors import UserError
from pipeline.scoring.identity import MANIFEST
from pipeline.stage import Report, StageResult, StageRun
from pipeline.store import Store


def read_reference_split(store: Store, rc: ReferenceConfig) -> tuple[list[str], list[str], str]:
    """(doc_ids, texts) of the reference split, ordered by doc_id (so the training data, and the model,
    do not depend on the order the store is read in), and what it took, in words; reads the texts of
    that split only."""
    from pipeline.train.reference import split_reference
    parts = [store.path("docs", f) for f in store.list_files("docs", suffix=".parquet")]
    dataset = ds.dataset(parts, filesystem=store.fs, format="parquet")
    ids = dataset.to_table(columns=["doc_id"])["doc_id"].to_pylist()
    chosen = split_reference(ids, rc.reference_fraction, rc.seed, rc.min_reference_docs, rc.max_reference_fraction)
    if not chosen:
        raise UserError("the reference split is empty: raise reference.reference_fraction or min_reference_docs")
    texts: dict[str, str] = {}
    for batch in dataset.to_batches(columns=["doc_id", "text"]):
        for doc_id, text in zip(batch["doc_id"].to_pylist(), batch["text"].to_pylist()):
            if doc_id in chosen:
                texts[doc_id] = text
    ordered = sorted(texts)
    return ordered, [texts[d] for d in ordered], split_rule(rc, len(chosen), len(split_reference(
        ids, rc.reference_fraction, rc.seed)), len(ids))


def reference_out(config: Config) -> Path:
    """Where the reference model goes: reference.out, else <store>/models/<model name>."""
    if config.reference.out:
        return Path(config.reference.out)
    return Path(Store(config.store).path("models", config.reference.model_name))


def is_trained(config: Config) -> bool:
    return (reference_out(config) / MANIFEST).is_file()


def with_reference_model(config: Config, will_train: bool = False) -> Config:
    """Without score.model (or a service), the configured reference model is the scorer (and the
    export tokenizer) once it exists, or when this run trains it."""
    if config.score.model or config.score.service_url:
        return config
    if will_train or is_trained(config):
        out = str(reference_out(config))
        config = apply_overrides(config, {"reference.out": out, "score.model": out})
    return config


def run_train_reference(config: Config, progress: Callable | None = None, retrain: bool = True) -> StageResult:
    """Train the reference model of `config.reference` on the store. A model already at its place is
    kept when not `retrain` (the pipeline run). `progress("train", step, total_steps, detail=losses)`.
    outputs: out_dir, and the trainer's summary (params, steps, losses, ...) when it trained."""
    from pipeline.scoring.core import quiet_transformers
    from pipeline.train.reference import train_reference
    out = reference_out(config)
    run = StageRun("train_reference", config, requires=("docs",))
    if not retrain and is_trained(config):
        return run.skip({}, out_dir=str(out))
    quiet_transformers()
    with run:
        rc = config.reference
        with run.phase("read"):
            doc_ids, texts, rule = read_reference_split(run.store, rc)
        with run.phase("train"):
            summary = train_reference(texts, out, rc, progress=_losses_shown(progress) if progress else None)
        heldout = set(summary["heldout_doc_indexes"])
        table = pa.table({"doc_id": doc_ids, "model_name": [rc.model_name] * len(doc_ids),
                          "heldout": [i in heldout for i in range(len(doc_ids))]})
        run.store.write_table(table, schemas.REFERENCE_SPLIT, "reference_splits", f"model={rc.model_name}",
                              "part-00000.parquet")
        summary.update(reference_docs=len(doc_ids), split_rule=rule)
        counts = {"reference_docs": len(doc_ids), "heldout_docs": len(heldout), "steps": summary["steps"],
                  "params": summary["params"], "train_tokens": summary["n_train_tokens"]}
        return run.finish(counts, out_dir=str(out), summary=summary)


def split_rule(rc: ReferenceConfig, taken: int, plain: int, n_store: int) -> str:
    """What the split took and which setting decided it (`plain`: the size by reference_fraction alone)."""
    if taken == plain:
        why = f"reference_fraction {rc.reference_fraction:g}"
    elif taken < rc.min_reference_docs:
        why = (f"min_reference_docs {rc.min_reference_docs:,}, capped at max_reference_fraction "
               f"{rc.max_reference_fraction:g}")
    else:
        why = f"min_reference_docs {rc.min_reference_docs:,}"
    return (f"{taken:,} of {n_store:,} documents ({taken / max(n_store, 1):.1%}, by {why}); selections made "
            f"with this model's scores leave them out")


def _losses_shown(progress: Callable) -> Callable:
    """The trainer's progress(step, total, train_loss, heldout_loss) as a stage's progress, with the
    latest train and held-out losses as its detail."""
    latest: dict[str, float] = {}

    def on_step(step: int, total: int, train_loss: float | None, heldout_loss: float | None) -> None:
        if train_loss is not None:
            latest["train"] = train_loss
        if heldout_loss is not None:
            latest["held-out"] = heldout_loss
        progress("train", step, total, detail=" ".join(f"{k} {latest[k]:.3f}" for k in ("train", "held-out")
                                                       if k in latest))
    return on_step


def report(result: StageResult) -> Report:
    out = result.outputs["out_dir"]
    if result.skipped:
        return Report("", notes=[f"reference model {out}: already trained (kept)"])
    s = result.outputs["summary"]
    return Report("", notes=[
        f"reference model {out}: {s['params']:,} parameters, {s['steps']} steps on {s['reference_docs']:,} documents "
        f"({s['n_train_tokens']:,} tokens, {s['tokens_per_second']:,.0f} tokens/s); "
        f"held-out loss {s['initial_heldout_loss']:.3f} -> {s['final_heldout_loss']:.3f}",
        f"reference split: {s['split_rule']}"])


def summary_row(result: StageResult) -> dict:
    return {"status": "up to date" if result.skipped else "trained", "output": result.outputs["out_dir"]}
