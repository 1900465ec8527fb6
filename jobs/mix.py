"""Spark entry point of the mix stage (DuckDB and the proxies run on the driver).

    spark-submit jobs/mix.py --config run.yaml

Groups the store's documents (mix.group_by), trains a proxy model per mixing method (stratified, token
share, the fitted log-linear law, Aioli) and writes store/mixtures/<name>.json, which
`curate export --mixture <name>` samples.
"""
import sys

from jobs.common import run_stage


def main(argv: list[str] | None = None) -> int:
    from pipeline.mixing.stage import run_mix
    return run_stage(__doc__, run_mix, argv)


if __name__ == "__main__":
    sys.exit(main())
