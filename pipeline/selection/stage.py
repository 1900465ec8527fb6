"""Select stage: selection rules over the store's scores -> `selections/<name>/`.

DuckDB reads `docs` joined with one scorer's scores (no text unless a rule needs it) into columns;
`rules.apply_rules` decides; the result, one row per document with `kept` and the
reason it was dropped, is written next to `_selection.json` (rules, thresholds per group, counts,
scorer, inputs). `where` rules are DuckDB predicates over the view `candidates` (every docs column
plus the scorer's perplexity, bits_per_byte, nll_mean, nll_sum, n_tokens, surprise_fraction,
score_error, and `<column>_pct_in_host` / `_pct_in_domain` for perplexity, bits_per_byte and nll_mean),
and every other store view (scores, ratings, ...) can be used in subqueries. A `correlation` rule adds
`page_score`, P(include) of its `curate correlate` run's page selector (correlations/<run>/page_scores/);
a `rating` rule adds its rater's parsed ratings (ratings/rater=<id>/): rating_domain and
rating_<criterion>, rating_<criterion>_expected for the 14 criteria (`selection.rating.ratings_sql`).
Both count the tokens of a document as the scorer's n_tokens, else n_bytes / 4 (`page_tokens`).

A `_pct_in_` column is the document's percentile (0-100) among the scored documents of its host or
domain (`rules.percentile_in_group`): every scored document counts, the reference split and the
documents `where` rules drop included, so it is a property of the document, the same in the view and
in a score rule's `score:`; an unscored document (no score row, an error, a non-finite score) has
none (NULL / NaN) and counts in no group.

A dry run also returns the what-if report (`report.what_if`: kept per group on the eligible base,
the score distribution per group, and the documents at each band edge, their texts read for those
documents only); `run_what_if` returns it as a plain dict.

A selection is named by its config and inputs (`selection_id`); re-running an unchanged selection
is a no-op, and a changed one must be overwritten explicitly.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

import schemas
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.hashing import short_digest
from pipeline.rating.raters import resolve_rater
from pipeline.selection.report import (ELIGIBLE, distribution_table, edges_table, eligible_mask, group_notes,
                                       group_report, sweep_table, thresholds_table, what_if, with_texts)
from pipeline.selection.rating import add_quality_mix, rating_columns, ratings_sql
from pipeline.selection.rules import (GROUP_PERCENTILES, PAGE_SCORE, PAGE_TOKENS, apply_rules, ccnet_perplexity,
                                      percentile_in_group)
from pipeline.stage import Report, StageResult, StageRun, require
from pipeline.store import Store, code_version, utc_now
from schemas import sidecars

STAGE = "select"
ROWS_PER_PART = 1_000_000
MANIFEST = "_selection.json"
SCORER_COLUMNS = ("perplexity", "bits_per_byte", "nll_mean", "nll_sum", "n_tokens", "n_predicted",
                  "surprise_fraction")


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
    """The scorer whose scores the rules use: select.scorer (an id or a model name), else the distill
    stage's student (when `stages` has distill), else the score stage's scorer, else the store's only
    scorer."""
    scorers = store_scorers(store)
    wanted = config.select.scorer
    listing = ", ".join(f"{sid} ({s.get('model_name', '?')})" for sid, s in scorers.items()) or "none"
    if wanted:
        matches = [s for sid, s in scorers.items() if wanted in (sid, s.get("model_name"))]
        if len(matches) != 1:
            raise UserError(f"select.scorer {wanted!r} {'is ambiguous' if matches else 'has no scores'} in "
                            f"{store.uri}; scorers: {listing}")
        return matches[0]
    if "distill" in config.stages:   # a run that distils selects with its student
        from pipeline.distill.stage import student_dir
        from pipeline.scoring.identity import is_student_dir, student_identity
        if is_student_dir(student_dir(config)):
            sid = student_identity(student_dir(config)).scorer_id
            if sid in scorers:
                return scorers[sid]
    if config.score.model and not config.score.service_url:
        from pipeline.scoring.identity import local_identity
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


def page_score_run(config: Config, store: Store) -> str | None:
    """The correlate run whose page scores the selection's correlation rules read (one per selection),
    or None without such rules; a UserError when it has none in the store."""
    runs = sorted({r.run for r in config.select.rules if r.type == "correlation"})
    if len(runs) > 1:
        raise UserError(f"select: correlation rules of one selection read one correlate run, got {', '.join(runs)}; "
                        "select with one, then narrow with a where rule over the `selections` view")
    if runs and not [f for f in store.list_files("correlations", runs[0], "page_scores") if f.startswith("part-")]:
        from pipeline.correlations.sources import stored_runs
        found = stored_runs(store, holding="page_scores")
        raise UserError(f"select: no page scores of correlate run {runs[0]!r} in {store.uri} "
                        f"(correlations/{runs[0]}/page_scores/): run `curate correlate` first (correlate.name "
                        f"{runs[0]}); runs with page scores: {', '.join(found) or 'none'}")
    return runs[0] if runs else None


def rating_rater(config: Config, store: Store) -> dict | None:
    """The rater whose ratings the selection's rating rules read (one per selection), or None without such
    rules; a UserError listing the store's raters when a rule's rater is not there."""
    from pipeline.rating.stage import students_rater_id
    raters = {}
    wanted_raters = sorted({r.rater for r in config.select.rules if r.type == "rating"}, key=str)
    preferred = students_rater_id(config) if None in wanted_raters else None
    for wanted in wanted_raters:
        rater = resolve_rater(store, wanted, preferred)
        raters[rater["rater_id"]] = rater
    if len(raters) > 1:
        raise UserError(f"select: rating rules of one selection read one rater, got {', '.join(raters)}; select "
                        "with one, then narrow with a where rule over the `selections` view")
    return next(iter(raters.values()), None)


def selection_id(config: Config, store: Store, scorer_id: str | None, page_run: str | None = None,
                 rater_id: str | None = None) -> str:
    """A hash of the select config and everything it reads: docs, the scorer's parts, reference splits,
    the page scores of a correlation rule's run (a new `curate correlate` run re-selects) and the ratings
    of a rating rule's rater."""
    inputs = {"docs": _files_fingerprint(store, "docs"),
              "scores": _files_fingerprint(store, "scores", f"scorer={scorer_id}") if scorer_id else [],
              "reference_splits": _files_fingerprint(store, "reference_splits")}
    if page_run:  # only then: the ids of selections without correlation rules stay what they were
        inputs["page_scores"] = _files_fingerprint(store, "correlations", page_run, "page_scores")
    if rater_id:  # likewise
        inputs["ratings"] = _files_fingerprint(store, "ratings", f"rater={rater_id}")
    return short_digest({"select": config.select.model_dump(mode="json"), "scorer_id": scorer_id, "inputs": inputs})


