"""What-if tables of a selection: documents and tokens kept per group (on one base, the eligible
documents), the score distribution per group, the documents at each band edge, the same as a
self-contained HTML page, and sweeps over criteria and rates. Pure functions of the candidates'
columns and `rules.apply_rules` outcomes; no I/O.
"""
from __future__ import annotations

import html

import numpy as np
import pyarrow as pa

from pipeline.config import BandRule
from pipeline.errors import UserError
from pipeline.selection.rules import apply_rules, group_codes, score_column


def group_notes(columns: dict[str, np.ndarray], rules: list, dominant: float = 0.8) -> list[str]:
    """What each score rule's `by` found among the candidates: how many groups get their own thresholds,
    and a warning when one group holds at least `dominant` of the documents (its thresholds are then
    the global ones in all but name), with the number of hosts when by=domain collapses them."""
    notes = []
    for i, rule in enumerate(rules):
        if rule.type == "where" or not getattr(rule, "by", None):
            continue
        values = np.array(["(none)" if v is None else str(v) for v in columns[rule.by]], dtype=object)
        if not len(values):
            continue
        uniq, counts = np.unique(values, return_counts=True)
        own = int((counts >= rule.min_group_docs).sum())
        line = (f"rule {i} by={rule.by}: {len(uniq):,} group(s), {own:,} of them with at least "
                f"{rule.min_group_docs} documents (their own thresholds; the rest share the global ones)")
        top = int(counts.argmax())
        if counts[top] >= dominant * len(values):
            line += (f"; warning: {uniq[top]!r} holds {counts[top] / len(values):.0%} of the documents, so the "
                     "thresholds are nearly global")
            if rule.by == "domain" and "host" in columns and len(set(columns["host"])) > len(uniq):
                line += f"; by=host would give {len(set(columns['host'])):,} groups"
        notes.append(line)
    return notes


ELIGIBLE = "eligible: scored, outside the excluded reference split, passing the where rules"
QUANTILES = (5, 25, 50, 75, 95)


