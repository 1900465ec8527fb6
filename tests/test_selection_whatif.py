"""The what-if report of `curate select --dry-run` and the within-group percentiles, on a real store
(Parquet, DuckDB), against brute-force computations over the documents' known scores."""
import html.parser
import json
import math

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

import schemas
from pipeline.cli import app
from pipeline.config import Config
from pipeline.scoring.identity import ScorerIdentity
from pipeline.selection.rules import percentile_in_group
from pipeline.selection.stage import open_candidates, run_select, run_what_if
from pipeline.store import Store
from schemas import sidecars

HOSTS = {"a.news.org": "news.org", "b.news.org": "news.org", "shop.com": "shop.com"}
SID = "cccc000000000003"


def write_store(root, n=240):
    """Documents from three hosts (two in one domain) with known perplexities, many of them tied;
    some without a score row, some with a scoring error; German ones; a reference split of model-0
    (the scorer's model) with a third held out; texts with whitespace runs and HTML-special characters."""
    rng = np.random.default_rng(7)
    store = Store(root)
    docs, scores = [], []
    for i in range(n):
        host = list(HOSTS)[i % 3]
        d = f"{i:032x}"
        words = " ".join(rng.choice(["tide", "moon", "shop", "deal", "<b>", "&", "news"], 40))
        docs.append({
            "doc_id": d, "text": f"  Doc {i}\n\n\t<script>alert('{host}')</script> &amp; {words}  \n",
            "url": f"https://{host}/{i}", "host": host, "domain": HOSTS[host], "source_id": None,
            "source_file": "in.jsonl", "source_offset": i, "source_format": "jsonl", "n_bytes": 300, "n_chars": 300,
            "language": "de" if i % 7 == 0 else "en", "language_score": 0.9, "metadata": None,
            "duplicate_count": 1, "duplicate_sources": None})
        if i % 23 == 5:
            continue  # never scored
        error = "too_short" if i % 31 == 4 else None
        scale = 10.0 if host == "shop.com" else 1.0
        ppl = None if error else float(scale * 1.5 * rng.integers(4, 40))  # ties within every host
        scores.append({"doc_id": d, "scorer_id": SID, "model_name": "model-0", "backend": "torch",
                       "dtype": "float32", "truncation": "first_n:128", "n_tokens": int(rng.integers(10, 200)),
                       "n_predicted": 20, "n_bytes": 300, "nll_sum": None if ppl is None else 20 * math.log(ppl),
                       "nll_mean": None if ppl is None else math.log(ppl),
                       "perplexity": ppl, "bits_per_byte": None if ppl is None else math.log(ppl) / 3,
                       "nll_p50": None, "nll_p90": None, "surprise_fraction": None, "error": error})
    store.write_table(pa.Table.from_pylist(docs, schema=schemas.DOCS), schemas.DOCS, "docs", "part-00000.parquet")
    store.write_table(pa.Table.from_pylist(scores, schema=schemas.SCORES), schemas.SCORES,
                      "scores", f"scorer={SID}", "part-00000.parquet")
    identity = ScorerIdentity(model_name="model-0", weights_sha256="0" * 64, tokenizer="model-0@0",
                              dtype="float32", backend="torch", max_tokens=128)
    store.write_json(sidecars.SCORER, {**identity.to_dict(), "scorer_id": SID}, "scores", f"scorer={SID}", "_scorer.json")
    split = [d["doc_id"] for d in docs[::10]]
    store.write_table(pa.table({"doc_id": split, "model_name": ["model-0"] * len(split),
                                "heldout": [j % 3 == 0 for j in range(len(split))]}),
                      schemas.REFERENCE_SPLIT, "reference_splits", "model=model-0", "part-00000.parquet")
    by_id = {s["doc_id"]: s for s in scores}
    trained = {d for j, d in enumerate(split) if j % 3}
    out = []
    for doc in docs:  # what a brute force needs, one dict per document, in doc_id order
        s = by_id.get(doc["doc_id"], {})
        ppl = s.get("perplexity") if s.get("error") is None else None
        out.append({**doc, "ppl": math.nan if ppl is None else ppl, "tokens": s.get("n_tokens", 0),
                    "trained": doc["doc_id"] in trained})
    return out


def config(root, rules, name="whatif"):
    return Config.model_validate({"store": str(root), "select": {"name": name, "rules": rules}})


def quantile(values, p):
    """Linear interpolation between order statistics, written out."""
    s = sorted(values)
    pos = p * (len(s) - 1)
    lo = math.floor(pos)
    return s[lo] if lo + 1 >= len(s) else s[lo] + (pos - lo) * (s[lo + 1] - s[lo])


MEDIUM_BY_HOST = [{"type": "where", "sql": "language = 'en'"},
                  {"type": "band", "criterion": "medium", "rate": 0.5, "by": "host", "min_group_docs": 5}]


