"""Perplexity scoring: a pure core (`core`) and thin engines around it.

`TorchEngine` (transformers on torch) lives in `pipeline.scoring.torch_engine` and is imported
from there, so this package imports without the optional `torch` extra.
"""
from pipeline.scoring.core import (
    EncodedDoc,
    ScorerIdentity,
    encode,
    error_row,
    length_sorted_batches,
    plan_windows,
    score_row,
    scored_bytes,
)

__all__ = [
    "EncodedDoc", "ScorerIdentity", "encode", "error_row", "length_sorted_batches",
    "plan_windows", "score_row", "scored_bytes",
]
