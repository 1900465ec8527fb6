"""The export stage end to end: real Spark, real Parquet, a real (tiny) tokenizer, shards read back."""
import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard

import schemas
from schemas import sidecars
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.export.stage import run_export
from pipeline.store import Store
from tests.helpers import make_tiny_model_dir, random_texts

pytestmark = pytest.mark.spark
pytest.importorskip("transformers")

DOMAINS = ("a.org", "b.org", "c.org")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


def _doc(i: int, text: str) -> dict:
    domain = None if i % 10 == 9 else DOMAINS[i % 3]  # a few documents without a URL: a null group
    return {"doc_id": hashlib.blake2b(text.encode(), digest_size=16).hexdigest(), "text": text,
            "url": domain and f"https://{domain}/{i}", "host": domain, "domain": domain, "source_id": None,
            "source_file": "raw.jsonl", "source_offset": i, "source_format": "jsonl",
            "n_bytes": len(text.encode()), "n_chars": len(text), "language": "en", "language_score": 0.9,
            "metadata": None, "duplicate_count": 1, "duplicate_sources": None}


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    """150 documents in two parts; selection `sel` keeps three in four, `empty` keeps none."""
    root = tmp_path_factory.mktemp("store")
    store = Store(root)
    docs = [_doc(i, f"{t} #{i}") for i, t in enumerate(random_texts(150, seed=5))]
    for part, rows in enumerate((docs[:80], docs[80:])):
        store.write_table(pa.Table.from_pylist(rows, schema=schemas.DOCS), schemas.DOCS,
                          "docs", f"part-{part:05d}.parquet")
    for name, kept in (("sel", lambda i: i % 4 != 3), ("empty", lambda i: False)):
        rows = [{"doc_id": d["doc_id"], "kept": kept(i), "reason": None if kept(i) else "band:low:above",
                 "score": float(i), "group": d["domain"]} for i, d in enumerate(docs)]
        store.write_table(pa.Table.from_pylist(rows), schemas.SELECTION, "selections", name, "part-00000.parquet")
        store.write_json(sidecars.SELECTION, {
            "name": name, "selection_id": hashlib.sha256(name.encode()).hexdigest()[:16],
            "scorer_id": "0123456789abcdef", "scorer": {}, "config": {}, "counts": {}, "reasons": {}, "timings": {},
            "thresholds": [], "report": [], "report_by": "domain", "created_at": "2025-01-01",
            "code_version": "test"}, "selections", name, "_selection.json")
    return root


def _config(root, model_dir, **export) -> Config:
    return Config.model_validate({"store": str(root), "spark": {"master": "local[2]"}, "select": {"name": "sel"},
                                  "score": {"model": model_dir and str(model_dir)},
                                  "export": {"shard_bytes": 800, **export}})


def _kept(root) -> dict[str, dict]:
    docs = {d["doc_id"]: d for d in pq.read_table(root / "docs").to_pylist()}
    sel = pq.read_table(root / "selections" / "sel").to_pylist()
    return {r["doc_id"]: docs[r["doc_id"]] for r in sel if r["kept"]}


def _plan(out) -> list[dict]:
    return pq.read_table(out / "documents.parquet").to_pylist()


def _read_shards(out, manifest) -> list:
    """Every document of the export in file order: rows (parquet, jsonl.zst) or token lists (tokens)."""
    docs = []
    for shard in manifest["shards"]:
        path = out / shard["files"][0]["name"]
        if manifest["format"] == "parquet":
            docs += pq.read_table(path).to_pylist()
        elif manifest["format"] == "jsonl.zst":
            lines = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read().decode().splitlines()
            docs += [json.loads(line) for line in lines]
        else:
            tokens = np.fromfile(path, dtype=np.dtype(manifest["tokens"]["dtype"]).newbyteorder("<"))
            index = np.fromfile(out / shard["files"][1]["name"], dtype="<u8")
            assert len(index) == shard["docs"] + 1 and index[0] == 0 and index[-1] == len(tokens)
            docs += [tokens[a:b].tolist() for a, b in zip(index[:-1], index[1:])]
    return docs


