"""VllmRater (vLLM's CPU build) against TorchRater on the same tiny chat model: constrained answers parse
and match; greedy answers are the same text. vLLM runs in a worker process, as in test_vllm_engine.py
(`python test_vllm_rater.py JOB.json`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm.sampling_params", reason="vLLM is not installed (scripts/setup_vllm_env.sh)")
pytest.importorskip("torch")

WORKER_TIMEOUT_S = 600


def _rate_all(job: dict, rater_cls) -> dict:
    docs = [tuple(d) for d in job["docs"]]
    out = {}
    for decoding in ("constrained", "greedy"):
        rater = rater_cls(job["model_dir"], device="cpu", dtype="float32", decoding=decoding, text_tokens=48)
        out[decoding] = {"rows": rater.rate(docs), "identity": rater.identity.to_dict()}
        if hasattr(rater, "llm"):
            core = getattr(getattr(rater.llm, "llm_engine", None), "engine_core", None)
            if hasattr(core, "shutdown"):
                core.shutdown()
        del rater
    return out


def _worker_main(job_path: str) -> None:
    from pipeline.rating.vllm_rater import VllmRater
    job = json.loads(Path(job_path).read_text())
    results = _rate_all(job, VllmRater)
    out = Path(job["out"])
    out.with_suffix(".partial").write_text(json.dumps(results))
    out.with_suffix(".partial").rename(out)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)   # vLLM's CPU build may abort in interpreter teardown; the results are out


def test_vllm_rater_agrees_with_the_torch_rater(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from pipeline.rating.torch_rater import TorchRater
    from tests.helpers import make_tiny_model_dir, random_texts
    model_dir = make_tiny_model_dir(tmp_path / "tiny-chat", chat=True)
    docs = [(f"d{i}", t) for i, t in enumerate(random_texts(12, seed=3))]
    out, job = tmp_path / "rows.json", tmp_path / "job.json"
    job.write_text(json.dumps({"model_dir": str(model_dir), "docs": docs, "out": str(out)}))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    proc = subprocess.run([sys.executable, __file__, str(job)], capture_output=True, text=True,
                          timeout=WORKER_TIMEOUT_S, env=env, cwd=Path(__file__).resolve().parents[2])
    if not out.is_file():
        pytest.fail(f"the vLLM worker wrote no results (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n"
                    f"{proc.stderr[-8000:]}")
    vllm = json.loads(out.read_text())
    torch = _rate_all({"model_dir": str(model_dir), "docs": docs}, TorchRater)

    constrained_v, constrained_t = vllm["constrained"]["rows"], torch["constrained"]["rows"]
    assert all(r["parsed"] and r["error"] is None for r in constrained_v)          # structured outputs: every answer parses
    same = sum(v["answer"] == t["answer"] for v, t in zip(constrained_v, constrained_t))
    assert same >= len(docs) - 1, (same, [(v["answer"], t["answer"]) for v, t in zip(constrained_v, constrained_t)])
    for v in constrained_v:
        assert v["overall_score_expected"] is None or 1 <= v["overall_score_expected"] <= 5
    greedy_v, greedy_t = vllm["greedy"]["rows"], torch["greedy"]["rows"]
    assert sum(v["answer"] == t["answer"] for v, t in zip(greedy_v, greedy_t)) >= len(docs) - 1
    assert all(not v["parsed"] and v["error"] for v in greedy_v)   # a random model's free answer does not parse
    vi, ti = vllm["constrained"]["identity"], torch["constrained"]["identity"]
    assert vi["backend"] == "vllm" and vi["prompt_sha256"] == ti["prompt_sha256"] and vi["rater_id"] != ti["rater_id"]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    _worker_main(sys.argv[1])
