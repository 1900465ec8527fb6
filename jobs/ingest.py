"""Spark entry point of the ingest stage.

    spark-submit jobs/ingest.py --config run.yaml [--master spark://host:7077] [--overwrite]

The same code runs in-process for `curate ingest` on the embedded local[*] default.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from pipeline.config import apply_overrides, load_config
    from pipeline.errors import UserError
    from pipeline.ingest import run_ingest
    from pipeline.spark import get_spark

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--master", help="overrides spark.master (spark-submit's own --master also works)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = apply_overrides(load_config(args.config), {"spark.master": args.master})
        result = run_ingest(cfg, spark=get_spark(cfg.spark), overwrite=args.overwrite,
                            progress=lambda phase, done, total: print(f"{phase}: {done}/{total}", file=sys.stderr))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"run_id": result.run_id, "counts": result.counts, "reasons": result.reasons,
                      "timings": result.timings}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
