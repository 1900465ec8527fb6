"""Our estimators and projections against the authors' reference implementation (`perplexity-correlations`
0.1.2 on PyPI, which pins numpy 1.26 and so lives in a virtual environment of its own).

    python3 -m venv /tmp/pcenv && /tmp/pcenv/bin/pip install perplexity-correlations==0.1.2
    .venv/bin/python benchmarks/reference_agreement.py --reference-python /tmp/pcenv/bin/python

On random matrices shaped like the paper's (90 models x 2,000 texts, bits per byte, errors in [0, 1]),
with and without tied values, it prints the largest absolute difference of every estimator and of both
projections (tau from random token shares at keep fraction 0.5), and the time each side took.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

METHODS = ("sign_cdf", "sign", "sign_sign", "product", "spearmanr")

REFERENCE = r"""
import json, sys, time
import numpy as np
from perplexity_correlations import estimation, projection
data = np.load(sys.argv[1])
out, times = {}, {}
for name in %(methods)r:
    started = time.perf_counter()
    out[name] = getattr(estimation, name)(data["X"], data["y"])
    times[name] = time.perf_counter() - started
out["linear"] = projection.linear(data["estimate"], data["tau"])
out["l2"] = projection.l2(data["estimate"], data["tau"])
np.savez(sys.argv[2], **out)
print(json.dumps(times))
""" % {"methods": METHODS}


def problem(rng: np.random.Generator, n_models: int, n_texts: int, ties: bool) -> dict:
    X = rng.normal(1.0, 0.15, (n_models, n_texts)) + rng.normal(0, 0.2, (n_models, 1))
    y = np.clip(0.4 + 0.5 * (X.mean(axis=1) - 1.0) + rng.normal(0, 0.03, n_models), 0, 1)
    if ties:   # rounding makes ties inside columns and among the errors
        X, y = np.round(X, 2), np.round(y, 2)
    tokens = rng.integers(1, 10_000, n_texts)
    return {"X": X, "y": y, "tokens": tokens}


def main() -> None:
    from pipeline.correlations import estimators, projection
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-python", required=True, help="python of a venv with perplexity-correlations")
    parser.add_argument("--models", type=int, default=90)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "reference.py"
        script.write_text(REFERENCE)
        for ties in (False, True):
            p = problem(rng, args.models, args.texts, ties)
            ours, mine = {}, {}
            for name in METHODS:
                started = time.perf_counter()
                ours[name] = estimators.estimate(p["X"], p["y"], name)
                mine[name] = time.perf_counter() - started
            tau = projection.caps(p["tokens"], 0.5)
            ours["linear"] = projection.linear(ours["sign_cdf"], tau)
            ours["l2"] = projection.l2(ours["sign_cdf"], tau)
            np.savez(Path(tmp) / "in.npz", X=p["X"], y=p["y"], estimate=ours["sign_cdf"], tau=tau)
            done = subprocess.run([args.reference_python, str(script), str(Path(tmp) / "in.npz"),
                                   str(Path(tmp) / "out.npz")], check=True, capture_output=True, text=True)
            theirs_time = json.loads(done.stdout.strip().splitlines()[-1])
            theirs = np.load(Path(tmp) / "out.npz")
            print(f"{args.models} models x {args.texts} texts, {'with' if ties else 'without'} ties:")
            for name in (*METHODS, "linear", "l2"):
                diff = float(np.max(np.abs(ours[name] - theirs[name])))
                speed = (f"  ours {mine[name]:.3f}s, reference {theirs_time[name]:.3f}s"
                         if name in mine else "")
                print(f"  {name:10s} max |difference| {diff:.3g}{speed}")


if __name__ == "__main__":
    main()
