"""Evaluate stage: does a curation choice help? Proxy models trained on the same number of tokens from a
random subset of the store and from each curated arm, compared on held-out documents, over several seeds.

1. sets: DuckDB groups the documents by `evaluate.group_by`; each of the largest groups' held-out split (the
   rule of curate mix, `groups.heldout_split`) and the target set (`target_where`, or `target_file`) are
   left out of every arm;
2. arms: each curated arm (selection:<name>, export:<name>) is read in a seeded order (a fresh one per
   seed) up to the tokens one proxy trains on; the random arm draws, per seed, documents of the pool
   (`pool_where`) in seeded order until it holds as many tokens as the first curated arm;
3. train: per seed, a proxy per arm from the same initial weights trains steps x batch_size rows of
   max_seq_len tokens (`summary.training_rows`: exactly the same tokens for every arm), then its loss on
   every held-out set; each finished run is kept in evaluations/<name>/_runs/ (a re-run reuses it);
4. compare: per set, each arm against random, seed by seed (`summary.compare_arms`), written to
   evaluations/<name>/{runs,summary}.parquet: the `evaluation_runs` and `evaluations` views.
"""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

import schemas
from schemas import sidecars
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.evaluate.summary import compare_arms, tokens_prefix, training_rows
from pipeline.hashing import seeded_keys, short_digest
from pipeline.stage import Report, StageResult, StageRun
from pipeline.store import Store, utc_now

STAGE = "evaluate"
RANDOM = "random"
TARGET, GROUPS_MEAN = "target", "groups_mean"
_FETCH = 256   # documents read and tokenised at a time


# --------------------------------------------------------------------------- inputs (DuckDB)

def curated_arms(config: Config) -> list[str]:
    return list(config.evaluate.arms) or [f"selection:{config.select.name}"]


def arm_doc_ids(con, store: Store, arm: str) -> list[str]:
    """The documents of a curated arm: a selection's kept documents, or an export's documents."""
    kind, _, name = arm.partition(":")
    if kind == "selection":
        if not store.list_files("selections", name, suffix=".parquet"):
            raise UserError(f"evaluate: no selection {name!r} in {store.uri}/selections: run `curate select --name "
                            f"{name}` first (or name another arm)")
        sql = f"SELECT doc_id FROM selections WHERE selection = '{name}' AND kept"
    else:
        if not store.exists("exports", name, "manifest.json"):
            raise UserError(f"evaluate: no finished export {name!r} in {store.uri}/exports: run `curate export "
                            f"--name {name}` first (or name another arm)")
        path = store.path("exports", name, "documents.parquet").replace("'", "''")
        sql = f"SELECT DISTINCT doc_id FROM read_parquet('{path}')"
    ids = sorted(con.sql(sql).to_arrow_table().column("doc_id").to_pylist())
    if not ids:
        raise UserError(f"evaluate: arm {arm!r} has no documents")
    return ids


def pool_doc_ids(con, where: str | None) -> list[str]:
    try:
        return sorted(con.sql(f"SELECT doc_id FROM docs WHERE ({where or 'TRUE'})").to_arrow_table()
                      .column("doc_id").to_pylist())
    except Exception as e:   # duckdb's errors: a bad predicate
        raise UserError(f"evaluate: pool_where {where!r} on docs: {str(e).splitlines()[0]}") from None


def texts_of(con, doc_ids: list[str]) -> list[str]:
    """The texts of `doc_ids`, in their order."""
    con.register("wanted", pa.table({"doc_id": pa.array(doc_ids, pa.string()), "i": np.arange(len(doc_ids))}))
    return con.sql("SELECT d.text FROM wanted w JOIN docs d USING (doc_id) ORDER BY w.i").to_arrow_table() \
        .column("text").to_pylist()


