"""Spark entry point of the correlate stage.

    spark-submit jobs/correlate.py --config run.yaml [--master spark://host:7077]

A domain-stratified sample of `docs` is scored under every model of correlate.models (and the small
ladder it trains when correlate.ladder.rungs > 0); with the models' benchmark errors (a leaderboard
file, or `curate benchmark` on a task) the estimators say which domains go with lower error, the
projection turns that into sampling weights, and a fastText page selector scores every document into
correlations/<name>/page_scores/. Re-running resumes the scoring. The same code runs in-process for
`curate correlate` on the embedded local[*] default.
"""
import sys

from jobs.common import run_stage


def main(argv: list[str] | None = None) -> int:
    from pipeline.correlations.stage import run_correlate
    return run_stage(__doc__, run_correlate, argv)


if __name__ == "__main__":
    sys.exit(main())
