"""Spark entry point of the ingest stage.

    spark-submit jobs/ingest.py --config run.yaml [--master spark://host:7077] [--overwrite]

The same code runs in-process for `curate ingest` on the embedded local[*] default.
"""
import sys

from jobs.common import run_stage


def main(argv: list[str] | None = None) -> int:
    from pipeline.ingest.stage import run_ingest
    return run_stage(__doc__, run_ingest, argv, flags=("overwrite",))


if __name__ == "__main__":
    sys.exit(main())
