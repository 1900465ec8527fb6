"""Spark entry point of the export stage.

    spark-submit jobs/export.py --config run.yaml [--master spark://host:7077] [--overwrite]

Writes the kept documents of `export.selection` as training shards (Parquet, JSONL.zst or token
binaries) plus manifest.json into exports/<export.name>/. Re-running resumes an unfinished export
and skips a finished one; --overwrite replaces an export made with another configuration. The same
code runs in-process for `curate export` on the embedded local[*] default.
"""
import sys

from jobs.common import run_stage


def main(argv: list[str] | None = None) -> int:
    from pipeline.export.stage import run_export
    return run_stage(__doc__, run_export, argv, flags=("overwrite",))


if __name__ == "__main__":
    sys.exit(main())
