"""Spark entry point of the distill stage.

    spark-submit jobs/distill.py --config run.yaml [--master spark://host:7077]

The teacher (distill.teacher) scores a stratified sample of `docs`, a student is fitted to its scores,
and the student scores every document into scores/scorer=<student id>/. Re-running resumes. The same
code runs in-process for `curate distill` on the embedded local[*] default.
"""
import sys

from jobs.common import run_stage


def main(argv: list[str] | None = None) -> int:
    from pipeline.distill.stage import run_distill
    return run_stage(__doc__, run_distill, argv)


if __name__ == "__main__":
    sys.exit(main())
