"""Starting a Spark session (embedded local[*] by default, a standalone cluster with a master URL),
and running a stage's Spark action with progress and one clear error."""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

from pipeline.config import SparkConfig
from pipeline.errors import UserError
from pipeline.logs import log_detail, log_file

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
               .config("spark.driver.extraJavaOptions",
                       f"-Dlog4j2.configurationFile=file:{log4j} -Dcurate.log.file={log_file()}")
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
    spark.sparkContext.setLogLevel("WARN")
    if not local:
        _ship_code(spark)
    return spark


class LazySpark:
    """A SparkSession started on first use: a stage checks its inputs, models and the store lock
    before paying Spark's start-up (~10 s), so a mistake is reported at once."""

    def __init__(self, cfg: SparkConfig):
        self.cfg, self._session = cfg, None
        self.start_s = 0.0  # how long starting took: stages report their own time without it

    @property
    def started(self) -> bool:
        return self._session is not None

    def __getattr__(self, name: str):
        if self._session is None:
            started = time.time()
            self._session = get_spark(self.cfg)
            _warm_workers(self._session)
            self.start_s = round(time.time() - started, 3)
        return getattr(self._session, name)


def _warm_up() -> None:
    import pyarrow.dataset  # noqa: F401  (imports pandas: the slowest import of a task)

    import pipeline.store  # noqa: F401


def _warm_workers(spark) -> None:
    """Start the Python workers (and their imports, ~1 s each) now, as part of Spark's start-up: they
    are reused by every later job, whose time is then the work's."""
    sc = spark.sparkContext
    n = sc.defaultParallelism
    sc.parallelize(range(n), n).foreach(lambda _: _warm_up())


def is_small_local(spark, work_bytes: int, limit_bytes: int) -> bool:
    """Whether work of `work_bytes` is better done in this process than by starting Spark: the session
    is not started yet, its master is the embedded local one, and the work is under `limit_bytes`
    (starting Spark and its Python workers takes ~10 s on 2 cores)."""
    return (isinstance(spark, LazySpark) and not spark.started and spark.cfg.master.startswith("local")
            and work_bytes <= limit_bytes)


def map_tasks(spark, items: list, fn: Callable[[Any], Any], job_group: str, description: str,
              failure_message: Callable[[str], str], progress: Callable[[int], None] | None = None,
              weight: Callable[[Any], int] = lambda item: 1) -> list:
    """[fn(item) for item in items]: one Spark task per item, all at once, or in this process when
    `spark` is None. `progress(done)` is called as items finish (twice a second with Spark), `done`
    the summed `weight` of the finished items."""
    if spark is None:
        out, finished = [], 0
        for item in items:
            try:
                out.append(fn(item))
            except UserError:
                raise
            except Exception as e:  # as a failed Spark task reads: one line, the traceback in the log
                from pipeline.logs import log_exception
                log_exception(e, f"task of {job_group} ({description}) failed")
                raise UserError(failure_message(f"{type(e).__name__}: {e}")) from None
            finished += weight(item)
            if progress:
                progress(finished)
        return out
    done = spark.sparkContext.accumulator(0)

    def task(item):
        result = fn(item)
        done.add(weight(item))
        return result
    report = (lambda: progress(done.value)) if progress else (lambda: None)
    rdd = spark.sparkContext.parallelize(items, numSlices=max(1, len(items)))
    out = run_action(spark, job_group, description, rdd.map(task).collect, report, failure_message)
    report()
    return out


def run_action(spark, job_group: str, description: str, action: Callable[[], Any], report: Callable[[], None],
               failure_message: Callable[[str], str]) -> Any:
    """Run a Spark action (e.g. `df.collect`, `df.toArrow`) in a thread, calling `report` twice a second
    until it ends, and return its result.

    Why not toLocalIterator: it runs one job per partition, about two at a time, which leaves most
    cores idle; one action runs every partition at once, and accumulators carry the progress (a
    task's updates reach the driver when the task ends).
    On a failed task or Ctrl-C the job group is cancelled and its tasks waited for, so that what they
    wrote is final (and a re-run cannot race them). A failed task raises
    UserError(failure_message(task_error(error))), the message built after that wait."""
    from pyspark import InheritableThread
    sc = spark.sparkContext
    outcome: dict[str, Any] = {}

    def target():
        sc.setJobGroup(job_group, description, interruptOnCancel=True)
        try:
            outcome["value"] = action()
        except BaseException as e:  # handed to the calling thread below
            outcome["error"] = e
    thread = InheritableThread(target=target, daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
            report()
    except BaseException:  # Ctrl-C (or a failing report)
        cancel_and_wait(sc, job_group)
        raise
    if "error" in outcome:
        cancel_and_wait(sc, job_group)  # the failed task's siblings may still be writing
        log_detail(f"Spark job {job_group} ({description}) failed", str(outcome["error"]))
        raise UserError(failure_message(task_error(outcome["error"]))) from None
    return outcome["value"]


def cancel_and_wait(sc, job_group: str, timeout_s: float = 120.0) -> None:
    """Cancel a job group and wait, within a bound, until none of its tasks is still running."""
    sc.cancelJobGroup(job_group)
    tracker = sc.statusTracker()

    def running() -> bool:
        for job in tracker.getJobIdsForGroup(job_group):
            info = tracker.getJobInfo(job)
            for stage in info.stageIds if info else ():
                stage_info = tracker.getStageInfo(stage)
                if stage_info and stage_info.numActiveTasks > 0:
                    return True
        return False
    deadline = time.time() + timeout_s
    while running() and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(2.5)  # spark.python.task.killTimeout: a killed task's Python worker is stopped after 2 s


def task_error(error: BaseException) -> str:
    """The Python error inside a Spark task failure (a UserError's own message when it is one)."""
    lines = str(error).splitlines()
    user = [line.split("UserError:", 1)[1].strip() for line in lines if "UserError:" in line]
    # "pipeline.scoring.engines.ScoringInterruptedError: ..." -> "ScoringInterruptedError: ..."
    python = [re.sub(r"^(\w+\.)+", "", line.strip()) for line in lines if re.match(r"^[\w.]*(Error|Exception): ", line)]
    if user or python:
        return (user or python)[-1]
    return lines[0] if lines else type(error).__name__
