"""Train-reference stage: a small LM trained on a random split of the store's documents.

As in perplexity pruning with small reference models (Ankner et al.): the reference split is chosen
per document by a seeded hash (`train.reference.split_reference`), the model trains on it, and the
split is recorded in `reference_splits/model=<name>/` so selection can exclude documents the
reference model has seen.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.dataset as ds

import schemas
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.store import Store


def read_reference_split(store: Store, fraction: float, seed: int, min_docs: int) -> tuple[list[str], list[str]]:
    """(doc_ids, texts) of the reference split, ordered by doc_id; reads texts of that split only."""
    from pipeline.train.reference import split_reference
    parts = [store.path("docs", f) for f in store.list_files("docs", suffix=".parquet")]
    if not parts:
        raise UserError(f"no documents in {store.uri}/docs: run `curate ingest` first")
    dataset = ds.dataset(parts, filesystem=store.fs, format="parquet")
    ids = dataset.to_table(columns=["doc_id"])["doc_id"].to_pylist()
    chosen = split_reference(ids, fraction, seed, min_docs)
    if not chosen:
        raise UserError("the reference split is empty: raise reference.reference_fraction or min_reference_docs")
    texts: dict[str, str] = {}
    for batch in dataset.to_batches(columns=["doc_id", "text"]):
        for doc_id, text in zip(batch["doc_id"].to_pylist(), batch["text"].to_pylist()):
            if doc_id in chosen:
                texts[doc_id] = text
    ordered = sorted(texts)
    return ordered, [texts[d] for d in ordered]


def trainer_config(config: Config):
    """The trainer's ReferenceConfig for `config.reference`."""
    from pipeline.train.reference import ReferenceConfig
    rc = config.reference
    return ReferenceConfig(vocab_size=rc.vocab_size, hidden_size=rc.hidden_size, num_layers=rc.num_layers,
                           num_heads=rc.num_heads, intermediate_size=4 * rc.hidden_size, max_seq_len=rc.max_seq_len,
                           batch_size=rc.batch_size, max_steps=rc.max_steps, reference_fraction=rc.reference_fraction,
                           min_reference_docs=rc.min_reference_docs, seed=rc.seed, device=rc.device)


def reference_out(config: Config) -> Path:
    """Where the reference model goes: reference.out, else <store>/models/<model name>."""
    if config.reference.out:
        return Path(config.reference.out)
    return Path(Store(config.store).path("models", trainer_config(config).model_name))


def run_train_reference(config: Config, progress: Callable | None = None) -> dict:
    """Train the reference model of `config.reference` on the store; returns the trainer's summary."""
    from pipeline.scoring.core import quiet_transformers
    from pipeline.train.reference import train_reference
    quiet_transformers()
    store = Store(config.store)
    rc = config.reference
    ref = trainer_config(config)
    doc_ids, texts = read_reference_split(store, rc.reference_fraction, rc.seed, rc.min_reference_docs)
    out = reference_out(config)
    summary = train_reference(texts, out, ref, progress=progress)
    heldout = set(summary["heldout_doc_indexes"])
    table = pa.table({"doc_id": doc_ids, "model_name": [ref.model_name] * len(doc_ids),
                      "heldout": [i in heldout for i in range(len(doc_ids))]})
    store.write_table(table, schemas.REFERENCE_SPLIT, "reference_splits", f"model={ref.model_name}", "part-00000.parquet")
    summary["reference_docs"] = len(doc_ids)
    return summary