def _assert_manifest_matches_disk(out, manifest):
    plan = _plan(out)
    files = sorted(p.name for p in out.glob("shard-*"))
    assert files == sorted(f["name"] for s in manifest["shards"] for f in s["files"])
    for shard in manifest["shards"]:
        in_shard = [d for d in plan if d["shard"] == shard["shard"]]
        assert shard["docs"] == len(in_shard) and shard["tokens"] == sum(d["n_tokens"] for d in in_shard)
        for f in shard["files"]:
            blob = (out / f["name"]).read_bytes()
            assert f["bytes"] == len(blob) and f["sha256"] == hashlib.sha256(blob).hexdigest()
    counts = manifest["counts"]
    assert counts["docs"] == len(plan) and counts["tokens"] == sum(d["n_tokens"] for d in plan)
    assert counts["bytes"] == sum((out / f).stat().st_size for f in files)
    assert counts["shards"] == len(manifest["shards"]) == len({d["shard"] for d in plan})
    assert counts["candidate_docs"] == counts["docs"] + counts["sampled_out_docs"]
    assert sum(g["docs"] for g in manifest["groups"]) == len(plan)


@pytest.fixture(scope="module")
def exports(spark, store_root, model_dir):
    """One export of every kept document per format."""
    return {fmt: run_export(_config(store_root, model_dir, name=f"all-{fmt}", format=fmt), spark)
            for fmt in ("parquet", "jsonl.zst", "tokens")}


@pytest.mark.parametrize("fmt", ["parquet", "jsonl.zst", "tokens"])
def test_every_format_round_trips(exports, store_root, model_dir, fmt):
    result = exports[fmt]
    out = store_root / "exports" / f"all-{fmt}"
    manifest = json.loads((out / "manifest.json").read_text())
    assert result.outputs["manifest"] == manifest and not result.skipped and result.counts["shards"] > 3
    _assert_manifest_matches_disk(out, manifest)
    kept, plan = _kept(store_root), _plan(out)
    assert sorted(d["doc_id"] for d in plan) == sorted(kept)            # every kept document, once
    assert manifest["counts"]["candidate_docs"] == len(kept) and manifest["counts"]["sampled_out_docs"] == 0
    docs = _read_shards(out, manifest)
    assert len(docs) == len(plan)
    if fmt == "tokens":
        from pipeline.scoring.core import load_tokenizer
        tok = load_tokenizer(model_dir)
        assert manifest["tokens"]["dtype"] == "uint16" and manifest["tokens"]["eos_token_id"] == tok.eos_token_id
        for ids, d in zip(docs, plan):
            assert ids[-1] == tok.eos_token_id and len(ids) == d["n_tokens"]
            assert tok.decode(ids[:-1], clean_up_tokenization_spaces=False) == kept[d["doc_id"]]["text"]
    else:
        assert [r["doc_id"] for r in docs] == [d["doc_id"] for d in plan]
        assert list(docs[0]) == ["doc_id", "text", "url", "domain", "language"]
        for row in docs:
            assert {k: kept[row["doc_id"]][k] for k in row} == row
    record = json.loads((store_root / "_runs" / "export" / f"{result.run_id}.json").read_text())
    assert record["status"] == "finished" and record["counts"]["docs"] == len(plan)