def _groups(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group names, each document's index into them, the names' order: most documents first)."""
    uniq, inverse = group_codes(groups)
    return uniq, inverse, np.lexsort((uniq, -np.bincount(inverse, minlength=len(uniq))))


def eligible_mask(n: int, columns: dict[str, np.ndarray], rules: list, where: dict[int, np.ndarray],
                  excluded: np.ndarray | None) -> np.ndarray:
    """The documents the score rules judge, the base of every kept share: scored (a finite value in
    each score rule's column; no condition without score rules), outside the excluded reference
    split, and matching every `where` rule. Every kept document is eligible."""
    ok = np.ones(n, dtype=bool) if excluded is None else ~excluded
    for i, rule in enumerate(rules):
        ok &= where[i] if rule.type == "where" else np.isfinite(columns[score_column(rule)])
    return ok


def group_report(groups: np.ndarray, outcome: dict, n_tokens: np.ndarray, eligible: np.ndarray) -> pa.Table:
    """Per group (largest first) and in total: all documents, the eligible ones (`eligible_mask`) and
    their tokens, and the kept documents and tokens as a share of the eligible ones (one base for both)."""
    uniq, inverse, order = _groups(groups)
    kept = outcome["kept"]
    tokens = np.nan_to_num(n_tokens)
    columns = {"docs": np.ones(len(inverse)), "eligible": eligible, "kept": kept,
               "eligible_tokens": np.where(eligible, tokens, 0), "tokens_kept": np.where(kept, tokens, 0)}
    sums = {k: np.bincount(inverse, weights=v, minlength=len(uniq)) for k, v in columns.items()}

    def row(name, get) -> dict:
        eligible_docs, eligible_tokens = get("eligible"), get("eligible_tokens")
        return {"group": name, "docs": int(get("docs")), "eligible": int(eligible_docs), "kept": int(get("kept")),
                "kept_pct_of_eligible": round(100 * get("kept") / eligible_docs, 1) if eligible_docs else 0.0,
                "eligible_tokens": int(eligible_tokens), "tokens_kept": int(get("tokens_kept")),
                "tokens_kept_pct_of_eligible":
                    round(100 * get("tokens_kept") / eligible_tokens, 1) if eligible_tokens else 0.0}
    rows = [row(str(uniq[g]), lambda k, g=g: sums[k][g]) for g in order]
    rows.append(row("TOTAL", lambda k: sums[k].sum()))
    return pa.Table.from_pylist(rows)


# -- what-if: the score distribution per group and the documents at each band edge --------------------
def score_distribution(groups: np.ndarray, values: np.ndarray, eligible: np.ndarray, bins: int = 12) -> dict:
    """Per group (largest first, then TOTAL) the eligible documents' score quantiles p5 ... p95 (linear
    interpolation, as the rules' percentiles) and a histogram: `bins` equal bins over the p1..p99 range
    of all eligible documents, values below p1 / above p99 counted in the first / last bin."""
    ok = eligible & np.isfinite(values)
    lo, hi = (float(x) for x in np.quantile(values[ok], [0.01, 0.99])) if ok.any() else (0.0, 1.0)
    edges = np.histogram_bin_edges([lo, hi], bins=bins, range=(lo, hi))
    uniq, inverse, order = _groups(groups)

    def row(name: str, v: np.ndarray) -> dict:
        q = np.quantile(v, [p / 100 for p in QUANTILES]) if len(v) else [None] * len(QUANTILES)
        counts = np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)[0]
        return {"group": name, "n": int(len(v)), **{f"p{p}": None if x is None else float(x) for p, x in
                                                     zip(QUANTILES, q)}, "histogram": counts.tolist()}
    by_group = np.flatnonzero(ok)[np.argsort(inverse[ok], kind="stable")]  # each group's values together
    bounds = np.searchsorted(inverse[by_group], np.arange(len(uniq) + 1))
    rows = [row(str(uniq[g]), values[by_group[bounds[g]:bounds[g + 1]]]) for g in order]
    rows.append(row("TOTAL", values[ok]))
    return {"range": [lo, hi], "bin_edges": edges.tolist(), "groups": rows}


def sparkline(counts: list[int]) -> str:
    """Counts as block characters scaled to their maximum; an empty bin is a blank."""
    top = max(counts, default=0)
    return "".join(" " if c == 0 else "▁▂▃▄▅▆▇█"[int(np.ceil(8 * c / top)) - 1] for c in counts)


def rule_edges(rule, info: dict) -> list[tuple[str, float, bool]]:
    """(name, threshold, whether the kept side is above it) of each edge where one side of a threshold
    is kept and the other is not: a band or percentile range's finite lower and upper ends, and the
    CCNet cuts between a kept and a dropped bucket. BERTIN draws and correlation rules' score order (the
    cut falls where a token budget runs out, not at a threshold) have no edge."""
    if rule.type in ("band", "percentile"):
        return [(name, info[name], above) for name, above in (("lower", True), ("upper", False))
                if info.get(name) is not None]
    if rule.type == "ccnet":
        cuts = (("head_max", "head", "middle"), ("middle_max", "middle", "tail"))
        return [(name, info[name], above in rule.keep) for name, below, above in cuts
                if (below in rule.keep) != (above in rule.keep)]
    return []


def edge_examples(doc_ids: np.ndarray, columns: dict[str, np.ndarray], rules: list, outcome: dict,
                  per_side: int = 3, max_groups: int = 20) -> tuple[list[dict], int]:
    """For each edge (`rule_edges`) of each score rule in each of its `max_groups` largest threshold
    groups: the `per_side` documents the rule judged in that group nearest the threshold on the kept
    side (`inside`) and on the other (`outside`); a value equal to the threshold is below it. Ties go
    by position (doc_id order). Returns (edges, threshold groups left out)."""
    edges, left_out = [], 0
    for record in outcome["thresholds"]:
        rule = rules[record["rule"]]
        if rule.type == "where" or per_side <= 0:
            continue
        judged = outcome["judged"][record["rule"]]
        groups = sorted(record["groups"].items(), key=lambda kv: (-kv[1]["n"], kv[0]))
        left_out += max(0, len(groups) - max_groups)
        for name, info in groups[:max_groups]:
            rows = judged["rows"][judged["group"] == name]
            values = columns[score_column(rule)][rows]
            for edge, threshold, kept_above in rule_edges(rule, info):
                above, below = values > threshold, values <= threshold
                nearest_above = rows[above][np.lexsort((rows[above], values[above]))][:per_side]
                nearest_below = rows[below][np.lexsort((-rows[below], values[below]))[::-1]][:per_side]
                inside, outside = (nearest_above, nearest_below) if kept_above else (nearest_below, nearest_above)
                edges.append({"rule": record["rule"], "label": record["label"], "score": score_column(rule),
                              "group": name, "edge": edge, "threshold": threshold,
                              "kept_side": "above" if kept_above else "below",
                              **{side: [{"doc_id": str(doc_ids[r]), "score": float(columns[score_column(rule)][r])}
                                        for r in picked] for side, picked in (("inside", inside),
                                                                              ("outside", outside))}})
    return edges, left_out


def snippet(text: str | None, width: int = 100) -> str:
    """The first `width` characters of `text` with its whitespace collapsed to single spaces."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def with_texts(edges: list[dict], texts: dict[str, tuple[str | None, str | None]]) -> list[dict]:
    """`edges` with each example's host and text snippet from `texts` (doc_id -> (host, text))."""
    for edge in edges:
        for example in edge["inside"] + edge["outside"]:
            host, text = texts.get(example["doc_id"], (None, None))
            example.update(host=host, text=snippet(text))
    return edges


