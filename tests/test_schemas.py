import json

import pyarrow as pa
import pytest

import schemas
from pipeline.store import Store, code_version, new_run_record, utc_now


def test_every_schema_is_versioned():
    for name, schema in schemas.TABLES.items():
        assert schema.metadata[b"table"] == name.encode()
        assert int(schema.metadata[b"schema_version"]) >= 1


def test_validate_casts_reorders_and_rejects():
    q = schemas.QUARANTINE
    t = pa.table({"reason": ["x"], "source_file": ["f"], "source_offset": pa.array([3], pa.int32()),
                  "source_format": ["jsonl"], "detail": ["d"], "raw": [b"r"]})
    out = schemas.validate(t, q)
    assert out.schema.names == q.names and out.schema.field("source_offset").type == pa.int64()
    with pytest.raises(schemas.SchemaError, match="missing columns"):
        schemas.validate(t.drop_columns(["reason"]), q)
    with pytest.raises(schemas.SchemaError, match="unexpected columns"):
        schemas.validate(t.append_column("extra", pa.array([1])), q)
    with pytest.raises(schemas.SchemaError, match="holds nulls"):
        schemas.validate(t.set_column(0, "reason", pa.array([None], pa.string())), q)
    with pytest.raises(schemas.SchemaError, match="cannot cast"):
        schemas.validate(t.set_column(t.schema.get_field_index("source_offset"), "source_offset",
                                      pa.array(["not a number"])), q)


def test_store_writes_atomically_and_validates_run_records(tmp_path):
    store = Store(tmp_path / "s")
    table = pa.table({"source_file": ["f"], "source_offset": [1], "source_format": ["jsonl"],
                      "reason": ["r"], "detail": ["d"], "raw": [b"x"]})
    store.write_table(table, schemas.QUARANTINE, "quarantine", "part-a.parquet")
    assert store.list_files("quarantine") == ["part-a.parquet"]
    assert not [p for p in (tmp_path / "s" / "quarantine").iterdir() if p.name.startswith(".tmp")]
    assert store.read_table("quarantine", "part-a.parquet").schema.metadata[b"schema_version"] == b"1"
    record = {"stage": "ingest", "run_id": "r1", "status": "finished", "config": "{}", "inputs": [],
              "code_version": code_version(), "started_at": utc_now(), "finished_at": utc_now(),
              "counts": {"docs": 3}, "timings": {"total_s": 1.0}, "error": None}
    store.write_run_record(record)
    assert store.run_record("ingest", "r1")["counts"] == {"docs": 3}
    with pytest.raises(schemas.SchemaError):
        store.write_run_record({**record, "run_id": "r2", "status": None})


def test_recorded_run_marks_a_failed_block_and_finish_run_a_finished_one(tmp_path):
    from pipeline.config import Config
    store = Store(tmp_path / "s")
    config = Config.model_validate({"store": str(tmp_path / "s")})
    failing = new_run_record("score", config, ["docs"])
    with pytest.raises(ValueError, match="bad input"):
        with store.recorded_run(failing):
            assert store.run_record("score", failing["run_id"])["status"] == "running"
            raise ValueError("bad input")
    stored = store.run_record("score", failing["run_id"])
    assert stored["status"] == "failed" and stored["error"] == "ValueError: bad input" and stored["finished_at"]

    ok = new_run_record("score", config, ["docs"])
    assert ok["run_id"] != failing["run_id"]
    with store.recorded_run(ok):
        store.finish_run(ok, {"docs": 2}, {"total_s": 0.5})
    stored = store.run_record("score", ok["run_id"])
    assert (stored["status"], stored["counts"], stored["timings"]) == ("finished", {"docs": 2}, {"total_s": 0.5})
    assert json.loads(stored["config"])["store"] == str(tmp_path / "s")
