"""`curate run CONFIG`: every stage in order as a user runs it (a real process), then resumed."""
import json
import random

import pytest
import yaml
import zstandard

from schemas import sidecars
from tests.helpers import random_texts
from tests.test_cli import curate

pytestmark = pytest.mark.spark


def write_run_config(tmp_path, rate=0.5):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    rng = random.Random(0)
    hosts = ["a.example.org", "b.example.net", "c.example.com"]
    with open(raw / "part.jsonl", "w") as f:
        for i, text in enumerate(random_texts(90, seed=3)):
            f.write(json.dumps({"text": text * rng.randint(2, 5), "url": f"https://{hosts[i % 3]}/{i}"}) + "\n")
        f.write("{broken json\n")
    config = {
        "store": str(tmp_path / "store"),
        "spark": {"master": "local[2]", "shuffle_partitions": 2},
        "ingest": {"inputs": [str(raw)], "num_shards": 2},
        "reference": {"reference_fraction": 0.3, "min_reference_docs": 0, "max_steps": 4, "vocab_size": 300,
                      "hidden_size": 64, "num_heads": 2, "num_layers": 1, "max_seq_len": 64, "batch_size": 4},
        "score": {"max_tokens": 64},
        "select": {"name": "mid", "rules": [{"type": "band", "criterion": "medium", "rate": rate}]},
        "export": {"name": "mid", "format": "tokens", "shard_bytes": 2000},
        "stages": ["ingest", "train_reference", "score", "select", "export"],
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def assert_sidecars_declared(store):
    """Every JSON file the run wrote beside its tables matches its declaration in schemas.sidecars."""
    checked = set()
    for path in sorted(store.rglob("*.json")):
        rel = path.relative_to(store).as_posix()
        obj = json.loads(path.read_text())
        if rel.startswith("_runs/") or (rel.startswith("models/") and path.name != "curate_model.json"):
            continue  # run records are schemas.RUN_RECORD; the rest of a model folder is transformers'
        sidecar = sidecars.MODEL_CARDS[obj["kind"]] if path.name == "curate_model.json" else sidecars.sidecar_for(rel)
        assert sidecar is not None, f"{rel} is not declared in schemas/sidecars.py"
        assert sidecar.validate(obj) == obj, rel
        checked.add(sidecar.name)
    assert {"ingest_marker", "docs_manifest", "scorer", "selection", "export_manifest", "trained_model"} <= checked


def test_run_every_stage_then_resume_then_replace_a_changed_selection(tmp_path):
    config = write_run_config(tmp_path)
    first = curate("run", config)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    for stage in ("ingest", "train_reference", "score", "select", "export"):
        assert stage in out
    assert "curate run: summary" in out and "documents in 90" in out
    export_dir = tmp_path / "store" / "exports" / "mid"
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert str(export_dir) in out.replace("\n", "")
    selection = json.loads((tmp_path / "store" / "selections" / "mid" / "_selection.json").read_text())
    assert manifest["counts"]["docs"] == selection["counts"]["kept"] > 0
    assert manifest["counts"]["shards"] > 1
    assert f"out {manifest['counts']['docs']:,} ({manifest['counts']['tokens']:,} tokens)" in out
    assert_sidecars_declared(tmp_path / "store")

    again = curate("run", config)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("up to date") >= 3  # the reference model, the selection, the export
    assert "0 scored" in again.stdout and "0 of 1 files read" in again.stdout
    assert json.loads((export_dir / "manifest.json").read_text())["shards"] == manifest["shards"]

    # The same selection as JSONL.zst, from `curate export` with the run's config (its reference model
    # counts the tokens).
    as_jsonl = curate("export", "-c", config, "--name", "mid-jsonl", "--format", "jsonl.zst", "--seed", "7")
    assert as_jsonl.returncode == 0, as_jsonl.stderr[-3000:]
    jsonl_dir = tmp_path / "store" / "exports" / "mid-jsonl"
    jsonl_manifest = json.loads((jsonl_dir / "manifest.json").read_text())
    lines = [json.loads(line) for shard in sorted(jsonl_dir.glob("shard-*.jsonl.zst"))
             for line in zstandard.ZstdDecompressor().stream_reader(shard.open("rb")).read().splitlines()]
    assert len(lines) == jsonl_manifest["counts"]["docs"] == manifest["counts"]["docs"]
    assert jsonl_manifest["tokenizer"]["hash"] == manifest["tokenizer"]["hash"]
    assert "documents exported" in as_jsonl.stdout

    write_run_config(tmp_path, rate=0.8)
    changed = curate("run", config, "--stages", "select,export")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "ingest" not in changed.stdout.split("curate run: summary")[1]
    replaced = json.loads((export_dir / "manifest.json").read_text())
    assert replaced["counts"]["docs"] > manifest["counts"]["docs"]


def test_run_checks_the_config_before_starting(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"store": str(tmp_path / "s"), "ingest": {"inputs": [str(tmp_path)]},
                                    "stages": ["ingest", "score"]}))
    out = curate("run", path)
    assert out.returncode == 2 and "score.model" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "s").exists()  # nothing ran
