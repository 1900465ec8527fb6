"""The select stage on a real store: Parquet tables, DuckDB, selections/<name>/ and _selection.json."""
import json

import numpy as np
import pyarrow as pa
import pytest

import schemas
from pipeline.config import Config
from pipeline.scoring.identity import ScorerIdentity
from pipeline.errors import UserError
from pipeline.selection.rules import parse_rule
from pipeline.selection.stage import report, run_select
from pipeline.sql import connect
from pipeline.store import Store
from schemas import sidecars

DOMAINS = ["news.org", "blog.net", "shop.com"]


def write_store(root, n=300, seed=0, scorers=("aaaa000000000001",)):
    """docs over three domains and two languages, scores per scorer (a few error rows), and a
    reference split of 10% (a third of it held out)."""
    rng = np.random.default_rng(seed)
    store = Store(root)
    ids = [f"{i:032x}" for i in range(n)]
    docs = pa.Table.from_pylist([{
        "doc_id": d, "text": f"document {i}\nline two of it", "url": f"https://{DOMAINS[i % 3]}/{i}",
        "host": DOMAINS[i % 3], "domain": DOMAINS[i % 3], "source_id": None, "source_file": "in.jsonl",
        "source_offset": i, "source_format": "jsonl", "n_bytes": 100 + i, "n_chars": 100 + i,
        "language": "en" if i % 5 else "de", "language_score": 0.9, "metadata": None,
        "duplicate_count": 1, "duplicate_sources": None} for i, d in enumerate(ids)], schema=schemas.DOCS)
    store.write_table(docs, schemas.DOCS, "docs", "part-00000.parquet")
    for k, sid in enumerate(scorers):
        ppl = rng.lognormal(3 + k, 1, n)
        rows = []
        for i, d in enumerate(ids):
            error = "too_short" if i % 50 == 7 else None
            nll = float(np.log(ppl[i])) if error is None else None
            rows.append({"doc_id": d, "scorer_id": sid, "model_name": f"model-{k}", "backend": "torch",
                         "dtype": "float32", "truncation": "first_n:128", "n_tokens": 20 + i % 7,
                         "n_predicted": 20, "n_bytes": 100 + i, "nll_sum": None if nll is None else 20 * nll,
                         "nll_mean": nll, "perplexity": None if nll is None else float(ppl[i]),
                         "bits_per_byte": None if nll is None else nll / 3, "nll_p50": None, "nll_p90": None,
                         "surprise_fraction": None, "error": error})
        store.write_table(pa.Table.from_pylist(rows, schema=schemas.SCORES), schemas.SCORES,
                          "scores", f"scorer={sid}", "part-00000.parquet")
        identity = ScorerIdentity(model_name=f"model-{k}", weights_sha256="0" * 64, tokenizer=f"model-{k}@0",
                                  dtype="float32", backend="torch", max_tokens=128)
        store.write_json(sidecars.SCORER, {**identity.to_dict(), "scorer_id": sid}, "scores", f"scorer={sid}",
                         "_scorer.json")
    split = ids[::10]
    # model-0, the first scorer's model, is a reference model trained on this split.
    store.write_table(pa.table({"doc_id": split, "model_name": ["model-0"] * len(split),
                                "heldout": [j % 3 == 0 for j in range(len(split))]}),
                      schemas.REFERENCE_SPLIT, "reference_splits", "model=model-0", "part-00000.parquet")
    return store, ids, split


def config(root, **select):
    return Config.model_validate({"store": str(root), "select": select})