def what_if(doc_ids: np.ndarray, columns: dict[str, np.ndarray], rules: list, outcome: dict,
            eligible: np.ndarray, report_by: str, per_side: int = 3, bins: int = 12) -> dict:
    """The what-if report of a dry run as plain JSON-ready data: kept documents and tokens per
    `report_by` group on the eligible base, the distribution of the first score rule's score (else
    perplexity), and the documents at each band edge (texts filled in later with `with_texts`)."""
    score = next((score_column(r) for r in rules if r.type != "where"), "perplexity")
    values = columns.get(score, np.full(len(doc_ids), np.nan))
    edges, left_out = edge_examples(doc_ids, columns, rules, outcome, per_side)
    return {"report_by": report_by, "base": ELIGIBLE, "score": score,
            "groups": group_report(columns[report_by], outcome, columns["n_tokens"], eligible).to_pylist(),
            "distribution": score_distribution(columns[report_by], values, eligible, bins),
            "thresholds": outcome["thresholds"], "edges": edges, "edge_groups_left_out": left_out}


def _short(x, digits: int = 4) -> float | None:
    return None if x is None else float(f"{x:.{digits}g}")


def distribution_table(distribution: dict) -> pa.Table:
    """The distribution of `what_if` for the terminal: quantiles to 4 digits and the histogram as a sparkline."""
    return pa.Table.from_pylist([{**{k: _short(v) if k.startswith("p") else v for k, v in row.items()
                                     if k != "histogram"}, "histogram": sparkline(row["histogram"])}
                                 for row in distribution["groups"]])


def edges_table(edges: list[dict]) -> pa.Table:
    """One row per edge example of `what_if`: rule, group, edge, side, the document and its text."""
    return pa.Table.from_pylist([
        {"rule": f"{e['rule']}: {e['label']}", "group": e["group"], "edge": f"{e['edge']} {e['threshold']:.6g}",
         "side": side, "doc_id": x["doc_id"], "host": x.get("host"), "score": _short(x["score"], 6),
         "text": x.get("text")}
        for e in edges for side in ("inside", "outside") for x in e[side]])


def _svg_histogram(counts: list[int], width: int = 144, height: int = 28) -> str:
    """Counts as an inline SVG bar chart (each bar's count in its tooltip)."""
    top, step = max(max(counts, default=0), 1), width / max(len(counts), 1)
    bars = "".join(f'<rect x="{i * step:.1f}" y="{height - height * c / top:.1f}" width="{step - 1:.1f}" '
                   f'height="{height * c / top:.1f}"><title>{c}</title></rect>' for i, c in enumerate(counts))
    return f'<svg width="{width}" height="{height}" role="img" aria-label="histogram">{bars}</svg>'


def _html_table(rows: list[dict], raw: tuple[str, ...] = ()) -> str:
    """Rows as an HTML table, every cell escaped except those of the `raw` columns (markup built here)."""
    if not rows:
        return "<p>(none)</p>"
    cell = (lambda k, v: v if k in raw else html.escape("" if v is None else f"{v:.6g}" if isinstance(v, float)
                                                        else f"{v:,}" if isinstance(v, int) else str(v)))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{cell(k, v)}</td>" for k, v in row.items()) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def what_if_html(report: dict) -> str:
    """The `what_if` report (with the stage's name, scorer and counts) as one self-contained HTML page:
    inline CSS and SVG, no external assets, every value from the data escaped."""
    e, dist = html.escape, report["distribution"]
    title = f"what-if: selection {report.get('name', '')!r}"
    lo, hi = dist["range"]
    dist_rows = [{**{k: v for k, v in row.items() if k != "histogram"},
                  "histogram": _svg_histogram(row["histogram"])} for row in dist["groups"]]
    edge_html = "".join(
        f"<h3>rule {x['rule']} {e(x['label'])} on {e(x['score'])}, group {e(x['group'])}: {e(x['edge'])} "
        f"{x['threshold']:.6g} (kept {e(x['kept_side'])})</h3>"
        + _html_table([{"side": side, **ex} for side in ("inside", "outside") for ex in x[side]])
        for x in report["edges"])
    notes = "".join(f"<li>{e(n)}</li>" for n in report.get("notes", []))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right;vertical-align:middle}} td:last-child{{text-align:left}}
