"""What-if tables of a selection: documents and tokens kept per group, and sweeps over criteria and
rates. Pure functions of the candidates' columns and `rules.apply_rules` outcomes.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.config import BandRule
from pipeline.errors import UserError
from pipeline.selection.rules import apply_rules


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


def group_report(groups: np.ndarray, outcome: dict, n_tokens: np.ndarray) -> pa.Table:
    """Per group (largest first) and in total: documents and tokens, kept vs all, and the reference
    split excluded."""
    names = np.array(["(none)" if g is None else str(g) for g in groups], dtype=object)
    uniq, inverse = np.unique(names, return_inverse=True)
    kept = outcome["kept"]
    tokens = np.nan_to_num(n_tokens)
    columns = {"docs": np.ones(len(names)), "reference_split": outcome["reason"] == "reference_split",
               "kept": kept, "tokens": tokens, "tokens_kept": np.where(kept, tokens, 0)}
    sums = {k: np.bincount(inverse, weights=v, minlength=len(uniq)) for k, v in columns.items()}
    totals = {k: v.sum() for k, v in sums.items()}

    def row(name, get) -> dict:
        docs, tok = get("docs"), get("tokens")
        return {"group": name, "docs": int(docs), "reference_split": int(get("reference_split")),
                "kept": int(get("kept")), "kept_pct": round(100 * get("kept") / docs, 1) if docs else 0.0,
                "tokens": int(tok), "tokens_kept": int(get("tokens_kept")),
                "tokens_kept_pct": round(100 * get("tokens_kept") / tok, 1) if tok else 0.0}
    order = np.lexsort((uniq, -sums["docs"]))
    rows = [row(str(uniq[g]), lambda k, g=g: sums[k][g]) for g in order]
    rows.append(row("TOTAL", lambda k: totals[k]))
    return pa.Table.from_pylist(rows)


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
    names = np.array(["(none)" if g is None else str(g) for g in columns[report_by]], dtype=object)
    uniq, inverse, counts = np.unique(names, return_inverse=True, return_counts=True)
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
            rows.append({"rule": f"{t['rule']}: {t['label']} on {t['score']}", "group": group, "docs": g["n"],
                         "kept": g["kept"], "thresholds": shown})
    return pa.Table.from_pylist(rows)
