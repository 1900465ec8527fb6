"""Pick a rater by engine name (torch | vllm), importing heavy dependencies only when chosen; a student's
directory loads as a student rater. Every rater has `.identity` (RaterIdentity) and `.rate(docs)`."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from pipeline.errors import UserError


def load_rater(engine: str, model_dir: str | Path, **options):
    """The rater of `model_dir`: options are device, dtype, decoding, text_tokens, token_budget
    (and num_threads for torch on CPU)."""
    from pipeline.rating.students import StudentRater, is_rating_student
    if is_rating_student(model_dir):
        return StudentRater(model_dir)
    if engine == "torch":
        from pipeline.rating.torch_rater import TorchRater
        return TorchRater(model_dir, **options)
    if engine == "vllm":
        if importlib.util.find_spec("vllm") is None:
            from pipeline.scoring.engines import _VLLM_MISSING
            raise UserError(_VLLM_MISSING)
        from pipeline.rating.vllm_rater import VllmRater
        options.pop("num_threads", None)
        return VllmRater(model_dir, **options)
    raise UserError(f"unknown rating engine {engine!r}: choose one of torch, vllm")


def rater_on(engine, model_dir: str | Path, **options):
    """A rater beside the service's scoring `engine`: the torch rater shares the loaded model; vLLM's
    scoring instance is sized to the scoring window, so the vLLM rater starts its own."""
    from pipeline.scoring.torch_engine import TorchEngine
    if isinstance(engine, TorchEngine):
        from pipeline.rating.torch_rater import TorchRater
        return TorchRater(model_dir, device=str(engine.device), dtype=engine.identity.dtype,
                          model=engine.model, **options)
    return load_rater("vllm", model_dir, device=getattr(engine, "device", "cuda"), **options)
