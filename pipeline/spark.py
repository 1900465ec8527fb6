"""Starting a Spark session: embedded local[*] by default, a standalone cluster with a master URL."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from pipeline.config import SparkConfig
from pipeline.errors import UserError

_PACKAGES = ("pipeline", "schemas")


def _ship_code(spark) -> None:
    """Send this package to the executors, so a cluster needs only the dependencies installed."""
    root = Path(__file__).resolve().parent.parent
    tmp = Path(tempfile.mkdtemp(prefix="curate-code-")) / "curate_code.zip"
    with zipfile.ZipFile(tmp, "w") as zf:
        for pkg in _PACKAGES:
            for f in (root / pkg).rglob("*.py"):
                zf.write(f, f.relative_to(root))
    spark.sparkContext.addPyFile(str(tmp))


def get_spark(cfg: SparkConfig):
    """A SparkSession for `cfg.master`; the same Python interpreter runs the driver and the workers."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise UserError("Spark needs Java 17 or newer: install a JDK (e.g. apt-get install openjdk-17-jre-headless)")
    from pyspark.sql import SparkSession

    local = cfg.master.startswith("local")
    if local:
        # Bind to loopback: an embedded run needs no network and must not listen on external interfaces.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    log4j = Path(__file__).with_name("log4j2.properties")
    builder = (SparkSession.builder.master(cfg.master).appName(cfg.app_name)
               .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log4j}")
               .config("spark.driver.memory", cfg.driver_memory)
               .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.session.timeZone", "UTC"))
    for key, value in cfg.conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as e:  # py4j / JVM start-up errors are long; the first line says what happened
        raise UserError(f"could not start Spark with master {cfg.master!r}: {str(e).splitlines()[0]}") from None
    spark.sparkContext.setLogLevel("ERROR")
    if not local:
        _ship_code(spark)
    return spark
