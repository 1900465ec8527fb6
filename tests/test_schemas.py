
import pyarrow as pa
import pytest

import schemas
from pipeline.store import Store, code_version, utc_now
from schemas import sidecars


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


def test_sidecars_refuse_missing_and_unknown_keys_and_carry_their_version(tmp_path):
    store = Store(tmp_path / "s")
    fingerprint = {"fingerprint": "ab12", "config": {"format": "parquet"}}
    written = store.write_json(sidecars.EXPORT_FINGERPRINT, fingerprint, "exports", "x", "_export.json")
    assert written == {**fingerprint, "schema_version": 1} == store.read_json("exports", "x", "_export.json")
    with pytest.raises(sidecars.SidecarError, match=r"missing keys \['config'\]"):
        store.write_json(sidecars.EXPORT_FINGERPRINT, {"fingerprint": "ab12"}, "exports", "x", "_export.json")
    with pytest.raises(sidecars.SidecarError, match=r"unknown keys \['extra'\]"):
        sidecars.EXPORT_FINGERPRINT.validate({**fingerprint, "extra": 1})
    assert sidecars.MIXTURE.validate({"weights": {"a": 1}}) == {"weights": {"a": 1}, "schema_version": 1}
    assert store.read_json("exports", "x", "_export.json") == written      # a refused write leaves the file


def test_every_store_sidecar_is_found_by_its_path():
    paths = {"_staging/ingest/0123abcd-c00000.json": "ingest_marker", "docs/_manifest.json": "docs_manifest",
             "_staging/ingest-plans/0123abcd.json": "ingest_plan",
             "scores/scorer=abc/_scorer.json": "scorer", "selections/med/_selection.json": "selection",
             "exports/e/_export.json": "export_fingerprint", "exports/e/_shards/shard-00001.json": "export_shard",
             "exports/e/manifest.json": "export_manifest", "mixtures/m.json": "mixture",
             "correlations/default/_correlations.json": "correlations",
             "ratings/rater=0a1b/_rater.json": "rater", "evaluations/e/_evaluation.json": "evaluation",
             "evaluations/e/_runs/selection-x-0.json": "evaluation_run"}
    assert {p: sidecars.sidecar_for(p).name for p in paths} == paths
    assert sidecars.sidecar_for("docs/part-00000.parquet") is None
    assert {s.name for s in sidecars.STORE_SIDECARS} == set(paths.values())