def test_medium_band_writes_every_document_with_a_reason_and_duckdb_thresholds(tmp_path):
    store, ids, split = write_store(tmp_path)
    result = run_select(config(tmp_path, name="mid", rules=[{"type": "band", "criterion": "medium", "rate": 0.5}]))
    table = store.read_table("selections", "mid", "part-00000.parquet")
    assert sorted(table["doc_id"].to_pylist()) == sorted(ids)  # every document, once
    rows = {r["doc_id"]: r for r in table.to_pylist()}
    trained = [d for j, d in enumerate(split) if j % 3 != 0]
    assert all(rows[d]["reason"] == "reference_split" for d in trained)
    heldout = [d for j, d in enumerate(split) if j % 3 == 0]
    assert not any(rows[d]["reason"] == "reference_split" for d in heldout)  # never trained on
    assert {rows[d]["reason"] for i, d in enumerate(ids) if i % 50 == 7 and d not in trained} == {"no_score"}

    manifest = store.read_json("selections", "mid", "_selection.json")
    assert manifest["selection_id"] == result.outputs["selection_id"] and manifest["scorer_id"] == "aaaa000000000001"
    con, _ = connect(store)
    lo, hi, n = con.execute("""
        SELECT quantile_cont(s.perplexity, 0.25), quantile_cont(s.perplexity, 0.75), count(*)
        FROM scores s WHERE s.error IS NULL
          AND s.doc_id NOT IN (SELECT doc_id FROM reference_splits WHERE NOT heldout)""").fetchone()
    recorded = manifest["thresholds"][0]["groups"]["(all)"]
    assert (recorded["lower"], recorded["upper"], recorded["n"]) == (pytest.approx(lo), pytest.approx(hi), n)
    kept = [r for r in rows.values() if r["kept"]]
    assert all(lo < r["score"] <= hi for r in kept)
    assert len(kept) == result.counts["kept"] == pytest.approx(n / 2, abs=1)
    by_reason = dict(con.execute("SELECT coalesce(reason, 'kept'), count(*) FROM selections "
                                 "WHERE selection = 'mid' GROUP BY ALL").fetchall())
    assert by_reason["kept"] == len(kept) and sum(by_reason.values()) == len(ids)
    assert result.outputs["report"].to_pylist()[-1]["docs"] == len(ids)


def test_rules_combine_per_group_with_sql_over_the_store(tmp_path):
    store, ids, _ = write_store(tmp_path)
    cfg = config(tmp_path, name="en-low", rules=[
        {"type": "where", "sql": "language = 'en' AND doc_id IN (SELECT doc_id FROM scores WHERE n_tokens > 20)"},
        {"type": "band", "criterion": "low", "rate": 0.3, "by": "domain", "min_group_docs": 5}])
    result = run_select(cfg)
    manifest = store.read_json("selections", "en-low", "_selection.json")
    groups = manifest["thresholds"][1]["groups"]
    assert set(groups) == set(DOMAINS)
    table = store.read_table("selections", "en-low", "part-00000.parquet").to_pylist()
    con, _ = connect(store)
    lang = dict(con.execute("SELECT doc_id, language FROM docs").fetchall())
    for row in table:
        if row["kept"]:
            assert lang[row["doc_id"]] == "en" and row["score"] <= groups[row["group"]]["upper"]
    assert result.counts["kept"] == sum(g["kept"] for g in groups.values())


def test_rerun_is_a_no_op_and_a_changed_selection_needs_overwrite(tmp_path):
    store, _, _ = write_store(tmp_path)
    cfg = config(tmp_path, rules=[{"type": "band", "criterion": "high", "rate": 0.4}])
    first = run_select(cfg)
    assert run_select(cfg).skipped
    changed = config(tmp_path, rules=[{"type": "band", "criterion": "high", "rate": 0.5}])
    with pytest.raises(UserError, match="--overwrite"):
        run_select(changed)
    # An overwrite that dies before it finishes (here: writing _selection.json) leaves the old one whole.
    before = {p.name: p.read_bytes() for p in (tmp_path / "selections" / "default").iterdir()}
    real_write_json = Store.write_json

    def dies_on_the_manifest(self, sidecar, obj, *rel):
        if sidecar is sidecars.SELECTION:
            raise KeyboardInterrupt
        return real_write_json(self, sidecar, obj, *rel)
    Store.write_json = dies_on_the_manifest
    try:
        with pytest.raises(KeyboardInterrupt):
            run_select(changed, overwrite=True)
    finally:
        Store.write_json = real_write_json
    assert {p.name: p.read_bytes() for p in (tmp_path / "selections" / "default").iterdir()} == before
    again = run_select(changed, overwrite=True)
    assert again.outputs["selection_id"] != first.outputs["selection_id"] and not again.skipped
    assert again.counts["kept"] > first.counts["kept"]
    assert not list((tmp_path / "_staging").glob("select/*"))  # what the dead run left aside is gone


