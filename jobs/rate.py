"""Spark entry point of the rate stage.

    spark-submit jobs/rate.py --config run.yaml [--master spark://host:7077]

An instruct LLM (rate.model, or `curate serve --rater` at rate.service_url) rates a stratified sample of
`docs` DataMan-style into ratings/rater=<id>/; students learn the ratings of rate.students and rate every
document into ratings/rater=<student id>/. Re-running resumes. The same code runs in-process for
`curate rate` on the embedded local[*] default.
"""
import sys

from jobs.common import run_stage


def main(argv: list[str] | None = None) -> int:
    from pipeline.rating.stage import run_rate
    return run_stage(__doc__, run_rate, argv)


if __name__ == "__main__":
    sys.exit(main())