th{{background:#f0f0f0}} svg rect{{fill:#4a7bb7}} h3{{font-size:1em;margin-top:1.2em}}</style></head>
<body><h1>{e(title)}</h1>
<p>scorer {e(str(report.get('scorer_id')))}; groups by {e(report['report_by'])}; {e(report['base'])}</p>
<ul>{notes}</ul>
<h2>kept per {e(report['report_by'])}, % of eligible documents and tokens</h2>{_html_table(report['groups'])}
<h2>distribution of {e(report['score'])} per {e(report['report_by'])}</h2>
<p>histogram: {len(dist['bin_edges']) - 1} bins over p1..p99 = {lo:.4g} .. {hi:.4g} (outside: first / last bin)</p>
{_html_table(dist_rows, raw=("histogram",))}
<h2>rules and thresholds</h2>{_html_table(thresholds_table(report['thresholds']).to_pylist())}
<h2>documents at each band edge</h2>{edge_html or "<p>(no band edges)</p>"}
</body></html>
"""


def parse_sweep(criteria: str, rates: str) -> tuple[list[str], list[float]]:
    """`--sweep low,medium,high --rates 0.1,0.3` as (criteria, rates)."""
    try:
        rate_list = [float(r) for r in rates.split(",")]
    except ValueError:
        raise UserError(f"--rates {rates!r}: expected numbers separated by commas") from None
    names = [c.strip() for c in criteria.split(",")]
    unknown = [c for c in names if c not in ("low", "medium", "high")]
    if unknown:
        raise UserError(f"--sweep: unknown criteria {unknown}; use low, medium, high")
    return names, rate_list


def sweep_rules(rules: list, criterion: str, rate: float) -> list:
    """`rules` with the last band/percentile rule replaced by a band at (criterion, rate), or with
    one (global, on perplexity) appended if there is none."""
    rules = list(rules)
    for i in range(len(rules) - 1, -1, -1):
        if rules[i].type in ("band", "percentile"):
            base = {k: v for k, v in rules[i].model_dump().items() if k in ("score", "by", "min_group_docs")}
            rules[i] = BandRule(type="band", criterion=criterion, rate=rate, **base)
            return rules
    return rules + [BandRule(type="band", criterion=criterion, rate=rate)]


def sweep_table(doc_ids, columns, rules, seed, where, excluded, criteria, rates, report_by: str, top: int = 8) -> pa.Table:
    """One row per (criterion, rate): documents and tokens kept, and the kept share of the largest groups."""
    uniq, inverse = group_codes(columns[report_by])
    counts = np.bincount(inverse, minlength=len(uniq))
    biggest = np.argsort(-counts, kind="stable")[:top]
    tokens = np.nan_to_num(columns["n_tokens"])
    rows = []
    for criterion in criteria:
        for rate in rates:
            out = apply_rules(doc_ids, columns, sweep_rules(rules, criterion, rate), seed, where, excluded)
            kept = out["kept"]
            row = {"criterion": criterion, "rate": rate, "kept": int(kept.sum()),
                   "kept %": round(100 * kept.mean(), 1),
                   "tokens %": round(100 * tokens[kept].sum() / max(tokens.sum(), 1), 1)}
            kept_per_group = np.bincount(inverse, weights=kept, minlength=len(uniq))
            for g in biggest:  # the kept share of each large group
                row[f"{str(uniq[g])[:24]} %"] = round(100 * kept_per_group[g] / counts[g], 1)
            rows.append(row)
    return pa.Table.from_pylist(rows)


def thresholds_table(thresholds: list[dict]) -> pa.Table:
    """One row per (rule, threshold group) of a selection's recorded thresholds, for printing."""
    rows = []
    for t in thresholds:
        if t["type"] == "where":
            rows.append({"rule": f"{t['rule']}: where {t['sql']}", "group": "", "docs": t["candidates"],
                         "kept": t["kept"], "thresholds": ""})
            continue
        for group, g in t["groups"].items():
            values = {k: v for k, v in g.items() if k not in ("n", "kept")}
            shown = ", ".join(f"{k} {'-' if v is None else f'{v:.4g}'}" for k, v in values.items())
            counted = f" (tokens: {t['tokens']})" if t.get("tokens") else ""  # a correlation rule's token counts
            rows.append({"rule": f"{t['rule']}: {t['label']} on {t['score']}{counted}", "group": group, "docs": g["n"],
                         "kept": g["kept"], "thresholds": shown})
    return pa.Table.from_pylist(rows)
