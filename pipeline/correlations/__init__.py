"""Perplexity-benchmark correlations (Thrush et al., ICLR 2025): which domains' bits-per-byte go with
benchmark performance across a ladder of models, and the sampling weights that follow."""