# -- reading the candidates -----------------------------------------------------------------------
def open_candidates(store: Store, scorer: dict | None, page_run: str | None = None, rater_id: str | None = None):
    """A DuckDB connection with the store's views plus `candidates` (docs + this scorer's scores, and
    `page_score`, p_include of the correlate run `page_run`, and the ratings of `rater_id`, when given)."""
    from pipeline.sql import connect
    con, views = connect(store)
    if scorer:
        glob = store.spark_path("scores", f"scorer={scorer['scorer_id']}", "part-*.parquet").replace("'", "''")
        score_cols = ", ".join(f"s.{c}" for c in SCORER_COLUMNS)
        # percentile_in_group in SQL: 100 * (average rank - 0.5) / n among the group's scored documents,
        # the average rank of tied values being rank() (their first) + (ties - 1) / 2. DuckDB computes
        # only the window columns a query uses.
        pct = []
        for name, (column, group) in GROUP_PERCENTILES.items():
            ok = f"(score_error IS NULL AND isfinite({column}))"
            pct.append(f"""CASE WHEN {ok} THEN 100 * (rank() OVER (PARTITION BY {group}, {ok} ORDER BY {column})
                + (count(*) OVER (PARTITION BY {group}, {ok}, {column}) - 1) / 2 - 0.5)
                / count(*) OVER (PARTITION BY {group}, {ok}) END AS {name}""")
        sql = f"""SELECT *, {', '.join(pct)} FROM (
            SELECT d.*, {score_cols}, s.n_bytes AS scored_bytes, s.error AS score_error
            FROM docs d LEFT JOIN read_parquet('{glob}') s USING (doc_id))"""
    else:
        nulls = ", ".join(f"CAST(NULL AS DOUBLE) AS {c}" for c in (*SCORER_COLUMNS, *GROUP_PERCENTILES))
        sql = (f"SELECT d.*, {nulls}, CAST(NULL AS BIGINT) AS scored_bytes, "
               "CAST(NULL AS VARCHAR) AS score_error FROM docs d")
    if page_run:
        glob = store.spark_path("correlations", page_run, "page_scores", "part-*.parquet").replace("'", "''")
        sql = (f"SELECT c.*, p.p_include AS {PAGE_SCORE} FROM ({sql}) c LEFT JOIN "
               f"(SELECT doc_id, p_include FROM read_parquet('{glob}')) p USING (doc_id)")
    if rater_id:
        glob = store.spark_path("ratings", f"rater={rater_id}", "part-*.parquet").replace("'", "''")
        sql = f"SELECT c.*, r.* EXCLUDE (doc_id) FROM ({sql}) c LEFT JOIN ({ratings_sql(glob)}) r USING (doc_id)"
    con.execute(f"CREATE VIEW candidates AS {sql}")
    return con


