"""Select stage: selection rules over the store's scores -> `selections/<name>/`.

DuckDB reads `docs` joined with one scorer's scores (no text unless a rule needs it) into columns;
`pipeline.selection.apply_rules` decides; the result, one row per document with `kept` and the
reason it was dropped, is written next to `_selection.json` (rules, thresholds per group, counts,
scorer, inputs). `where` rules are DuckDB predicates over the view `candidates` (every docs column
plus the scorer's perplexity, bits_per_byte, nll_mean, nll_sum, n_tokens, surprise_fraction,
score_error), and every other store view (scores, ratings, ...) can be used in subqueries.

A selection is named by its config and inputs (`selection_id`); re-running an unchanged selection
is a no-op, and a changed one must be overwritten explicitly.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

import schemas
from pipeline import selection
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.store import Store, code_version, new_run_record, utc_now

STAGE = "select"
ROWS_PER_PART = 1_000_000
MANIFEST = "_selection.json"
SCORER_COLUMNS = ("perplexity", "bits_per_byte", "nll_mean", "nll_sum", "n_tokens", "n_predicted",
                  "surprise_fraction")


@dataclass
class SelectResult:
    name: str
    selection_id: str
    scorer_id: str | None
    counts: dict
    timings: dict
    thresholds: list
    report: pa.Table          # per report group: documents and tokens, kept vs total
    skipped: bool = False     # an identical selection was already in the store
    written: bool = True      # False for a dry run


# -- scorer and inputs --------------------------------------------------------------------------
def store_scorers(store: Store) -> dict[str, dict]:
    """scorer_id -> identity (from scores/scorer=<id>/_scorer.json) of every scorer with scores."""
    out = {}
    info = store.fs.get_file_info(pafs.FileSelector(store.path("scores"), allow_not_found=True))
    for entry in info:
        if entry.type == pafs.FileType.Directory and entry.base_name.startswith("scorer="):
            sid = entry.base_name.split("=", 1)[1]
            if store.list_files("scores", entry.base_name, suffix=".parquet"):
                ident = store.read_json("scores", entry.base_name, "_scorer.json") \
                    if store.exists("scores", entry.base_name, "_scorer.json") else {}
                out[sid] = {"scorer_id": sid, **ident}
    return out


def resolve_scorer(config: Config, store: Store, needed: bool) -> dict | None:
    """The scorer whose scores the rules use: select.scorer (an id or a model name), else the score
    stage's scorer, else the store's only scorer."""
    scorers = store_scorers(store)
    wanted = config.select.scorer
    listing = ", ".join(f"{sid} ({s.get('model_name', '?')})" for sid, s in scorers.items()) or "none"
    if wanted:
        matches = [s for sid, s in scorers.items() if wanted in (sid, s.get("model_name"))]
        if len(matches) != 1:
            raise UserError(f"select.scorer {wanted!r} {'is ambiguous' if matches else 'has no scores'} in "
                            f"{store.uri}; scorers: {listing}")
        return matches[0]
    if config.score.model and not config.score.service_url:
        from pipeline.score import local_identity
        try:
            sid = local_identity(config.score).scorer_id
        except UserError:
            sid = None
        if sid in scorers:
            return scorers[sid]
    if len(scorers) == 1:
        return next(iter(scorers.values()))
    if needed:
        raise UserError(f"the selection rules need scores: set select.scorer to one of: {listing}"
                        if scorers else f"no scores in {store.uri}: run `curate score` first")
    return None


def _files_fingerprint(store: Store, *rel: str) -> list:
    info = store.fs.get_file_info(pafs.FileSelector(store.path(*rel), recursive=True, allow_not_found=True))
    return sorted([i.path[len(store.base):], i.size] for i in info
                  if i.type == pafs.FileType.File and not i.base_name.startswith(".tmp-"))


def selection_id(config: Config, store: Store, scorer_id: str | None) -> str:
    """A hash of the select config and everything it reads: docs, the scorer's parts, reference splits."""
    inputs = {"docs": _files_fingerprint(store, "docs"),
              "scores": _files_fingerprint(store, "scores", f"scorer={scorer_id}") if scorer_id else [],
              "reference_splits": _files_fingerprint(store, "reference_splits")}
    blob = json.dumps({"select": config.select.model_dump(mode="json"), "scorer_id": scorer_id,
                       "inputs": inputs}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def parse_rule(text: str) -> dict:
    """A rule from its command-line form: `band:medium:0.5`, `percentile:10:60`, `ccnet:head+middle`,
    `bertin:gaussian:0.5`, each optionally followed by `:key=value` options (`:by=domain`,
    `:score=bits_per_byte`, `:min_group_docs=50`, `:width=4.5`, `:cuts=30+60`)."""
    positional = {"band": ("criterion", "rate"), "percentile": ("lower", "upper"), "ccnet": ("keep",),
                  "bertin": ("method", "rate")}
    kind, *parts = text.split(":")
    if kind not in positional:
        raise UserError(f"--rule {text!r}: the rule type must be one of {', '.join(positional)} "
                        f"(SQL predicates go in --where)")
    rule: dict = {"type": kind}
    args = [p for p in parts if "=" not in p]
    if len(args) > len(positional[kind]):
        raise UserError(f"--rule {text!r}: {kind} takes {':'.join(positional[kind])} then key=value options")
    rule.update(zip(positional[kind], args))
    rule.update(p.split("=", 1) for p in parts if "=" in p)
    for key in ("keep", "cuts"):
        if key in rule:
            rule[key] = rule[key].split("+")
    return rule


# -- reading the candidates -----------------------------------------------------------------------
def open_candidates(store: Store, scorer: dict | None):
    """A DuckDB connection with the store's views plus `candidates` (docs + this scorer's scores)."""
    from pipeline.sql import connect
    con, views = connect(store)
    if "docs" not in views:
        raise UserError(f"no documents in {store.uri}/docs: run `curate ingest` first")
    if scorer:
        glob = store.spark_path("scores", f"scorer={scorer['scorer_id']}", "part-*.parquet").replace("'", "''")
        score_cols = ", ".join(f"s.{c}" for c in SCORER_COLUMNS)
        con.execute(f"""CREATE VIEW candidates AS
            SELECT d.*, {score_cols}, s.n_bytes AS scored_bytes, s.error AS score_error
            FROM docs d LEFT JOIN read_parquet('{glob}') s USING (doc_id)""")
    else:
        nulls = ", ".join(f"CAST(NULL AS DOUBLE) AS {c}" for c in SCORER_COLUMNS)
        con.execute(f"CREATE VIEW candidates AS SELECT d.*, {nulls}, CAST(NULL AS BIGINT) AS scored_bytes, "
                    "CAST(NULL AS VARCHAR) AS score_error FROM docs d")
    return con


def read_candidates(con, by_columns: set[str], need_ccnet: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """doc_ids (sorted) and the columns the rules use: scores (NaN if unscored), `by` columns,
    n_tokens and n_bytes; ccnet_perplexity when a rule needs it (reads the text to count words)."""
    known = {r[0] for r in con.execute("DESCRIBE candidates").fetchall()}
    unknown = sorted(by_columns - known)
    if unknown:
        raise UserError(f"unknown column(s) in a rule's `by`: {', '.join(unknown)}; docs columns: "
                        f"{', '.join(sorted(known))}")
    scored = "score_error IS NULL"
    cols = [f"CASE WHEN {scored} THEN {c} END AS {c}" for c in ("perplexity", "bits_per_byte", "nll_mean")]
    cols += [f'"{c}"' for c in sorted(by_columns)] + ["n_tokens", "n_bytes"]
    if need_ccnet:
        # Words and lines of the scored span: the document's counts times the share of its bytes
        # that was scored (all of it unless first_n truncation cut it).
        cols += [f"CASE WHEN {scored} THEN nll_sum END AS nll_sum",
                 "len(regexp_split_to_array(trim(text), '\\s+')) AS n_words",
                 "len(string_split(text, chr(10))) AS n_lines",
                 "least(1.0, scored_bytes / greatest(n_bytes, 1)) AS scored_share"]
    table = con.sql(f"SELECT doc_id, {', '.join(cols)} FROM candidates ORDER BY doc_id").to_arrow_table()
    columns = {}
    for name in table.column_names[1:]:
        col = table.column(name)
        if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
            columns[name] = col.to_numpy(zero_copy_only=False).astype(float)  # nulls -> NaN
        else:
            columns[name] = np.array(col.to_pylist(), dtype=object)
    if need_ccnet:
        share = columns.pop("scored_share")
        columns["ccnet_perplexity"] = selection.ccnet_perplexity(
            columns.pop("nll_sum"), columns.pop("n_words") * share, columns.pop("n_lines") * share)
    return np.array(table.column("doc_id").to_pylist(), dtype=object), columns


def where_masks(con, rules) -> dict[int, np.ndarray]:
    """Each `where` rule's match over `candidates`, aligned with read_candidates' doc_id order."""
    import duckdb
    out = {}
    for i, rule in enumerate(rules):
        if rule.type == "where":
            try:
                matches = con.execute(f"SELECT coalesce(({rule.sql}), false) FROM candidates ORDER BY doc_id").fetchnumpy()
            except duckdb.Error as e:
                raise UserError(f"select rule {i} (where {rule.sql!r}): {str(e).splitlines()[0]}") from None
            out[i] = np.asarray(next(iter(matches.values())), dtype=bool)
    return out


def reference_split_mask(con, store: Store) -> np.ndarray | None:
    """Documents some reference model in the store trained on (held-out ones are not excluded)."""
    if not store.list_files("reference_splits") and not _files_fingerprint(store, "reference_splits"):
        return None
    mask = con.execute("""SELECT doc_id IN (SELECT doc_id FROM reference_splits WHERE NOT heldout)
                          FROM candidates ORDER BY doc_id""").fetchnumpy()
    return np.asarray(next(iter(mask.values())), dtype=bool)


# -- reports ----------------------------------------------------------------------------------------
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


def sweep_rules(rules: list, criterion: str, rate: float) -> list:
    """`rules` with the last band/percentile rule replaced by a band at (criterion, rate), or with
    one (global, on perplexity) appended if there is none."""
    from pipeline.config import BandRule
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
            out = selection.apply_rules(doc_ids, columns, sweep_rules(rules, criterion, rate), seed, where, excluded)
            kept = out["kept"]
            row = {"criterion": criterion, "rate": rate, "kept": int(kept.sum()),
                   "kept %": round(100 * kept.mean(), 1),
                   "tokens %": round(100 * tokens[kept].sum() / max(tokens.sum(), 1), 1)}
            kept_per_group = np.bincount(inverse, weights=kept, minlength=len(uniq))
            for g in biggest:  # the kept share of each large group
                row[f"{str(uniq[g])[:24]} %"] = round(100 * kept_per_group[g] / counts[g], 1)
            rows.append(row)
    return pa.Table.from_pylist(rows)


# -- the stage --------------------------------------------------------------------------------------
def run_select(config: Config, overwrite: bool = False, dry_run: bool = False, report_by: str = "domain",
               sweep: tuple[list[str], list[float]] | None = None) -> SelectResult:
    """Apply config.select to the store; write selections/<name>/ unless `dry_run` (or `sweep`,
    which returns the sweep table as the report and writes nothing)."""
    store = Store(config.store)
    cfg = config.select
    rules = cfg.rules
    score_rules = [r for r in rules if r.type != "where"]
    scorer = resolve_scorer(config, store, needed=bool(score_rules) or sweep is not None)
    scorer_id = scorer["scorer_id"] if scorer else None
    sel_id = selection_id(config, store, scorer_id)
    rel = ("selections", cfg.name)
    previous = store.read_json(*rel, MANIFEST) if store.exists(*rel, MANIFEST) else None
    if previous and previous.get("selection_id") == sel_id and not (dry_run or sweep):
        return SelectResult(cfg.name, sel_id, scorer_id, previous["counts"], previous["timings"],
                            previous["thresholds"], pa.Table.from_pylist(previous["report"]), skipped=True)
    if previous and not (dry_run or sweep or overwrite):
        raise UserError(f"selection {cfg.name!r} exists with other rules or inputs "
                        f"(selection_id {previous.get('selection_id')} vs {sel_id}): pass --overwrite to "
                        f"replace it, or set select.name")

    t0 = time.time()
    con = open_candidates(store, scorer)
    by_columns = {r.by for r in score_rules if r.by} | {report_by}
    doc_ids, columns = read_candidates(con, by_columns, need_ccnet=any(r.score == "ccnet_perplexity" for r in score_rules))
    if len(set(doc_ids)) != len(doc_ids):
        raise UserError(f"scorer {scorer_id} has several score rows for some documents; re-score into a clean "
                        f"scores/scorer={scorer_id}/")
    where = where_masks(con, rules)
    excluded = reference_split_mask(con, store) if cfg.exclude_reference_split else None
    t_read = time.time() - t0
    if sweep is not None:
        criteria, rates = sweep
        table = sweep_table(doc_ids, columns, rules, cfg.seed, where, excluded, criteria, rates, report_by)
        return SelectResult(cfg.name, sel_id, scorer_id, {}, {"read_s": round(t_read, 3)}, [], table, written=False)
    outcome = selection.apply_rules(doc_ids, columns, rules, cfg.seed, where, excluded)
    report = group_report(columns[report_by], outcome, columns["n_tokens"])
    tokens = np.nan_to_num(columns["n_tokens"])
    reasons: dict[str, int] = {}
    for r in outcome["reason"][~outcome["kept"]]:
        reasons[r] = reasons.get(r, 0) + 1
    counts = {"docs": len(doc_ids), "kept": int(outcome["kept"].sum()),
              "dropped": int((~outcome["kept"]).sum()),
              "reference_split": reasons.get("reference_split", 0), "no_score": reasons.get("no_score", 0),
              "tokens": int(tokens.sum()), "tokens_kept": int(tokens[outcome["kept"]].sum())}
    timings = {"read_s": round(t_read, 3), "total_s": round(time.time() - t0, 3)}
    result = SelectResult(cfg.name, sel_id, scorer_id, counts, timings, outcome["thresholds"], report,
                          written=not dry_run)
    if dry_run:
        return result

    record = new_run_record(STAGE, config, [store.spark_path("docs")] +
                            ([store.spark_path("scores", f"scorer={scorer_id}")] if scorer_id else []))
    with store.recorded_run(record):
        store.delete(*rel)  # parts of an older or unfinished selection of this name
        table = pa.table({"doc_id": pa.array(doc_ids, pa.string()), "kept": outcome["kept"],
                          "reason": pa.array(outcome["reason"], pa.string()),
                          "score": pa.array(outcome["score"], pa.float64(), from_pandas=True),
                          "group": pa.array(outcome["group"], pa.string())})
        for part, start in enumerate(range(0, max(len(table), 1), ROWS_PER_PART)):
            store.write_table(table.slice(start, ROWS_PER_PART), schemas.SELECTION, *rel, f"part-{part:05d}.parquet")
        timings["total_s"] = round(time.time() - t0, 3)
        # Written last: its presence marks the selection finished.
        store.write_json({"name": cfg.name, "selection_id": sel_id, "scorer_id": scorer_id, "scorer": scorer,
                          "config": cfg.model_dump(mode="json"), "counts": counts, "reasons": reasons,
                          "timings": timings, "thresholds": outcome["thresholds"], "report": report.to_pylist(),
                          "report_by": report_by, "code_version": code_version(), "created_at": utc_now()},
                         *rel, MANIFEST)
        store.finish_run(record, counts, timings)
    return result