def test_dry_run_and_sweep_write_nothing(tmp_path):
    store, _, _ = write_store(tmp_path)
    cfg = config(tmp_path, name="what-if", rules=[{"type": "band", "criterion": "low", "rate": 0.5}])
    result = run_select(cfg, dry_run=True)
    assert not store.exists("selections", "what-if") and not result.outputs["written"]
    sweep = run_select(cfg, sweep=(["low", "medium", "high"], [0.25, 0.75])).outputs["report"].to_pylist()
    assert [(r["criterion"], r["rate"]) for r in sweep] == [(c, r) for c in ("low", "medium", "high")
                                                            for r in (0.25, 0.75)]
    assert sweep[0]["kept"] < sweep[1]["kept"]
    assert {f"{d} %" for d in DOMAINS} <= set(sweep[0])
    assert not store.exists("selections")


def test_scorer_choice_and_clear_errors(tmp_path):
    write_store(tmp_path, scorers=("aaaa000000000001", "bbbb000000000002"))
    band = [{"type": "band", "criterion": "low", "rate": 0.5}]
    with pytest.raises(UserError, match="set select.scorer"):
        run_select(config(tmp_path, rules=band))
    assert run_select(config(tmp_path, scorer="model-1", rules=band), dry_run=True).outputs["scorer_id"] == "bbbb000000000002"
    with pytest.raises(UserError, match="has no scores"):
        run_select(config(tmp_path, scorer="nope", rules=band))
    with pytest.raises(UserError, match="unknown column"):
        run_select(config(tmp_path, scorer="model-0", rules=[{**band[0], "by": "country"}]))
    with pytest.raises(UserError, match="where"):
        run_select(config(tmp_path, scorer="model-0", rules=[{"type": "where", "sql": "no_such_column > 1"}]))
    # The reference split is left out of selections by model-0's scores only: model-1 never saw it, and a
    # selection without scores uses no model.
    german = [{"type": "where", "sql": "language = 'de'"}]
    by_reference = run_select(config(tmp_path, scorer="model-0", rules=german), dry_run=True)
    assert by_reference.counts["kept"] == 60 - 30 + 10  # 60 German documents, 30 in the split, 10 held out
    assert by_reference.counts["reference_split"] == 20
    by_other = run_select(config(tmp_path, scorer="model-1", rules=german), dry_run=True)
    assert by_other.counts["kept"] == 60 and by_other.counts["reference_split"] == 0
    only_sql = run_select(config(tmp_path, rules=german), dry_run=True)
    assert only_sql.outputs["scorer_id"] is None and only_sql.counts["kept"] == 60