def example_texts(con, doc_ids: list[str], chars: int = 2000) -> dict[str, tuple]:
    """doc_id -> (host, the first `chars` characters of the text) of these documents only."""
    if not doc_ids:
        return {}
    rows = con.execute("SELECT doc_id, host, left(text, ?) FROM docs WHERE doc_id IN (SELECT unnest(?))",
                       [chars, doc_ids]).fetchall()
    return {d: (host, text) for d, host, text in rows}


def read_candidates(con, by_columns: set[str], need_ccnet: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """doc_ids (sorted) and the columns the rules use: scores (NaN if unscored), `by` columns,
    n_tokens and n_bytes, page_score when the view has it; ccnet_perplexity when a rule needs it
    (reads the text to count words)."""
    known = {r[0] for r in con.execute("DESCRIBE candidates").fetchall()}
    unknown = sorted(by_columns - known)
    if unknown:
        raise UserError(f"unknown column(s) in a rule's `by` or `sources`: {', '.join(unknown)}; docs columns: "
                        f"{', '.join(sorted(known))}")
    scored = "score_error IS NULL"
    cols = [f"CASE WHEN {scored} THEN {c} END AS {c}" for c in ("perplexity", "bits_per_byte", "nll_mean")]
    cols += [f'"{c}"' for c in sorted(by_columns)] + ["n_tokens", "n_bytes"] + [PAGE_SCORE] * (PAGE_SCORE in known)
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
        columns["ccnet_perplexity"] = ccnet_perplexity(
            columns.pop("nll_sum"), columns.pop("n_words") * share, columns.pop("n_lines") * share)
    return np.array(table.column("doc_id").to_pylist(), dtype=object), columns


def page_tokens(columns: dict[str, np.ndarray], scorer_id: str | None) -> str:
    """Fill in the tokens a correlation or rating rule counts per document (PAGE_TOKENS): the scorer's
    n_tokens, the document's n_bytes / 4 where there is none (no scorer, or no score row). Returns how
    they were counted."""
    n_tokens, estimate = columns["n_tokens"], columns["n_bytes"] / 4
    missing = ~np.isfinite(n_tokens)
    columns[PAGE_TOKENS] = np.where(missing, estimate, n_tokens)
    if scorer_id is None:
        return "n_bytes/4 estimate"
    without = int(missing.sum())
    return f"n_tokens of scorer {scorer_id}" + (f", n_bytes/4 estimate for {without:,} without" if without else "")


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


def reference_split_mask(con, store: Store, scorer: dict | None) -> np.ndarray | None:
    """Documents the scorer's model trained on, when it is a reference model trained on this store
    (held-out ones are not excluded). Another scorer never saw them: its scores of them are fair."""
    if scorer is None or not _files_fingerprint(store, "reference_splits"):
        return None
    mask = con.execute("""SELECT doc_id IN (SELECT doc_id FROM reference_splits WHERE NOT heldout
                                            AND model_name = ?)
                          FROM candidates ORDER BY doc_id""", [scorer.get("model_name")]).fetchnumpy()
    return np.asarray(next(iter(mask.values())), dtype=bool)


# -- the stage --------------------------------------------------------------------------------------
def run_select(config: Config, overwrite: bool = False, dry_run: bool = False, report_by: str = "domain",
               sweep: tuple[list[str], list[float]] | None = None, examples: int = 3) -> StageResult:
    """Apply config.select to the store; write selections/<name>/ unless `dry_run` (or `sweep`,
    which returns the sweep table as the report and writes nothing).
    outputs: name, selection_id, scorer_id, thresholds, report (a table per report group), report_by,
    written (False for a dry run or a sweep) and, for a dry run, what_if (`report.what_if` with the
    name, ids, counts and notes; `examples` documents each side of each band edge)."""
    cfg = config.select
    store = Store(config.store)
    require(store, "docs")
    writes_nothing = dry_run or sweep is not None
    rules = cfg.rules
    score_rules = [r for r in rules if r.type not in ("where", "correlation", "rating")]  # on a scorer's columns
    page_run = page_score_run(config, store)
    rater = rating_rater(config, store)
    rater_id = rater["rater_id"] if rater else None
    scorer = resolve_scorer(config, store, needed=bool(score_rules) or sweep is not None)
    scorer_id = scorer["scorer_id"] if scorer else None
    inputs = [store.spark_path("docs")] + ([store.spark_path("scores", f"scorer={scorer_id}")] if scorer_id else [])
    inputs += [store.spark_path("correlations", page_run, "page_scores")] if page_run else []
    inputs += [store.spark_path("ratings", f"rater={rater_id}")] if rater_id else []
    run = StageRun(STAGE, config, inputs=inputs, record=not writes_nothing)
    sel_id = selection_id(config, store, scorer_id, page_run, rater_id)
    rel = ("selections", cfg.name)
    outputs = {"name": cfg.name, "selection_id": sel_id, "scorer_id": scorer_id, "rater_id": rater_id,
               "written": not writes_nothing, "report_by": report_by}
    previous = store.read_json(*rel, MANIFEST) if store.exists(*rel, MANIFEST) else None
    if previous and previous.get("selection_id") == sel_id and not writes_nothing:
        return run.skip(previous["counts"], **{**outputs, "report_by": previous.get("report_by", report_by)},
                        thresholds=previous["thresholds"], report=pa.Table.from_pylist(previous["report"]))
    if previous and not (writes_nothing or overwrite):
        raise UserError(f"selection {cfg.name!r} exists with other rules or inputs "
                        f"(selection_id {previous.get('selection_id')} vs {sel_id}): pass --overwrite to "
                        f"replace it, or set select.name")

    with run:
        with run.phase("read"):
            con = open_candidates(store, scorer, page_run, rater_id)
            normalised = {r.score for r in score_rules} & set(GROUP_PERCENTILES)
            by_columns = {r.by for r in score_rules if r.by} | {report_by} | {GROUP_PERCENTILES[n][1] for n in normalised}
            by_columns |= rating_columns(rules)
            if "domain" in by_columns:  # to say how many hosts one domain holds (group_notes)
                by_columns.add("host")
            doc_ids, columns = read_candidates(con, by_columns,
                                               need_ccnet=any(r.score == "ccnet_perplexity" for r in score_rules))
            if len(set(doc_ids)) != len(doc_ids):
                raise UserError(f"scorer {scorer_id}, correlate run {page_run} or rater {rater_id} has several rows "
                                f"for some documents; re-score into a clean scores/scorer={scorer_id}/, re-run "
                                "correlate or re-rate")
            add_quality_mix(columns, rules)
            token_source = page_tokens(columns, scorer_id) if page_run or rater_id else None
            for name in normalised:  # the same as the view's column, from the columns read
                column, group = GROUP_PERCENTILES[name]
                columns[name] = percentile_in_group(columns[column], columns[group])
            where = where_masks(con, rules)
            excluded = reference_split_mask(con, store, scorer) if cfg.exclude_reference_split else None
        if sweep is not None:
            criteria, rates = sweep
            table = sweep_table(doc_ids, columns, rules, cfg.seed, where, excluded, criteria, rates, report_by)
            return run.finish({}, **outputs, thresholds=[], report=table, sweep=True)
        outcome = apply_rules(doc_ids, columns, rules, cfg.seed, where, excluded)
        for record in outcome["thresholds"]:
            if record["type"] in ("correlation", "rating"):
                record["tokens"] = token_source
            if record["type"] == "rating":
                record["rater"] = rater_id
        eligible = eligible_mask(len(doc_ids), columns, rules, where, excluded)
        report = group_report(columns[report_by], outcome, columns["n_tokens"], eligible)
        tokens = np.nan_to_num(columns["n_tokens"])
        reasons: dict[str, int] = {}
        for r in outcome["reason"][~outcome["kept"]]:
            reasons[r] = reasons.get(r, 0) + 1
        counts = {"docs": len(doc_ids), "kept": int(outcome["kept"].sum()),
                  "dropped": int((~outcome["kept"]).sum()),
                  "reference_split": reasons.get("reference_split", 0), "no_score": reasons.get("no_score", 0),
                  "tokens": int(tokens.sum()), "tokens_kept": int(tokens[outcome["kept"]].sum())}
        outputs.update(thresholds=outcome["thresholds"], report=report, group_notes=group_notes(columns, rules))
        if dry_run:
            data = what_if(doc_ids, columns, rules, outcome, eligible, report_by, per_side=examples)
            ids = sorted({x["doc_id"] for e in data["edges"] for x in e["inside"] + e["outside"]})
            with_texts(data["edges"], example_texts(con, ids))
            outputs["what_if"] = {"name": cfg.name, "selection_id": sel_id, "scorer_id": scorer_id,
                                  "counts": counts, "notes": outputs["group_notes"], **data}
            return run.finish(counts, **outputs)

        # Written aside and swapped in whole: the selection of this name stays intact until then.
        work = ("_staging", STAGE, f"{cfg.name}-{run.run_id}")
        with run.phase("write"):
            table = pa.table({"doc_id": pa.array(doc_ids, pa.string()), "kept": outcome["kept"],
                              "reason": pa.array(outcome["reason"], pa.string()),
                              "score": pa.array(outcome["score"], pa.float64(), from_pandas=True),
                              "group": pa.array(outcome["group"], pa.string())})
            for part, start in enumerate(range(0, max(len(table), 1), ROWS_PER_PART)):
                store.write_table(table.slice(start, ROWS_PER_PART), schemas.SELECTION, *work,
                                  f"part-{part:05d}.parquet")
            # Written last: its presence marks the selection finished.
            store.write_json(sidecars.SELECTION,
                             {"name": cfg.name, "selection_id": sel_id, "scorer_id": scorer_id, "scorer": scorer,
                              "config": cfg.model_dump(mode="json"), "counts": counts, "reasons": reasons,
                              "timings": run.timings, "thresholds": outcome["thresholds"],
                              "report": report.to_pylist(), "report_by": report_by,
                              "code_version": code_version(), "created_at": utc_now()}, *work, MANIFEST)
            store.replace_dir(work, rel)
            store.delete("_staging", STAGE)  # what killed runs left aside
        return run.finish(counts, **outputs)


def report(result: StageResult) -> Report:
    out = result.outputs
    if out.get("sweep"):
        return Report("", tables=[(f"sweep: kept share per criterion and rate (scorer {out['scorer_id']})",
                                   out["report"])])
    c = result.counts
    state = (" (dry run: nothing written)" if not out["written"] else
             " (unchanged: already in the store)" if result.skipped else "")
    notes = [f"kept {c['kept']:,} of {c['docs']:,} documents ({c['tokens_kept']:,} of {c['tokens']:,} tokens); "
             f"reference split excluded {c['reference_split']:,}, without a score {c['no_score']:,}; "
             f"scorer {out['scorer_id'] or '-'}" + (f", rater {out['rater_id']}" if out.get("rater_id") else ""),
             *out.get("group_notes", [])]
    if out["written"]:
        notes.append(f"selection: selections/{out['name']}/  (SQL: SELECT reason, count(*) FROM selections "
                     f"WHERE selection = '{out['name']}' GROUP BY reason)")
    tables = [(f"selection {out['name']!r}{state} per {out.get('report_by', 'group')}: kept documents and tokens "
               f"as % of the {ELIGIBLE}", out["report"]),
              ("rules and thresholds", thresholds_table(out["thresholds"]))]
    data = out.get("what_if")
    if data:
        lo, hi = data["distribution"]["range"]
        tables.append((f"{data['score']} of the eligible documents per {data['report_by']}: quantiles, and a "
                       f"histogram of {len(data['distribution']['bin_edges']) - 1} bins over p1..p99 = "
                       f"{lo:.4g}..{hi:.4g}", distribution_table(data["distribution"])))
        if data["edges"]:
            tables.append(("documents nearest each band edge, inside (kept side) and outside",
                           edges_table(data["edges"])))
        if data["edge_groups_left_out"]:
            notes.append(f"edge examples: {data['edge_groups_left_out']:,} smaller threshold group(s) left out")
    return Report("", tables=tables, notes=notes)


def run_what_if(config: Config, report_by: str = "domain", examples: int = 3) -> dict:
    """The what-if report of config.select as a plain dict (JSON-ready; nothing written): name, ids,
    counts, notes, and `report.what_if`'s groups, distribution, thresholds and band-edge examples."""
    return run_select(config, dry_run=True, report_by=report_by, examples=examples).outputs["what_if"]


def summary_row(result: StageResult) -> dict:
    c = result.counts
    return {"documents": c["kept"], "tokens": c["tokens_kept"],
            "status": "up to date" if result.skipped else "selected",
            "output": f"kept {c['kept']:,} of {c['docs']:,}: selections/{result.outputs['name']}/"}
