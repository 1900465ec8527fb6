"""What every Spark entry point does: read --config/--master, run one stage, print its result as JSON."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable


def run_stage(doc: str, stage: Callable, result_fields: tuple[str, ...], argv: list[str] | None = None,
              flags: tuple[str, ...] = ()) -> int:
    """`stage(config, spark, progress=..., **flags)`; exit code 2 with one message for user errors."""
    from pipeline.config import apply_overrides, load_config
    from pipeline.errors import UserError
    from pipeline.spark import get_spark

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--master", help="overrides spark.master (spark-submit's own --master also works)")
    for flag in flags:
        parser.add_argument(f"--{flag}", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = apply_overrides(load_config(args.config), {"spark.master": args.master})
        result = stage(cfg, get_spark(cfg.spark),
                       progress=lambda phase, done, total: print(f"{phase}: {done}/{total}", file=sys.stderr),
                       **{flag: getattr(args, flag) for flag in flags})
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({name: getattr(result, name) for name in result_fields}, indent=2))
    return 0