@pytest.mark.parametrize("report_by", ["domain", "host"])
def test_what_if_numbers_match_a_brute_force(tmp_path, report_by):
    docs = write_store(tmp_path)
    data = run_what_if(config(tmp_path, MEDIUM_BY_HOST), report_by=report_by)
    assert json.loads(json.dumps(data, allow_nan=False)) == data  # plain JSON data

    # (b) Kept documents and tokens per group, on one base: scored, outside the trained split, English.
    for d in docs:
        d["eligible"] = math.isfinite(d["ppl"]) and not d["trained"] and d["language"] == "en"
    bounds = {}
    for host in HOSTS:
        values = [d["ppl"] for d in docs if d["eligible"] and d["host"] == host]
        bounds[host] = (quantile(values, 0.25), quantile(values, 0.75))
    for d in docs:
        lo, hi = bounds[d["host"]]
        d["kept"] = d["eligible"] and lo < d["ppl"] <= hi
    groups = {r["group"]: r for r in data["groups"]}
    assert list(groups)[-1] == "TOTAL" and set(groups) == {d[report_by] for d in docs} | {"TOTAL"}
    for name, row in groups.items():
        mine = [d for d in docs if name in ("TOTAL", d[report_by])]
        eligible, kept = [d for d in mine if d["eligible"]], [d for d in mine if d["kept"]]
        eligible_tokens, kept_tokens = sum(d["tokens"] for d in eligible), sum(d["tokens"] for d in kept)
        assert (row["docs"], row["eligible"], row["kept"]) == (len(mine), len(eligible), len(kept))
        assert (row["eligible_tokens"], row["tokens_kept"]) == (eligible_tokens, kept_tokens)
        assert row["kept_pct_of_eligible"] == round(100 * len(kept) / len(eligible), 1)
        assert row["tokens_kept_pct_of_eligible"] == round(100 * kept_tokens / eligible_tokens, 1)
    assert data["counts"]["kept"] == groups["TOTAL"]["kept"]

    # (a) Quantiles and histogram of the rule's score among the eligible documents of each group.
    assert data["score"] == "perplexity"
    everything = np.array([d["ppl"] for d in docs if d["eligible"]])
    lo, hi = np.quantile(everything, [0.01, 0.99])
    assert data["distribution"]["range"] == pytest.approx([lo, hi])
    edges = data["distribution"]["bin_edges"]
    assert len(edges) == 13 and edges[0] == pytest.approx(lo) and edges[-1] == pytest.approx(hi)
    for row in data["distribution"]["groups"]:
        values = [d["ppl"] for d in docs if d["eligible"] and row["group"] in ("TOTAL", d[report_by])]
        assert row["n"] == len(values)
        for p in (5, 25, 50, 75, 95):
            assert row[f"p{p}"] == pytest.approx(np.quantile(values, p / 100))
        counts = [0] * 12
        for v in values:
            v = min(max(v, lo), hi)  # beyond p1 / p99: the first / last bin
            counts[min(next(i for i in range(12) if v < edges[i + 1] or i == 11), 11)] += 1
        assert row["histogram"] == counts

    # (c) Each band edge of each host: the nearest judged documents on each side, with their texts.
    assert {(e["group"], e["edge"]) for e in data["edges"]} == {(h, s) for h in HOSTS for s in ("lower", "upper")}
    for edge in data["edges"]:
        lo, hi = bounds[edge["group"]]
        t = lo if edge["edge"] == "lower" else hi
        assert edge["threshold"] == pytest.approx(t) and edge["label"] == "band:medium@0.5"
        judged = [d for d in docs if d["eligible"] and d["host"] == edge["group"]]
        above = sorted((d for d in judged if d["ppl"] > t), key=lambda d: (d["ppl"], d["doc_id"]))
        below = sorted((d for d in judged if d["ppl"] <= t), key=lambda d: (-d["ppl"], d["doc_id"]))
        inside, outside = (above, below) if edge["edge"] == "lower" else (below, above)
        assert edge["kept_side"] == ("above" if edge["edge"] == "lower" else "below")
        assert [x["doc_id"] for x in edge["inside"]] == [d["doc_id"] for d in inside[:3]]
        assert [x["doc_id"] for x in edge["outside"]] == [d["doc_id"] for d in outside[:3]]
        assert all(x["score"] == d["ppl"] for x, d in zip(edge["inside"] + edge["outside"], inside[:3] + outside[:3]))
        by_id = {d["doc_id"]: d for d in docs}
        for x in edge["inside"] + edge["outside"]:
            flat = " ".join(by_id[x["doc_id"]]["text"].split())
            assert x["host"] == edge["group"] and x["text"] == flat[:99] + "…" and len(x["text"]) == 100
    assert all(d["kept"] for e in data["edges"] for x in e["inside"] for d in docs if d["doc_id"] == x["doc_id"])
    assert not Store(tmp_path).exists("selections")


