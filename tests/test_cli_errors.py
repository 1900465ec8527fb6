"""What a user sees when something is wrong: one line naming the problem, before Spark starts when it
can be known then, and the tracebacks in a log file whose path is printed."""
import os
import subprocess
import sys

import pytest

CURATE = [sys.executable, "-m", "pipeline.cli"]
JVM_STARTED = "incubator modules"  # the JVM's first line on stderr


def curate(tmp_path, *args):
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "CURATE_LOG_DIR": str(tmp_path / "logs")}
    return subprocess.run([*CURATE, *map(str, args)], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)


@pytest.mark.parametrize("args, message", [
    (["ingest", "missing.jsonl", "--store", "s"], "error: input not found: missing.jsonl"),
    (["ingest", "in.jsonl", "--store", "in.jsonl"], "error: store in.jsonl is a file"),
    (["ingest", "in.jsonl", "-c", "."], "is a folder: give the YAML file"),
    (["ingest", "in.jsonl", "-c", "lid.yaml"], "ingest.language.model_path nowhere/lid.ftz: no such file"),
    (["score", "s", "--model", "nowhere"], "run `curate ingest` first"),
])
def test_a_bad_path_is_one_line_before_spark_starts(tmp_path, args, message):
    (tmp_path / "in.jsonl").write_text('{"text": "a document"}\n')
    (tmp_path / "lid.yaml").write_text("ingest:\n  language:\n    model_path: nowhere/lid.ftz\n")
    out = curate(tmp_path, *args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert JVM_STARTED not in out.stderr and "Traceback" not in out.stderr


@pytest.mark.spark
def test_a_failing_spark_task_prints_its_message_and_logs_the_tracebacks(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "a document"}\n')
    (tmp_path / "lid.ftz").write_bytes(b"not a fastText model")
    (tmp_path / "lid.yaml").write_text(f"ingest:\n  in_process_mb: 0\n  language:\n    model_path: {tmp_path / 'lid.ftz'}\n")
    out = curate(tmp_path, "ingest", "in.jsonl", "-c", "lid.yaml", "--store", "s")
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip() and JVM_STARTED not in line]
    assert "Traceback" not in out.stderr and "at org.apache" not in out.stderr, out.stderr
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "ingest failed" in errors[0], out.stderr
    details = [line.split("details:", 1)[1].strip() for line in lines if line.startswith("details:")]
    assert details and details[0].startswith(str(tmp_path / "logs")), out.stderr
    log = open(details[0]).read()
    assert "Traceback (most recent call last)" in log and "PythonException" in log


def test_a_failing_task_run_without_spark_reads_the_same(tmp_path):
    # A small input is ingested in the CLI's own process: its failure is reported as a Spark task's is.
    (tmp_path / "in.jsonl").write_text('{"text": "a document"}\n')
    (tmp_path / "lid.ftz").write_bytes(b"not a fastText model")
    (tmp_path / "lid.yaml").write_text(f"ingest:\n  language:\n    model_path: {tmp_path / 'lid.ftz'}\n")
    out = curate(tmp_path, "ingest", "in.jsonl", "-c", "lid.yaml", "--store", "s")
    assert out.returncode == 2 and JVM_STARTED not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ingest failed" in errors[0] and "re-run" in errors[0], out.stderr
    assert "Traceback" not in out.stderr
    details = [line.split("details:", 1)[1].strip() for line in out.stderr.splitlines() if line.startswith("details:")]
    assert details and "Traceback (most recent call last)" in open(details[0]).read()


def test_an_unexpected_error_prints_one_line_and_logs_its_traceback(tmp_path, monkeypatch, capsys):
    from pipeline import cli, logs

    def broken():
        raise KeyError("a bug")
    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.setenv("CURATE_LOG_DIR", str(tmp_path))
    monkeypatch.setattr(logs, "_path", None)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith("error: KeyError: 'a bug'\ntraceback: ")
    log = err.splitlines()[1].split("traceback: ", 1)[1].split(" (please")[0]
    assert log.startswith(str(tmp_path)) and 'raise KeyError("a bug")' in open(log).read()
