"""The bookkeeping every stage shares: required tables, run records, phase timings, results."""
import json
import time

import pyarrow as pa
import pytest

import schemas
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.stage import Report, StageRun, require
from pipeline.store import Store


def _config(tmp_path) -> Config:
    return Config.model_validate({"store": str(tmp_path / "s")})


def test_a_failed_block_is_recorded_and_a_finished_run_returns_its_result(tmp_path):
    config = _config(tmp_path)
    store = Store(config.store)
    failing = StageRun("score", config, inputs=["docs"])
    with pytest.raises(ValueError, match="bad input"):
        with failing:
            assert store.run_record("score", failing.run_id)["status"] == "running"
            raise ValueError("bad input")
    stored = store.run_record("score", failing.run_id)
    assert stored["status"] == "failed" and stored["error"] == "ValueError: bad input" and stored["finished_at"]

    ok = StageRun("score", config, inputs=["docs"])
    assert ok.run_id != failing.run_id
    with ok:
        with ok.phase("read"):
            time.sleep(0.02)
        with ok.phase("read"):                       # a phase run twice adds up
            time.sleep(0.02)
        result = ok.finish({"docs": 2}, scorer_id="abc")
    stored = store.run_record("score", ok.run_id)
    assert stored["status"] == "finished" and stored["counts"] == {"docs": 2}
    assert stored["timings"] == result.timings and result.timings["read_s"] >= 0.04
    assert result.timings["total_s"] >= result.timings["read_s"]
    assert json.loads(stored["config"])["store"] == config.store and stored["inputs"] == ["docs"]
    assert (result.stage, result.run_id, result.outputs, result.skipped) == ("score", ok.run_id, {"scorer_id": "abc"},
                                                                            False)


def test_skip_records_an_up_to_date_run_and_a_dry_run_records_nothing(tmp_path):
    config = _config(tmp_path)
    store = Store(config.store)
    skipped = StageRun("export", config).skip({"docs": 5}, name="e")
    assert skipped.skipped and skipped.outputs == {"name": "e"}
    assert store.run_record("export", skipped.run_id)["counts"] == {"docs": 5, "skipped": 1}
    dry = StageRun("select", config, record=False)
    with dry:
        result = dry.finish({"kept": 1})
    assert result.run_id is None and not store.exists("_runs", "select")


def test_required_tables_name_the_command_that_writes_them(tmp_path):
    config = _config(tmp_path)
    store = Store(config.store)
    with pytest.raises(UserError, match=r"no documents in .*/docs: run `curate ingest` first"):
        StageRun("score", config, requires=("docs",))
    with pytest.raises(UserError, match="run `curate score` first"):
        require(store, "scores")
    empty = pa.table({"doc_id": pa.array([], pa.string())})
    store.write_table(empty, pa.schema([("doc_id", pa.string())], metadata={b"table": b"x"}), "scores",
                      "scorer=a", "part-0.parquet")
    require(store, "scores")                                            # a partition with a part is enough
    store.write_table(schemas.DOCS.empty_table(), schemas.DOCS, "docs", "part-00000.parquet")
    run = StageRun("score", config, requires=("docs",), inputs=["extra/path"])
    assert run.record["inputs"] == [store.spark_path("docs"), "extra/path"]   # required tables are inputs


def test_report_as_text():
    report = Report("ingest r1", [("documents", 1234), ("shards", "4")], [("t", pa.table({"a": [1]}))], ["done"])
    text = report.text()
    assert text.splitlines()[0] == "ingest r1" and "documents  1,234" in text and text.endswith("done")