def test_a_rule_over_a_within_group_percentile_in_sql_and_numpy(tmp_path):
    docs = write_store(tmp_path)
    ppl = np.array([d["ppl"] for d in docs])
    hosts = np.array([d["host"] for d in docs], dtype=object)
    domains = np.array([d["domain"] for d in docs], dtype=object)
    # The view's window columns agree with the numpy function (every scored document counts, the
    # reference split and German ones included; unscored ones have none), ties and all.
    con = open_candidates(Store(tmp_path), {"scorer_id": SID})
    view = con.execute("SELECT perplexity_pct_in_host, perplexity_pct_in_domain, bits_per_byte_pct_in_host "
                       "FROM candidates ORDER BY doc_id").fetchnumpy()
    for column, want in (("perplexity_pct_in_host", percentile_in_group(ppl, hosts)),
                         ("perplexity_pct_in_domain", percentile_in_group(ppl, domains)),
                         ("bits_per_byte_pct_in_host", percentile_in_group(np.log(ppl) / 3, hosts))):
        got = np.asarray(view[column].filled(np.nan) if hasattr(view[column], "filled") else view[column], float)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-12)
    assert len(set(ppl[np.isfinite(ppl)])) < np.isfinite(ppl).sum()  # there were ties

    rules = [{"type": "where", "sql": "perplexity_pct_in_host <= 90"},
             {"type": "band", "criterion": "low", "rate": 0.5, "score": "perplexity_pct_in_domain"}]
    result = run_select(config(tmp_path, rules, name="pct"))
    rows = {r["doc_id"]: r for r in Store(tmp_path).read_table("selections", "pct", "part-00000.parquet").to_pylist()}
    pct_host, pct_domain = percentile_in_group(ppl, hosts), percentile_in_group(ppl, domains)
    eligible = [i for i, d in enumerate(docs) if not d["trained"] and pct_host[i] <= 90]
    upper = quantile([pct_domain[i] for i in eligible], 0.5)
    for i, d in enumerate(docs):
        row = rows[d["doc_id"]]
        assert row["kept"] == (i in eligible and pct_domain[i] <= upper)
        if i in eligible:  # the selection's score is the normalised one
            assert row["score"] == pytest.approx(pct_domain[i])
    # The band over the normalised score keeps a similar share of both domains despite shop.com's scale.
    shares = [np.mean([rows[docs[i]["doc_id"]]["kept"] for i in eligible if docs[i]["domain"] == dom])
              for dom in ("news.org", "shop.com")]
    assert all(0.35 < s < 0.65 for s in shares), shares
    assert result.outputs["thresholds"][1]["score"] == "perplexity_pct_in_domain"


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text, self.links = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data):
        self.text.append(data)


def test_the_cli_renders_the_what_if_as_a_table_json_and_html(tmp_path, monkeypatch):
    store = tmp_path / "store"
    docs = write_store(store)
    monkeypatch.chdir(tmp_path)
    args = ["select", str(store), "--where", "language = 'en'", "--rule", "band:medium:0.5:by=host:min_group_docs=5",
            "--name", "med"]
    expected = run_what_if(config(store, MEDIUM_BY_HOST, name="med"))

    table = CliRunner().invoke(app, [*args, "--dry-run"])
    assert table.exit_code == 0, table.output
    for needle in ("kept documents and tokens as % of the", "news.org", "shop.com", "kept_pct_of_eligible",
                   "p95", "histogram", "documents nearest each band edge", "outside"):
        assert needle in table.stdout, needle
    assert any(c in table.stdout for c in "▁▂▃▄▅▆▇█")

    as_json = CliRunner().invoke(app, [*args, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == expected  # the whole stdout is the JSON document
    to_file = CliRunner().invoke(app, [*args, "-f", "json", "--output", str(tmp_path / "w.json")])
    assert to_file.exit_code == 0 and json.loads((tmp_path / "w.json").read_text()) == expected

    page = CliRunner().invoke(app, [*args, "--format", "html"])
    assert page.exit_code == 0, page.output
    path = tmp_path / "whatif-med.html"
    assert str(path.name) in page.stdout and path.is_file()
    parsed = Page()
    parsed.feed(path.read_text(encoding="utf-8"))
    parsed.close()
    text = "".join(parsed.text)
    assert "script" not in parsed.tags and not parsed.links  # texts escaped, no external assets
    assert "<script>alert(" in text  # shown as text
    for group in ("news.org", "shop.com", "a.news.org", "b.news.org", "TOTAL"):
        assert group in text, group
    assert parsed.tags.count("svg") == len(expected["distribution"]["groups"]) == 3
    assert parsed.tags.count("rect") == 3 * 12
    for edge in expected["edges"]:
        assert all(x["doc_id"] in text for x in edge["inside"] + edge["outside"])
    assert not (store / "selections").exists()  # json and html are dry runs

    bad = CliRunner().invoke(app, ["select", str(store), "--sweep", "low,high", "--format", "json"])
    assert bad.exit_code != 0 and "--sweep prints a table" in str(bad.exception)
    assert len(docs) == expected["counts"]["docs"]
