"""Spark entry point of the score stage.

    spark-submit jobs/score.py --config run.yaml [--master spark://host:7077]

Scores `docs` under `score.model` (an engine inside each worker) or through `score.service_url`
(the scoring service), into scores/scorer=<id>/. Re-running resumes. The same code runs
in-process for `curate score` on the embedded local[*] default.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from pipeline.config import apply_overrides, load_config
    from pipeline.errors import UserError
    from pipeline.score import run_score
    from pipeline.spark import get_spark

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--master", help="overrides spark.master (spark-submit's own --master also works)")
    args = parser.parse_args(argv)
    try:
        cfg = apply_overrides(load_config(args.config), {"spark.master": args.master})
        result = run_score(cfg, get_spark(cfg.spark),
                           progress=lambda phase, done, total: print(f"{phase}: {done}/{total}", file=sys.stderr))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"run_id": result.run_id, "scorer_id": result.scorer_id, "counts": result.counts,
                      "timings": result.timings}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
