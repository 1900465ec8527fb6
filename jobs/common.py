"""What every Spark entry point does: read --config/--master, run one stage, print its result as JSON."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable


def run_stage(doc: str, stage: Callable, argv: list[str] | None = None, flags: tuple[str, ...] = ()) -> int:
    """`stage(config, spark, progress=..., **flags)` -> StageResult; exit code 2 with one message for
    user errors. Progress goes to stderr; the result (run_id, counts, timings, skipped and the stage's
    outputs) goes to stdout as JSON."""
    from pipeline.config import apply_overrides, load_config
    from pipeline.errors import UserError
    from pipeline.logs import details_logged, log_exception
    from pipeline.run import TextOutput
    from pipeline.spark import LazySpark

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--master", help="overrides spark.master (spark-submit's own --master also works)")
    for flag in flags:
        parser.add_argument(f"--{flag}", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = apply_overrides(load_config(args.config), {"spark.master": args.master})
        with TextOutput().progress() as progress:
            result = stage(cfg, LazySpark(cfg.spark), progress=progress,
                           **{flag: getattr(args, flag) for flag in flags})
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        if details_logged():
            print(f"details: {log_exception(e, 'the error shown')}", file=sys.stderr)
        return 2
    print(json.dumps({"stage": result.stage, "run_id": result.run_id, "counts": result.counts,
                      "timings": result.timings, "skipped": result.skipped, **result.outputs}, indent=2, default=str))
    return 0
