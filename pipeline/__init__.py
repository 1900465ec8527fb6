"""Perplexity-based data curation for LLM pretraining."""
__version__ = "0.1.0"