def test_parse_rule_and_the_cli(tmp_path):
    assert parse_rule("band:medium:0.5:by=domain") == {"type": "band", "criterion": "medium", "rate": "0.5",
                                                       "by": "domain"}
    assert parse_rule("ccnet:head+middle:cuts=20+50") == {"type": "ccnet", "keep": ["head", "middle"],
                                                          "cuts": ["20", "50"]}
    with pytest.raises(UserError, match="rule type"):
        parse_rule("median:0.5")
    from typer.testing import CliRunner
    from pipeline.cli import app
    write_store(tmp_path)
    out = CliRunner().invoke(app, ["select", str(tmp_path), "--rule", "percentile:10:60", "--where",
                                   "language = 'en'", "--name", "cli"])
    assert out.exit_code == 0, out.output
    assert "percentile:10-60" in out.output and "TOTAL" in out.output
    manifest = json.loads((tmp_path / "selections" / "cli" / "_selection.json").read_text())
    assert [r["type"] for r in manifest["config"]["rules"]] == ["where", "percentile"]
    out = CliRunner().invoke(app, ["select", str(tmp_path), "--sweep", "low,high", "--rates", "0.2,0.4"])
    assert out.exit_code == 0 and out.output.count("high") >= 2


def test_group_report_counts_match_plain_loops():
    from pipeline.selection.report import group_report
    rng = np.random.default_rng(5)
    n = 2000
    groups = rng.choice(["a", "b", "c", None], n, p=[0.5, 0.3, 0.15, 0.05]).astype(object)
    eligible = rng.random(n) < 0.7
    kept = eligible & (rng.random(n) < 0.5)
    reason = np.where(kept, None, "band:low@0.5:above").astype(object)
    tokens = rng.integers(1, 500, n).astype(float)
    tokens[::97] = np.nan
    rows = group_report(groups, {"kept": kept, "reason": reason}, tokens, eligible).to_pylist()
    assert [r["group"] for r in rows] == ["a", "b", "c", "(none)", "TOTAL"]
    for r in rows:
        m = np.ones(n, bool) if r["group"] == "TOTAL" else \
            np.array([(g if g is not None else "(none)") == r["group"] for g in groups])
        assert r["docs"] == m.sum() and r["eligible"] == (m & eligible).sum() and r["kept"] == (m & kept).sum()
        eligible_tokens = sum(t for t, e in zip(tokens[m], eligible[m]) if e and t == t)
        kept_tokens = sum(t for t, k in zip(tokens[m], kept[m]) if k and t == t)
        assert r["eligible_tokens"] == eligible_tokens and r["tokens_kept"] == kept_tokens
        # Documents and tokens on the same base: the eligible ones.
        assert r["kept_pct_of_eligible"] == round(100 * r["kept"] / r["eligible"], 1)
        assert r["tokens_kept_pct_of_eligible"] == round(100 * kept_tokens / eligible_tokens, 1)


def test_by_says_how_many_groups_it_found_and_warns_when_one_holds_most():
    from pipeline.selection.report import group_notes
    rules = Config.model_validate({"select": {"rules": [
        {"type": "where", "sql": "true"},
        {"type": "band", "criterion": "medium", "rate": 0.5, "by": "domain"},
        {"type": "band", "criterion": "low", "rate": 0.5, "by": "host", "min_group_docs": 40}]}}).select.rules
    hosts = np.array(["a.example.com"] * 50 + ["b.example.com"] * 30 + ["c.example.com"] * 20, dtype=object)
    columns = {"domain": np.array(["example.com"] * 100, dtype=object), "host": hosts}
    domain_note, host_note = group_notes(columns, rules)
    assert domain_note.startswith("rule 1 by=domain: 1 group(s), 1 of them with at least 20 documents")
    assert "'example.com' holds 100% of the documents" in domain_note and "by=host would give 3 groups" in domain_note
    assert host_note.startswith("rule 2 by=host: 3 group(s), 1 of them with at least 40 documents")
    assert "warning" not in host_note  # the largest host holds 50%


def test_the_selection_report_carries_the_group_notes(tmp_path):
    write_store(tmp_path)  # 80% of the documents are English
    result = run_select(config(tmp_path, rules=[{"type": "band", "criterion": "medium", "rate": 0.5,
                                                 "by": "language"}]), dry_run=True)
    text = report(result).text()
    assert "rule 0 by=language: 2 group(s), 2 of them" in text and "'en' holds 80% of the documents" in text