def test_parquet_shards_load_with_datasets(exports, store_root, tmp_path):
    import datasets
    out = store_root / "exports" / "all-parquet"
    ds = datasets.load_dataset("parquet", data_files=sorted(str(p) for p in out.glob("shard-*.parquet")),
                               split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == exports["parquet"].counts["docs"] and "text" in ds.column_names


def test_token_budget(spark, store_root, model_dir, exports):
    total = exports["tokens"].counts["tokens"]
    calls = []
    result = run_export(_config(store_root, model_dir, name="budget", format="tokens", token_budget=total // 3),
                        spark, progress=lambda *call: calls.append(call))
    assert calls[-1] == ("write", result.counts["shards"], result.counts["shards"])
    assert ("tokenize", result.counts["candidate_docs"], result.counts["candidate_docs"]) in calls
    plan = _plan(store_root / "exports" / "budget")
    tokens = sum(d["n_tokens"] for d in plan)
    assert total // 3 <= tokens < total // 3 + max(d["n_tokens"] for d in plan)
    assert result.counts["sampled_out_docs"] == exports["tokens"].counts["docs"] - len(plan) > 0
    # a prefix of the full export's order: sampling takes documents in the seeded order
    full = [d["doc_id"] for d in _plan(store_root / "exports" / "all-tokens")]
    assert [d["doc_id"] for d in plan] == full[:len(plan)]


def test_mixture_proportions(spark, store_root, model_dir):
    Store(store_root).write_json(sidecars.MIXTURE, {"group_by": "domain", "weights": {"a.org": 7, "b.org": 3}},
                                 "mixtures", "ab.json")
    result = run_export(_config(store_root, model_dir, name="mix", mixture="ab", group_by="language"), spark)
    mixture = result.outputs["manifest"]["mixture"]
    assert result.outputs["manifest"]["group_by"] == "domain" and mixture["weights"] == {"a.org": 0.7, "b.org": 0.3}
    plan = _plan(store_root / "exports" / "mix")
    assert {d["group"] for d in plan} == {"a.org", "b.org"}            # c.org and no-domain get weight 0
    tokens = {g: sum(d["n_tokens"] for d in plan if d["group"] == g) for g in ("a.org", "b.org")}
    achieved = {g: t / sum(tokens.values()) for g, t in tokens.items()}
    assert mixture["achieved"] == pytest.approx(achieved)
    assert achieved["a.org"] == pytest.approx(0.7, abs=0.04)


def test_resume_skip_and_conflict(spark, store_root, model_dir):
    cfg = _config(store_root, model_dir, name="resume", format="jsonl.zst")
    first = run_export(cfg, spark)
    out = store_root / "exports" / "resume"
    order = [d["doc_id"] for d in _plan(out)]
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")}
    (out / "shard-00001.jsonl.zst").unlink()
    (out / "_shards" / "shard-00001.json").unlink()
    resumed = run_export(cfg, spark)
    assert not resumed.skipped and resumed.counts["shards_written"] == 1
    assert resumed.counts["shards_reused"] == first.counts["shards"] - 1
    assert resumed.outputs["manifest"]["shards"] == first.outputs["manifest"]["shards"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*") if p.name != "shard-00001.jsonl.zst"} == \
        {n: t for n, t in mtimes.items() if n != "shard-00001.jsonl.zst"}
    again = run_export(cfg, spark, overwrite=True)  # overwrite replaces only a different export
    assert again.skipped and again.outputs["manifest"] == resumed.outputs["manifest"]
    assert again.counts["docs"] == first.counts["docs"]
    other = _config(store_root, model_dir, name="resume", format="jsonl.zst", seed=7)
    with pytest.raises(UserError, match="overwrite"):
        run_export(other, spark)
    replaced = run_export(other, spark, overwrite=True)
    assert not replaced.skipped and replaced.outputs["manifest"]["seed"] == 7 and not list(out.glob(".tmp-*"))
    assert replaced.outputs["manifest"]["fingerprint"] != first.outputs["manifest"]["fingerprint"]
    # another seed, another order of the same documents
    assert replaced.counts["docs"] == first.counts["docs"] and order != [d["doc_id"] for d in _plan(out)]


@pytest.mark.parametrize("export,score_model,message", [
    ({"selection": "nope"}, True, "curate select"),
    ({"selection": "empty"}, True, "keeps no documents"),
    ({"columns": ["doc_id", "title"]}, True, "'title'"),
    ({"tokenizer": "/does/not/exist"}, True, "/does/not/exist"),
    ({}, False, "export.tokenizer"),
    ({"mixture": "missing-mix"}, True, "missing-mix"),
    ({"mixture": "{tmp}/bad.json"}, True, "not valid JSON"),
    ({"mixture": "{tmp}/zzz.json"}, True, "zzz.org"),
])
def test_user_errors(spark, store_root, model_dir, tmp_path, export, score_model, message):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "zzz.json").write_text(json.dumps({"weights": {"a.org": 1, "zzz.org": 1}}))
    export = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in export.items()}
    cfg = _config(store_root, model_dir if score_model else None, name="errors", **export)
    with pytest.raises(UserError, match=message):
        run_export(cfg, spark, overwrite=True)


def test_task_failure_is_one_clear_message(spark, store_root, model_dir, tmp_path):
    import shutil
    broken = shutil.copytree(model_dir, tmp_path / "tok")
    from pipeline.export.stage import load_export_tokenizer
    load_export_tokenizer(str(broken))      # the driver holds it; the Spark workers will not find its files
    (broken / "tokenizer.json").unlink()
    (broken / "tokenizer_config.json").unlink()
    with pytest.raises(UserError, match="export failed while counting tokens: .*Re-run the same command"):
        run_export(_config(store_root, model_dir, name="broken", tokenizer=str(broken)), spark)
    records = [json.loads(p.read_text()) for p in (store_root / "_runs" / "export").glob("*.json")]
    assert any(r["status"] == "failed" and "counting tokens" in r["error"] for r in records)


def test_job_entry_point_gives_the_same_bytes(spark, store_root, model_dir, tmp_path, capsys, exports):
    from jobs.export import main
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"store": str(store_root), "spark": {"master": "local[2]"},
                                    "select": {"name": "sel"},
                                    "export": {"name": "job", "tokenizer": str(model_dir), "shard_bytes": 800}}))
    assert main(["--config", str(path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["name"] == "job" and not result["skipped"] and result["out_dir"].endswith("exports/job")
    # the same seed and config as the parquet export, under another name: byte-identical shards
    manifest = json.loads((store_root / "exports" / "job" / "manifest.json").read_text())
    parquet_shards = exports["parquet"].outputs["manifest"]["shards"]
    assert [s["files"] for s in manifest["shards"]] == [s["files"] for s in parquet_shards]
    assert main(["--config", str(path)]) == 0 and json.loads(capsys.readouterr().out)["skipped"]
    path.write_text(yaml.safe_dump({"store": str(store_root), "export": {"name": "job", "selection": "nope",
                                                                          "tokenizer": str(model_dir)}}))
    assert main(["--config", str(path)]) == 2 and "curate select" in capsys.readouterr().err


def _scored_selection(root, name: str, scorer: dict) -> None:
    """A copy of selection `sel` recorded as made with `scorer` (a _scorer.json identity)."""
    store = Store(root)
    store.write_table(pq.read_table(root / "selections" / "sel"), schemas.SELECTION, "selections", name,
                      "part-00000.parquet")
    info = {**json.loads((root / "selections" / "sel" / "_selection.json").read_text()), "name": name,
            "scorer": scorer, "selection_id": hashlib.sha256(json.dumps(scorer).encode()).hexdigest()[:16]}
    info.pop("schema_version")
    store.write_json(sidecars.SELECTION, info, "selections", name, "_selection.json")


def test_the_tokenizer_defaults_to_the_selection_scorers(spark, store_root, model_dir, tmp_path):
    import shutil
    from pipeline.export.stage import report
    from pipeline.scoring.identity import tokenizer_hash
    other = shutil.copytree(model_dir, tmp_path / "other-model")  # another scorer's tokenizer files
    config = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 4096}))
    other_hash = tokenizer_hash(other)
    assert other_hash != tokenizer_hash(model_dir)
    _scored_selection(store_root, "by-other", {"tokenizer": f"other@{other_hash}", "model_path": str(other)})

    # score.model is model_dir, but the selection was scored with `other`: its tokenizer counts the tokens.
    chosen = run_export(_config(store_root, model_dir, name="tok-default", selection="by-other"), spark)
    tok = chosen.outputs["manifest"]["tokenizer"]
    assert tok["path"] == str(other) and tok["hash"] == other_hash and tok["matches_scorer"]
    assert "scorer" in tok["source"] and "note:" not in report(chosen).text()

    # A tokenizer the user names instead is used, recorded as a mismatch and reported.
    asked = run_export(_config(store_root, model_dir, name="tok-asked", selection="by-other",
                               tokenizer=str(model_dir)), spark)
    tok = asked.outputs["manifest"]["tokenizer"]
    assert tok["path"] == str(model_dir) and tok["matches_scorer"] is False and tok["source"] == "export.tokenizer"
    assert "not with the tokenizer of the scorer" in report(asked).text()

    # The scorer's model is nowhere here: ask for a tokenizer rather than guess.
    _scored_selection(store_root, "by-absent", {"tokenizer": "gone@0123456789abcdef", "model_path": "/nowhere"})
    with pytest.raises(UserError, match="set export.tokenizer"):
        run_export(_config(store_root, model_dir, name="tok-absent", selection="by-absent"), spark)


def test_a_failed_overwrite_leaves_the_old_export_whole(spark, store_root, model_dir, tmp_path):
    import shutil
    cfg = _config(store_root, model_dir, name="swap")
    first = run_export(cfg, spark)
    out = store_root / "exports" / "swap"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    broken = shutil.copytree(model_dir, tmp_path / "tok")  # the workers cannot load it: the export fails
    (broken / "tokenizer_config.json").write_text(json.dumps({
        **json.loads((broken / "tokenizer_config.json").read_text()), "model_max_length": 7}))
    from pipeline.export.stage import load_export_tokenizer
    load_export_tokenizer(str(broken))
    (broken / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="export failed"):
        run_export(_config(store_root, model_dir, name="swap", tokenizer=str(broken)), spark, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    replaced = run_export(_config(store_root, model_dir, name="swap", seed=3), spark, overwrite=True)
    assert replaced.outputs["manifest"]["seed"] == 3 and json.loads((out / "manifest.json").read_text())["seed"] == 3
    assert replaced.counts["docs"] == first.counts["docs"] and not list((store_root / "_staging").glob("replaced-*"))
