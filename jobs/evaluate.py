"""Spark entry point of the evaluate stage (DuckDB and the proxies run on the driver).

    spark-submit jobs/evaluate.py --config run.yaml

Trains proxy models on exactly the same number of tokens from a random subset of the store and from each
curated arm (evaluate.arms: selection:<name>, export:<name>), over several seeds, and writes their held-out
losses per group and on the target set to store/evaluations/<name>/ (views evaluations, evaluation_runs).
"""
import sys

from jobs.common import run_stage


def main(argv: list[str] | None = None) -> int:
    from pipeline.evaluate.stage import run_evaluate
    return run_stage(__doc__, run_evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
