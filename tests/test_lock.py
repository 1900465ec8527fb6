"""The store's writer lock, with real processes: a second writer fails naming the first, a killed
holder's lock is taken over and its run marked abandoned, and writers in turn never interleave."""
import json
import subprocess
import sys
import time

import pytest

from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.ingest.stage import run_ingest
from pipeline.lock import LOCK_FILE, StoreLock
from pipeline.stage import StageRun
from pipeline.store import Store

HOLD = """
import sys, time
from pipeline.config import Config
from pipeline.stage import StageRun
run = StageRun(sys.argv[2], Config.model_validate({"store": sys.argv[1]}))
with run:
    print(run.run_id, flush=True)
    time.sleep(float(sys.argv[3]))
    run.finish({})
"""


def _hold(store: str, stage: str = "ingest", seconds: float = 60) -> tuple[subprocess.Popen, str]:
    """A separate process running a stage that holds the store's lock; returns it and its run id."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, store, stage, str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    run_id = proc.stdout.readline().strip()
    assert run_id, "the holding process did not start"
    return proc, run_id


def _config(tmp_path, **extra) -> Config:
    return Config.model_validate({"store": str(tmp_path / "store"), **extra})


def test_a_second_ingest_fails_naming_the_running_one(tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "a document"}) + "\n")
    config = _config(tmp_path, ingest={"inputs": [str(tmp_path / "in.jsonl")]})
    proc, holder = _hold(config.store)
    try:
        with pytest.raises(UserError, match=f"in use by ingest run {holder} \\(pid {proc.pid}"):
            run_ingest(config, spark=None)
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_runs_lock_is_taken_over_and_its_record_marked_abandoned(tmp_path):
    config = _config(tmp_path)
    store = Store(config.store)
    proc, killed = _hold(config.store, stage="score")
    proc.kill()  # SIGKILL: no chance to release the lock or finish the record
    proc.wait()
    assert store.exists(LOCK_FILE) and store.run_record("score", killed)["status"] == "running"

    run = StageRun("score", config)
    with run:
        assert run.lock.taken_over["run_id"] == killed and run.abandoned == [killed]
        run.finish({})
    record = store.run_record("score", killed)
    assert record["status"] == "abandoned" and run.run_id in record["error"] and record["finished_at"]
    assert store.run_record("score", run.run_id)["status"] == "finished"
    assert not store.exists(LOCK_FILE)


def test_a_waiting_writer_gets_the_lock_when_the_holder_finishes(tmp_path):
    store = Store(tmp_path / "store")
    proc, _ = _hold(store.uri, seconds=1.5)
    try:
        with StoreLock(store, "select", "waiter", wait_s=30) as lock:
            assert StoreLock.read(store)["token"] == lock.holder["token"]
    finally:
        proc.wait()
    assert proc.returncode == 0 and not store.exists(LOCK_FILE)


def test_a_foreign_hosts_lock_is_stale_only_when_its_heartbeat_stops(tmp_path):
    store = Store(tmp_path / "store")
    store.fs.create_dir(store.base, recursive=True)
    foreign = {"stage": "export", "run_id": "far", "pid": 1, "host": "another-machine", "token": "t",
               "started_at": "2026-01-01T00:00:00+00:00", "heartbeat": time.time()}
    (tmp_path / "store" / LOCK_FILE).write_text(json.dumps(foreign))
    with pytest.raises(UserError, match="in use by export run far .*on another-machine"):
        StoreLock(store, "ingest", "mine").acquire()
    (tmp_path / "store" / LOCK_FILE).write_text(json.dumps({**foreign, "heartbeat": time.time() - 3600}))
    with StoreLock(store, "ingest", "mine") as lock:
        assert lock.taken_over["run_id"] == "far"


COUNT = """
import sys, time
from pipeline.lock import StoreLock
from pipeline.store import Store
store, counter = Store(sys.argv[1]), sys.argv[2]
for i in range(int(sys.argv[3])):
    with StoreLock(store, "ingest", f"w{i}", wait_s=60):
        n = int(open(counter).read())
        time.sleep(0.002)  # widen the window a lost update needs
        open(counter, "w").write(str(n + 1))
"""


def test_writers_in_turn_never_interleave(tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0")
    procs = [subprocess.Popen([sys.executable, "-c", COUNT, str(tmp_path / "store"), str(counter), "40"])
             for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert counter.read_text() == "120"


@pytest.mark.spark
def test_two_ingests_started_together_never_lose_documents(tmp_path):
    """The reported scenario: two `curate ingest` runs of different inputs into one store at once."""
    import os
    for name, n in (("a.jsonl", 150), ("b.jsonl", 100)):
        (tmp_path / name).write_text("".join(json.dumps({"text": f"{name} document number {i}"}) + "\n"
                                             for i in range(n)))
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "CURATE_LOG_DIR": str(tmp_path / "logs")}

    def ingest(name):
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "ingest", name, "--store", "store",
                                 "--no-language", "--master", "local[1]"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = {name: ingest(name) for name in ("a.jsonl", "b.jsonl")}
    outcome = {name: (p.wait(timeout=300), p.stderr.read()) for name, p in runs.items()}
    failed = [name for name, (rc, _) in outcome.items() if rc != 0]
    assert len(failed) <= 1, outcome
    for name in failed:  # the later one was refused, naming the running one, and wrote nothing
        assert outcome[name][0] == 2 and "is in use by ingest run" in outcome[name][1], outcome[name]
        assert subprocess.run([sys.executable, "-m", "pipeline.cli", "ingest", name, "--store", "store",
                               "--no-language"], cwd=tmp_path, env=env, capture_output=True).returncode == 0
    import duckdb
    n = duckdb.execute(f"SELECT count(*) FROM read_parquet('{tmp_path}/store/docs/*.parquet')").fetchone()[0]
    assert n == 250


def test_the_holding_process_takes_the_lock_again_as_a_no_op(tmp_path):
    """A stage that runs other stages (distill runs score) holds the lock once: the inner take and give
    back leave the outer lock in place; another process still cannot take it."""
    store = Store(tmp_path / "store")
    with StoreLock(store, "distill", "outer") as outer:
        with StoreLock(store, "score", "inner") as inner:
            assert inner.nested and StoreLock.read(store)["token"] == outer.holder["token"]
        assert StoreLock.read(store)["token"] == outer.holder["token"]
        proc = subprocess.run([sys.executable, "-c", "import sys; from pipeline.lock import StoreLock; "
                               "from pipeline.store import Store; StoreLock(Store(sys.argv[1]), 'ingest', 'x').acquire()",
                               store.uri], capture_output=True, text=True)
        assert proc.returncode != 0 and "in use by distill run outer" in proc.stderr
    assert not store.exists(LOCK_FILE)
    with StoreLock(store, "score", "later") as later:   # taken for real again after the outer one ended
        assert not later.nested
