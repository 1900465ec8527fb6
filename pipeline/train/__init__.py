"""Small causal LMs trained by the pipeline itself: the reference model for perplexity pruning."""
from pipeline.train.reference import (
    ReferenceConfig,
    load_reference_texts,
    reference_key,
    split_reference,
    train_reference,
    train_tokenizer,
)

__all__ = [
    "ReferenceConfig",
    "load_reference_texts",
    "reference_key",
    "split_reference",
    "train_reference",
    "train_tokenizer",
]
