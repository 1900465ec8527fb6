"""What a correlate run tells its user: per domain the estimate, its rank, token share, cap and projected
weight (the top and the bottom when there are many), the models with their benchmark errors, and the
page selector's held-out metrics. `curate correlate --report` shows it again from the store."""
from __future__ import annotations

import pyarrow as pa

from pipeline.errors import UserError
from pipeline.stage import Report, StageResult
from pipeline.store import Store

SHOWN = 10   # domains shown from the top and from the bottom


def domain_table(estimates: pa.Table, shown: int = SHOWN) -> tuple[pa.Table, int]:
    """The domains by rank (the `shown` best and worst when there are more), and how many are elided."""
    frame = estimates.to_pandas().sort_values("rank")
    hidden = max(0, len(frame) - 2 * shown)
    if hidden:
        frame = frame.iloc[list(range(shown)) + list(range(len(frame) - shown, len(frame)))]
    frame = frame.assign(estimate=frame["estimate"].round(4), token_share=(100 * frame["token_share"]).round(2),
                         weight=(100 * frame["weight"]).round(2), tau=frame["tau"].round(3))
    columns = ["rank", "domain", "estimate", "token_share", "tau", "weight", "pages"]
    table = pa.Table.from_pandas(frame[columns], preserve_index=False)
    return table.rename_columns(["rank", "domain", "estimate", "token share %", "cap tau", "weight %",
                                 "pages"]), hidden


def leaderboard_table(board: pa.Table, metric: str) -> pa.Table:
    """The models by the metric the estimate used (lower is better)."""
    frame = board.to_pandas()
    frame = frame.assign(y=1 - frame["accuracy_norm"] if metric == "error_norm" else frame[metric])
    frame = frame.sort_values(["y", "model"])
    shown = [c for c in ("accuracy", "accuracy_norm", "bits_per_byte") if frame[c].notna().any()]
    frame[shown] = frame[shown].round(4)
    return pa.Table.from_pandas(frame[["model", "benchmark", *shown, "used"]], preserve_index=False)


def correlate_report(name: str, estimates: pa.Table, board: pa.Table, meta: dict, state: str = "") -> Report:
    cfg, sample, selector, counts = meta["config"], meta["sample"], meta["selector"], meta["counts"]
    domains, hidden = domain_table(estimates)
    est = estimates.to_pandas().sort_values("rank")
    kept = est[est["weight"] > 0]
    notes = [f"{counts['models']} models x {sample['domains']} domains ({sample['group_by']}), {sample['pages']:,} "
             f"sampled pages ({sample['pages_per_domain']} per domain, seed {sample['seed']}); estimator "
             f"{cfg['method']}{' on double-centred losses' if cfg['double_center'] else ''}, projection "
             f"{cfg['projection']} at keep_fraction {cfg['keep_fraction']:g}",
             f"top domains: {', '.join(est['domain'].head(5))}; bottom: {', '.join(est['domain'].tail(5)[::-1])}",
             f"weight > 0 for {len(kept)} of {len(est)} domains: {', '.join(kept['domain'].head(8))}"
             f"{', ...' if len(kept) > 8 else ''}"]
    if hidden:
        notes.append(f"{hidden} domains between the top and the bottom {SHOWN} are not shown: "
                     f"curate sql <store> -c \"SELECT * FROM correlations WHERE run = '{name}' ORDER BY rank\"")
    left_out = sample["left_out"]
    if left_out:
        listed = ", ".join(f"{d} ({n})" for d, n in sorted(left_out.items(), key=lambda x: -x[1])[:8])
        notes.append(f"left out, under {sample['min_domain_pages']} pages: {len(left_out)} domain(s): {listed}"
                     f"{', ...' if len(left_out) > 8 else ''}")
    missing = meta["missing"]
    for side, what in (("without_benchmark", "without a benchmark error"), ("without_scores", "without scores")):
        if missing.get(side):
            notes.append(f"models {what}, left out: {', '.join(missing[side])}")
    if meta.get("dropped_pages"):
        notes.append(f"{meta['dropped_pages']} sampled page(s) some model could not score were left out for all")
    if "precision" in selector:
        notes.append(f"page selector (fastText, word bigrams): held-out {selector['heldout_pages']:,} of "
                     f"{selector['heldout_pages'] + selector['train_pages']:,} pages: precision "
                     f"{selector['precision']:.3f}, recall {selector['recall']:.3f}, F1 {selector['f1']:.3f}, "
                     f"accuracy {selector['accuracy']:.3f}")
    notes.append(f"outputs: correlations/{name}/ (SQL views correlations, domain_weights, bpb_matrix, benchmarks, "
                 f"page_scores); select with --rule correlation:{name}:{cfg['keep_fraction']:g}")
    return Report("", tables=[(f"correlate {name!r}{state}: domains by estimate (larger: lower loss goes with lower "
                               "benchmark error)", domains),
                              (f"the models on the benchmark (metric {cfg['metric']}; used: in the estimate)",
                               leaderboard_table(board, cfg["metric"]))],
                  notes=notes)


def result_report(result: StageResult) -> Report:
    o = result.outputs
    meta = {"config": o["config"], "sample": o["sample"], "selector": o["selector"], "counts": result.counts,
            "missing": o["missing"], "dropped_pages": result.counts.get("dropped_pages", 0)}
    return correlate_report(o["name"], o["estimates"], o["leaderboard"], meta)


def stored_report(store: Store, name: str) -> Report:
    """The report of the correlate run `name` as the store holds it."""
    rel = ("correlations", name)
    if not store.exists(*rel, "_correlations.json"):
        from pipeline.correlations.sources import stored_runs
        raise UserError(f"no correlate run {name!r} in {store.uri}; runs there: {', '.join(stored_runs(store)) or 'none'} "
                        "(curate correlate writes one)")
    meta = store.read_json(*rel, "_correlations.json")
    return correlate_report(name, store.read_table(*rel, "estimates", "part-00000.parquet"),
                            store.read_table(*rel, "benchmarks", "part-00000.parquet"), meta)
