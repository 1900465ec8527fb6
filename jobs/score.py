"""Spark entry point of the score stage.

    spark-submit jobs/score.py --config run.yaml [--master spark://host:7077]

Scores `docs` under `score.model` (an engine inside each worker) or through `score.service_url`
(the scoring service), into scores/scorer=<id>/. Re-running resumes. The same code runs
in-process for `curate score` on the embedded local[*] default.
"""
import sys

from jobs.common import run_stage


def main(argv: list[str] | None = None) -> int:
    from pipeline.scoring.stage import run_score
    return run_stage(__doc__, run_score, argv)


if __name__ == "__main__":
    sys.exit(main())
