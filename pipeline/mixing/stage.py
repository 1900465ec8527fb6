"""Mix stage: the store's documents in groups, a proxy model per mixing method, and the chosen mixture.

1. groups: DuckDB groups the documents by `mix.group_by` (any expression over docs), keeps the largest
   groups, samples each to `max_docs_per_group` by seeded keys, and holds out a share of each
   (`groups.heldout_split`), written to mixtures/<name>/groups.parquet;
2. data: a BPE trained on the training documents, each group's documents packed into rows;
3. train: every method of `mix.methods` trains a fresh proxy (the same seed, the same initial weights)
   for `mix.steps` steps (`methods.compare`), evaluated on each group's held-out rows;
4. write mixtures/<name>.json: the weights of `mix.use` (final or time-averaged proportions), every
   method's proportions, trajectory and losses, the groups and the config.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pyarrow as pa

import schemas
from schemas import sidecars
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.stage import Report, StageResult, StageRun
from pipeline.store import Store

STAGE = "mix"


def grouped_docs(con, group_by: str, where: str | None, selection: str | None, stage: str) -> tuple[np.ndarray, np.ndarray]:
    """(doc_ids, groups) of the documents `where` (and the kept documents of `selection`) admit, ordered by
    doc_id, grouped by the DuckDB expression `group_by` over docs (a null group stays None)."""
    kept = (f" AND doc_id IN (SELECT doc_id FROM selections WHERE selection = '{selection}' AND kept)"
            if selection else "")
    try:
        table = con.sql(f"SELECT doc_id, CAST(({group_by}) AS VARCHAR) AS grp FROM docs "
                        f"WHERE ({where or 'TRUE'}){kept} ORDER BY doc_id").to_arrow_table()
    except Exception as e:   # duckdb's errors: a bad expression, an unknown column or selection
        raise UserError(f"{stage}: group_by {group_by!r} / where {where!r} on docs: {str(e).splitlines()[0]}") from None
    return (np.asarray(table.column("doc_id").to_pylist(), dtype=object),
            np.asarray(table.column("grp").to_pylist(), dtype=object))


def read_groups(store: Store, config: Config) -> tuple[pa.Table, pa.Table]:
    """(groups, sample). groups: doc_id, group, heldout, sampled of every document `mix.where` (and
    `mix.selection`) admits in the largest `max_groups` groups of at least `min_group_docs`, each with its
    held-out split; sample: doc_id, text, group, heldout of the documents the proxies use, at most
    `max_docs_per_group` training and as many held-out documents per group, by seeded keys."""
    from pipeline.hashing import seeded_keys
    from pipeline.mixing.groups import heldout_split, largest_groups
    from pipeline.sql import connect
    cfg = config.mix
    con, _ = connect(store)
    ids, groups = grouped_docs(con, cfg.group_by, cfg.where, cfg.selection, STAGE)
    chosen = largest_groups(groups, cfg.max_groups, cfg.min_group_docs)
    if len(chosen) < 2:
        raise UserError(f"mix: {len(chosen)} group(s) of at least {cfg.min_group_docs} documents by "
                        f"{cfg.group_by!r}; a mixture needs 2 (lower mix.min_group_docs or change group_by)")
    member = np.isin(groups.astype(str), chosen) & (groups != None)   # noqa: E711
    ids, groups = ids[member], groups[member].astype(str)
    heldout = heldout_split(ids, groups, cfg.heldout_fraction, seed=cfg.seed)
    keys = seeded_keys(ids.tolist(), f"mix:{cfg.seed}")
    sampled = np.zeros(len(ids), dtype=bool)
    for name in chosen:
        for side in (False, True):
            rows = np.flatnonzero((groups == name) & (heldout == side))
            sampled[rows[np.argsort(keys[rows], kind="stable")[: cfg.max_docs_per_group]]] = True
    all_groups = pa.table({"doc_id": ids.tolist(), "group": groups.tolist(), "heldout": heldout, "sampled": sampled},
                          schema=schemas.MIXTURE_GROUPS)
    con.register("mix_sample", all_groups.filter(pa.array(sampled)))
    sample = con.sql("SELECT s.doc_id, d.text, s.\"group\", s.heldout FROM mix_sample s JOIN docs d USING (doc_id) "
                     "ORDER BY s.doc_id").to_arrow_table()
    return all_groups, sample


def run_mix(config: Config, spark=None, progress: Callable | None = None) -> StageResult:
    """Group, train a proxy per method, write the mixture. outputs: name, weights, method, methods (per
    method: final, average, losses, mean_loss), groups."""
    from pipeline.mixing.aioli import AioliSettings
    from pipeline.mixing.methods import compare
    from pipeline.train.proxy import ProxyTrainer, proxy_reference_config
    from pipeline.train.reference import encode_documents, pack_sequences, train_tokenizer
    cfg = config.mix
    run = StageRun(STAGE, config, requires=("docs",))
    store = run.store
    with run:
        with run.phase("groups"):
            all_groups, table = read_groups(store, config)
            names = sorted(set(table.column("group").to_pylist()))
            heldout = table.column("heldout").to_pylist()
            store.write_table(all_groups, schemas.MIXTURE_GROUPS, "mixtures", cfg.name, "groups.parquet")
            if "log_linear" in cfg.methods and cfg.law_runs and cfg.law_runs < len(names) + 2:
                raise UserError(f"mix.law_runs {cfg.law_runs}: fitting the log-linear law on {len(names)} groups "
                                f"needs at least {len(names) + 2} runs (raise it, or leave it unset: groups + 3)")
        with run.phase("data"):
            texts, groups = table.column("text").to_pylist(), table.column("group").to_pylist()
            ref = proxy_reference_config(cfg.proxy, cfg.seed, cfg.steps)
            tokenizer = train_tokenizer([t for t, h in zip(texts, heldout) if not h], ref.vocab_size)
            train_rows, heldout_rows, tokens = [], [], []
            for name in names:
                mine = [i for i, g in enumerate(groups) if g == name]
                train_rows.append(pack_sequences(encode_documents(tokenizer, [texts[i] for i in mine if not heldout[i]]),
                                                 ref.max_seq_len))
                heldout_rows.append(pack_sequences(encode_documents(tokenizer, [texts[i] for i in mine if heldout[i]]),
                                                   ref.max_seq_len)[:cfg.max_eval_rows])
                tokens.append(int(train_rows[-1].numel()))
        trainers: list[ProxyTrainer] = []
        law_steps = (cfg.law_runs or len(names) + 3) * (cfg.law_steps or max(1, cfg.steps // 4))
        total_steps = cfg.steps * len(cfg.methods) + (law_steps if "log_linear" in cfg.methods else 0)
        done: list = []
        stepped = [0]

        def on_step() -> None:
            stepped[0] += 1
            if progress:
                progress("mix", stepped[0], total_steps, f"{len(done)} of {len(cfg.methods)} methods done")

        def make_proxy() -> ProxyTrainer:
            trainers.append(ProxyTrainer(tokenizer, train_rows, heldout_rows, ref, cfg.steps, on_step=on_step))
            return trainers[-1]

        a = cfg.aioli
        settings = AioliSettings(round_steps=a.round_steps, lp_rounds=a.lp_rounds, lp_steps=a.lp_steps, eta=a.eta,
                                 one_hot_factor=a.one_hot_factor, ema=a.ema,
                                 prior=tuple(a.prior) if a.prior else None, prior_steps=a.prior_steps)
        if progress:
            progress("mix", 0, total_steps)
        with run.phase("train"):
            started = time.perf_counter()
            results = compare(make_proxy, len(names), cfg.steps, cfg.methods, tokens=tokens, aioli=settings,
                              law_run_count=cfg.law_runs, law_steps=cfg.law_steps, seed=cfg.seed, on_method=done.append)
            seconds = time.perf_counter() - started
        chosen = next(r for r in results if r.method == cfg.use)
        weights = chosen.average if cfg.average else chosen.final
        methods = {r.method: {"final": dict(zip(names, r.final.tolist())), "average": dict(zip(names, r.average.tolist())),
                              "trajectory": [p.tolist() for p in r.trajectory], "losses": dict(zip(names, r.losses.tolist())),
                              "mean_loss": r.mean_loss, **r.extra} for r in results}
        every, held = all_groups.column("group").to_pylist(), all_groups.column("heldout").to_pylist()
        group_info = {name: {"docs": int(sum(g == name for g in every)),
                             "heldout_docs": int(sum(g == name and h for g, h in zip(every, held))),
                             "sampled_docs": int(sum(g == name for g in groups)), "train_tokens": t}
                      for name, t in zip(names, tokens)}
        trained_tokens = sum(t.tokens for t in trainers)
        proxy = {"params": sum(p.numel() for p in trainers[0].model.parameters()), "proxies": len(trainers),
                 "tokens": trained_tokens, "tokens_per_second": round(trained_tokens / seconds, 1) if seconds else 0.0}
        store.write_json(sidecars.MIXTURE, {
            "weights": dict(zip(names, weights.tolist())), "group_by": cfg.group_by,
            "groups_table": f"mixtures/{cfg.name}/groups.parquet", "method": cfg.use,
            "proportions": "average" if cfg.average else "final", "methods": methods, "groups": group_info,
            "config": cfg.model_dump(mode="json"), "proxy": proxy}, "mixtures", f"{cfg.name}.json")
        run.timings.update(tokens_per_s=proxy["tokens_per_second"])
        counts = {"groups": len(names), "docs": all_groups.num_rows, "heldout_docs": int(np.sum(held)),
                  "proxies": len(trainers), "tokens": trained_tokens}
        return run.finish(counts, name=cfg.name, method=cfg.use, weights=dict(zip(names, weights.tolist())),
                          methods={m: {k: v for k, v in r.items() if k in ("final", "average", "losses", "mean_loss")}
                                   for m, r in methods.items()}, groups=group_info, proxy=proxy)


def report(result: StageResult) -> Report:
    o, c = result.outputs, result.counts
    names = list(o["groups"])
    table = pa.table({
        "method": list(o["methods"]),
        **{f"p {n}": [round(m["final"][n], 3) for m in o["methods"].values()] for n in names},   # no [..]: rich markup
        "mean_val_loss": [round(m["mean_loss"], 4) for m in o["methods"].values()],
        "perplexity": [round(float(np.exp(m["mean_loss"])), 2) for m in o["methods"].values()]})
    rows = [("groups", ", ".join(f"{n} ({g['docs']:,} docs, {g['heldout_docs']:,} held out)" for n, g in o["groups"].items())),
            ("proxies", f"{c['proxies']} trained, {o['proxy']['params']:,} parameters, "
                        f"{o['proxy']['tokens_per_second']:,.0f} tokens/s"),
            ("mixture", f"{o['method']}: " + ", ".join(f"{n} {w:.3f}" for n, w in o["weights"].items()))]
    return Report(f"mix {result.run_id}", rows, [("final proportions and mean held-out loss per method", table)],
                  [f"written: {result.store}/mixtures/{o['name']}.json (export with curate export --mixture {o['name']})"])


def summary_row(result: StageResult) -> dict:
    c, o = result.counts, result.outputs
    return {"documents": c["docs"], "tokens": c["tokens"], "status": f"{c['groups']} groups, {c['proxies']} proxies",
            "output": f"mixtures/{o['name']}.json"}


def check_config(config: Config) -> None:
    return None
