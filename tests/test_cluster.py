"""Ingest on a real standalone Spark cluster (a master and a worker started on loopback)."""
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
import yaml

pytestmark = pytest.mark.cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    import pyspark
    spark_home = os.path.dirname(pyspark.__file__)
    env = {**os.environ, "SPARK_HOME": spark_home, "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "SPARK_LOG_DIR": str(tmp_path_factory.mktemp("logs"))}
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    spark_class = os.path.join(spark_home, "bin", "spark-class")
    procs = [subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(ui)],
                              env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_for_port(port)
        procs.append(subprocess.Popen([spark_class, "org.apache.spark.deploy.worker.Worker",
                                       f"spark://127.0.0.1:{port}", "--host", "127.0.0.1", "--cores", "2",
                                       "--memory", "2g", "--webui-port", str(worker_ui)],
                                      env=env, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 60  # wait until the worker has registered with the master
        while time.time() < deadline:
            try:
                state = json.load(urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5))
                if state.get("aliveworkers", 0) >= 1:
                    break
            except OSError:  # the web UI starts a little after the RPC port
                pass
            time.sleep(1)
        else:
            raise TimeoutError("the worker did not register with the master")
        yield {"master": f"spark://127.0.0.1:{port}", "ui": ui}
    finally:
        for p in reversed(procs):  # stop exactly the daemons this test started
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)


def test_ingest_runs_on_standalone_cluster(standalone_cluster, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(3):
        with gzip.open(raw / f"part-{i}.jsonl.gz", "wt") as f:
            for j in range(50):
                f.write(json.dumps({"text": f"Document {j} of file {i}. " * 5, "url": f"https://site{i}.org/{j}"}) + "\n")
            f.write(json.dumps({"text": "the same text in every file", "url": f"https://mirror{i}.org/"}) + "\n")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"store": str(tmp_path / "store"),
                                      "spark": {"driver_memory": "1g",
                                                "conf": {"spark.executor.memory": "1g", "spark.cores.max": "2"}},
                                      "ingest": {"inputs": [str(raw)], "num_shards": 2}}))
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).parent.parent / "jobs" / "ingest.py"),
                           "--config", str(config), "--master", standalone_cluster["master"]],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["counts"]["input_rows"] == 153
    assert summary["counts"]["docs"] == 151 and summary["counts"]["duplicates"] == 2
    n = duckdb.execute(f"SELECT count(*) FROM read_parquet('{tmp_path}/store/docs/*.parquet')").fetchone()[0]
    assert n == 151
    # The master saw the application run to completion on its worker.
    state = json.load(urllib.request.urlopen(f"http://127.0.0.1:{standalone_cluster['ui']}/json/", timeout=5))
    assert any(app["name"] == "curate" for app in state.get("completedapps", []) + state.get("activeapps", []))

    # Scoring on the cluster: the engine runs inside the worker's Python processes.
    pytest.importorskip("torch")
    from tests.helpers import make_tiny_model_dir
    model = make_tiny_model_dir(tmp_path / "model")
    run = yaml.safe_load(config.read_text())
    run["score"] = {"model": str(model), "max_tokens": 64, "docs_per_part": 40}
    config.write_text(yaml.safe_dump(run))
    proc = subprocess.run([sys.executable, str(Path(__file__).parent.parent / "jobs" / "score.py"),
                           "--config", str(config), "--master", standalone_cluster["master"]],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scored = json.loads(proc.stdout)
    assert scored["counts"]["scored_now"] == 151
    rows = duckdb.execute(f"SELECT count(DISTINCT doc_id), count(*), min(n_predicted) FROM "
                          f"read_parquet('{tmp_path}/store/scores/*/part-*.parquet')").fetchone()
    assert rows[0] == rows[1] == 151 and rows[2] > 0