def read_target_file(path: str, limit: int) -> list[str]:
    """The `text` field of a JSONL (.gz) or Parquet file: the first `limit` non-empty texts."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"evaluate.target_file: {path} is not a file")
    try:
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq
            texts = pq.read_table(p, columns=["text"]).column("text").to_pylist()
        else:
            opener = gzip.open if p.suffix == ".gz" else open
            with opener(p, "rt", encoding="utf-8") as f:
                texts = [json.loads(line)["text"] for line in f if line.strip()]
    except (KeyError, ValueError, OSError, TypeError) as e:
        raise UserError(f"evaluate.target_file {path}: expected JSONL (.gz) or Parquet with a `text` field: {e}") from None
    texts = [t for t in texts if isinstance(t, str) and t.strip()][:limit]
    if not texts:
        raise UserError(f"evaluate.target_file {path}: no texts")
    return texts


def heldout_sets(con, config: Config) -> tuple[dict[str, list[str]], set[str], list[str] | None]:
    """(set name -> held-out doc_ids evaluated, doc_ids left out of every arm, target texts from a file).
    The sets: the largest groups (their held-out splits, each cut to max_heldout_docs) and the target."""
    from pipeline.mixing.groups import heldout_split, largest_groups
    from pipeline.mixing.stage import grouped_docs
    cfg = config.evaluate
    sets: dict[str, list[str]] = {}
    excluded: set[str] = set()
    target_texts = None
    if cfg.target_where:
        target = pool_doc_ids(con, cfg.target_where)
        if not target:
            raise UserError(f"evaluate.target_where {cfg.target_where!r} admits no document")
        excluded.update(target)
        sets[TARGET] = _first_by_key(target, cfg.max_target_docs, f"target:{cfg.seed}")
    elif cfg.target_file:
        target_texts = read_target_file(cfg.target_file, cfg.max_target_docs)
    ids, groups = grouped_docs(con, cfg.group_by, None, None, STAGE)
    keep = np.array([d not in excluded for d in ids], dtype=bool)
    ids, groups = ids[keep], groups[keep]
    chosen = largest_groups(groups, cfg.max_groups, cfg.min_group_docs)
    member = np.isin(groups.astype(str), chosen) & (groups != None)   # noqa: E711
    ids, groups = ids[member], groups[member].astype(str)
    heldout = heldout_split(ids, groups, cfg.heldout_fraction, seed=cfg.seed)
    excluded.update(ids[heldout].tolist())
    for name in chosen:
        sets[name] = _first_by_key(ids[heldout & (groups == name)].tolist(), cfg.max_heldout_docs, f"heldout:{cfg.seed}")
    if not chosen:
        raise UserError(f"evaluate: no group of at least {cfg.min_group_docs} documents by {cfg.group_by!r} "
                        "(lower evaluate.min_group_docs or change group_by)")
    return sets, excluded, target_texts


def _first_by_key(doc_ids: list[str], n: int, seed: str) -> list[str]:
    keys = seeded_keys(doc_ids, seed)
    return [doc_ids[i] for i in np.argsort(keys, kind="stable")[:n]]


def take_tokens(con, tokenizer, doc_ids: list[str], seed: str, needed: int) -> tuple[list[str], list[list[int]]]:
    """The documents of `doc_ids` in seeded order, read and tokenised a chunk at a time, until they hold at
    least `needed` tokens (all of them when they hold fewer): (doc_ids taken, their tokens)."""
    from pipeline.train.reference import encode_documents
    order = [doc_ids[i] for i in np.argsort(seeded_keys(doc_ids, seed), kind="stable")]
    taken, encoded, total = [], [], 0
    for start in range(0, len(order), _FETCH):
        chunk = order[start:start + _FETCH]
        docs = encode_documents(tokenizer, texts_of(con, chunk))
        n = tokens_prefix([len(d) for d in docs], needed - total)
        taken += chunk[:n]
        encoded += docs[:n]
        total += sum(len(d) for d in docs[:n])
        if total >= needed:
            break
    return taken, encoded


# --------------------------------------------------------------------------- the stage

def train_proxy(tokenizer, arm: str, ids: list[str], docs: list[list[int]], set_rows: dict, ref, steps: int,
                on_step=None) -> dict:
    """One proxy on an arm's documents (packed into rows; `steps` x batch_size rows, repeating them when
    they are fewer), then its loss on every held-out set."""
    from pipeline.train.proxy import ProxyTrainer
    from pipeline.train.reference import pack_sequences
    rows = pack_sequences(docs, ref.max_seq_len)
    if rows.shape[1] < ref.max_seq_len:
        raise UserError(f"evaluate: arm {arm!r} holds {rows.numel()} tokens, fewer than one row of {ref.max_seq_len}")
    trainer = ProxyTrainer(tokenizer, [rows], list(set_rows.values()), ref, steps, on_step=on_step)
    trainer.train([1.0], steps)
    return {"losses": dict(zip(set_rows, trainer.evaluate().tolist())), "docs": len(ids),
            "unique_tokens": int(rows.numel()), "train_tokens": trainer.tokens,
            "tokens_per_second": round(trainer.tokens_per_second, 1)}


def run_evaluate(config: Config, spark=None, progress: Callable | None = None) -> StageResult:
    """Train a proxy per arm and seed, compare the arms with the random one. outputs: name, arms, sets,
    headline (the target's comparison, or the groups' mean's), summary rows, proxy."""
    from pipeline.sql import connect
    from pipeline.train.proxy import proxy_reference_config
    from pipeline.train.reference import build_model, encode_documents, pack_sequences, train_tokenizer
    cfg = config.evaluate
    arms = curated_arms(config)
    run = StageRun(STAGE, config, requires=("docs",))
    store = run.store
    with run:
        with run.phase("sets"):
            con, _ = connect(store)
            sets, excluded, target_texts = heldout_sets(con, config)
            pool = [d for d in pool_doc_ids(con, cfg.pool_where) if d not in excluded]
            curated = {arm: [d for d in arm_doc_ids(con, store, arm) if d not in excluded] for arm in arms}
            empty = [arm for arm, ids in curated.items() if not ids]
            if empty or not pool:
                raise UserError(f"evaluate: {', '.join(empty) or 'the random pool'} has no document outside the "
                                "held-out and target sets")
        with run.phase("data"):
            ref = proxy_reference_config(cfg.proxy, cfg.seed, cfg.steps)
            tokenizer_docs = _first_by_key(pool, cfg.tokenizer_docs, f"tokenizer:{cfg.seed}")
            tokenizer = train_tokenizer(texts_of(con, tokenizer_docs), ref.vocab_size)
            set_rows = {name: pack_sequences(encode_documents(tokenizer, texts_of(con, ids)), ref.max_seq_len)[:cfg.max_eval_rows]
                        for name, ids in sets.items()}
            if target_texts is not None:
                set_rows[TARGET] = pack_sequences(encode_documents(tokenizer, target_texts),
                                                  ref.max_seq_len)[:cfg.max_eval_rows]
            set_names = list(set_rows)
            rows_per_proxy, _ = training_rows(1, cfg.steps, ref.batch_size)
            budget = rows_per_proxy * ref.max_seq_len
            params = sum(p.numel() for p in build_model(ref, tokenizer).parameters())
        base_key = {"config": cfg.model_dump(mode="json", exclude={"name"}),
                    "sets": {n: short_digest(ids) for n, ids in sets.items()}, "tokenizer": short_digest(tokenizer_docs),
                    "target_file": short_digest(target_texts) if target_texts else None}
        total = cfg.seeds * (len(arms) + 1) * cfg.steps   # progress in training steps
        stepped = [0]

        def advance(steps: int = 1, detail: str = "") -> None:
            stepped[0] += steps
            if progress:
                progress(STAGE, stepped[0], total, detail)
        runs: dict[tuple[str, int], dict] = {}
        arm_info = {RANDOM: {"source": f"docs where {cfg.pool_where or 'TRUE'}", "available_docs": len(pool), "seeds": []},
                    **{arm: {"source": arm, "available_docs": len(ids), "seeds": []} for arm, ids in curated.items()}}
        if progress:
            progress(STAGE, 0, total)
        with run.phase("train"):
            for seed in range(cfg.seeds):
                chosen = {}
                for arm in arms:
                    chosen[arm] = take_tokens(con, tokenizer, curated[arm], f"arm:{cfg.seed}:{seed}", budget)
                matched = sum(len(d) for d in chosen[arms[0]][1])
                chosen[RANDOM] = take_tokens(con, tokenizer, pool, f"random:{cfg.seed}:{seed}", matched)
                for arm in [RANDOM, *arms]:
                    ids, docs = chosen[arm]
                    key = short_digest({**base_key, "arm": arm, "seed": seed, "docs": short_digest(ids)})
                    path = ("evaluations", cfg.name, "_runs", f"{arm.replace(':', '-')}-{seed}.json")
                    done = store.read_json(*path) if store.exists(*path) else None
                    if done and done.get("fingerprint") == key:
                        advance(cfg.steps, f"{arm}, seed {seed}: done before")
                    else:
                        done = store.write_json(sidecars.EVALUATION_RUN, {"fingerprint": key, **train_proxy(
                            tokenizer, arm, ids, docs, set_rows,
                            proxy_reference_config(cfg.proxy, cfg.seed + seed, cfg.steps), cfg.steps, on_step=lambda arm=arm, seed=seed: advance(1, f"{arm}, seed {seed}"))}, *path)
                    runs[(arm, seed)] = done
                    arm_info[arm]["seeds"].append({"seed": seed, "docs": done["docs"],
                                                   "unique_tokens": done["unique_tokens"],
                                                   "train_tokens": done["train_tokens"],
                                                   "epochs": round(done["train_tokens"] / done["unique_tokens"], 3)})
        all_arms = [RANDOM, *arms]
        runs_table, summary = _tables(cfg.name, all_arms, set_names, runs, cfg.seeds)
        store.write_table(runs_table, schemas.EVALUATION_RUNS, "evaluations", cfg.name, "runs.parquet")
        store.write_table(summary, schemas.EVALUATION_SUMMARY, "evaluations", cfg.name, "summary.parquet")
        headline_set = TARGET if TARGET in set_names else GROUPS_MEAN
        headline = [r for r in summary.to_pylist() if r["set"] == headline_set]
        speeds = [r["tokens_per_second"] for r in runs.values() if r["tokens_per_second"]]
        proxy = {"params": params, "tokens_per_proxy": budget, "tokens_per_second": round(float(np.mean(speeds)), 1)}
        sets_info = {n: {"docs": len(sets.get(n, target_texts or [])), "tokens": int(set_rows[n].numel())}
                     for n in set_names}
        store.write_json(sidecars.EVALUATION, {
            "name": cfg.name, "config": cfg.model_dump(mode="json"), "arms": arm_info, "sets": sets_info,
            "headline": {"set": headline_set, "rows": headline}, "proxy": proxy, "created_at": utc_now()},
            "evaluations", cfg.name, "_evaluation.json")
        counts = {"arms": len(all_arms), "seeds": cfg.seeds, "proxies": len(runs), "sets": len(set_names),
                  "tokens": sum(r["train_tokens"] for r in runs.values())}
        return run.finish(counts, name=cfg.name, arms=arm_info, sets=sets_info, headline_set=headline_set,
                          summary=summary.to_pylist(), proxy=proxy)


def _tables(name: str, arms: list[str], set_names: list[str], runs: dict, seeds: int) -> tuple[pa.Table, pa.Table]:
    """(runs, summary): every proxy's loss per set (and the mean over the groups), and per set each arm
    against random (summary.compare_arms)."""
    long = []
    for (arm, seed), r in sorted(runs.items(), key=lambda kv: (arms.index(kv[0][0]), kv[0][1])):
        losses = dict(r["losses"])
        groups = [v for k, v in losses.items() if k != TARGET]
        losses[GROUPS_MEAN] = float(np.mean(groups))
        long += [{"evaluation": name, "arm": arm, "seed": seed, "set": s, "loss": v, "docs": r["docs"],
                  "unique_tokens": r["unique_tokens"], "train_tokens": r["train_tokens"]} for s, v in losses.items()]
    summary = []
    for s in [*set_names, GROUPS_MEAN]:
        by_arm = {arm: [row["loss"] for row in long if row["arm"] == arm and row["set"] == s] for arm in arms}
        for row in compare_arms(by_arm, RANDOM):
            summary.append({"evaluation": name, "arm": row["arm"], "set": s, "seeds": seeds, "mean_loss": row["mean"],
                            "std_loss": _none_if_nan(row["std"]), "perplexity": math.exp(row["mean"]),
                            "diff_mean": row["diff_mean"], "diff_std": _none_if_nan(row["diff_std"]),
                            "beats_random": row["beats_baseline"]})
    return pa.Table.from_pylist(long), pa.Table.from_pylist(summary)


def _none_if_nan(x: float):
    return None if math.isnan(x) else x


# --------------------------------------------------------------------------- what the user sees

def _pm(mean: float, std) -> str:
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def report(result: StageResult) -> Report:
    o, c = result.outputs, result.counts
    arms = list(o["arms"])
    rows = {(r["arm"], r["set"]): r for r in o["summary"]}
    head = o["headline_set"]
    table = pa.table({
        "arm": arms,
        "docs": [o["arms"][a]["seeds"][0]["docs"] for a in arms],
        "epochs": [o["arms"][a]["seeds"][0]["epochs"] for a in arms],
        f"{head} loss (mean ± std)": [_pm(rows[(a, head)]["mean_loss"], rows[(a, head)]["std_loss"]) for a in arms],
        "perplexity": [round(rows[(a, head)]["perplexity"], 2) for a in arms],
        "vs random (mean ± std)": ["" if a == RANDOM else _pm(rows[(a, head)]["diff_mean"], rows[(a, head)]["diff_std"])
                                   for a in arms],
        "beats random": ["" if a == RANDOM else ("yes" if rows[(a, head)]["beats_random"] else "no") for a in arms]})
    sets = [s for s in o["sets"] if s != TARGET] + [GROUPS_MEAN]
    per_set = pa.table({"set": sets, **{a: [round(rows[(a, s)]["mean_loss"], 4) for s in sets] for a in arms}})
    verdicts = []
    for a in arms[1:]:
        r = rows[(a, head)]
        verdicts.append(f"{a} {'beats' if r['beats_random'] else 'does not beat'} the random subset on {head}: "
                        f"{r['diff_mean']:+.4f} nats ({c['seeds']} seeds, spread {r['diff_std'] or float('nan'):.4f})")
    return Report(f"evaluate {result.run_id}", [
        ("arms", f"{len(arms)} x {c['seeds']} seeds, {o['proxy']['tokens_per_proxy']:,} tokens per proxy"),
        ("held-out sets", ", ".join(f"{n} ({s['docs']:,} docs)" for n, s in o["sets"].items())),
        ("proxies", f"{c['proxies']}, {o['proxy']['params']:,} parameters, {o['proxy']['tokens_per_second']:,.0f} tokens/s")],
        [(f"held-out loss on {head} (nats/token; lower is better)", table),
         ("mean held-out loss per group and arm", per_set)],
        [*verdicts, f"written: {result.store}/evaluations/{o['name']}/ (curate sql: SELECT * FROM evaluations)"])


def summary_row(result: StageResult) -> dict:
    c, o = result.counts, result.outputs
    wins = sum(r["beats_random"] for r in o["summary"] if r["set"] == o["headline_set"])
    return {"documents": sum(a["seeds"][0]["docs"] for a in o["arms"].values()), "tokens": c["tokens"],
            "status": f"{c['arms']} arms x {c['seeds']} seeds, {wins} beat random on {o['headline_set']}",
            "output": f"evaluations/{o['name']}/"}


def check_config(config: Config) -> None:
    if config.evaluate.target_file and not Path(config.evaluate.target_file).is_file():
        raise UserError(f"evaluate.target_file: {config.evaluate.target_file} is not a file")
