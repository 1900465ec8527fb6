"""What the correlate stage reads: the store's documents (an index of ids, domains and sizes; texts by
id), the models of the ladder, a leaderboard file, and the task, made from held-out target documents
when none is given; and `curate benchmark`, which measures models on such a task.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from pipeline.config import Config
from pipeline.correlations import tasks
from pipeline.errors import UserError
from pipeline.hashing import seeded_keys
from pipeline.store import Store

SMOLLM2 = "smollm2-135m"


def stored_runs(store: Store, holding: str = "_correlations.json") -> list[str]:
    """The names of the correlate runs in the store that hold `holding` (a file or table of the run)."""
    import pyarrow.fs as pafs
    info = store.fs.get_file_info(pafs.FileSelector(store.path("correlations"), allow_not_found=True))
    return sorted(i.base_name for i in info if i.type == pafs.FileType.Directory
                  and store.exists("correlations", i.base_name, holding))


def docs_dataset(store: Store) -> ds.Dataset:
    parts = [store.path("docs", f) for f in store.list_files("docs", suffix=".parquet")]
    return ds.dataset(parts, filesystem=store.fs, format="parquet")


def read_index(store: Store, group_by: str, target_where: str | None):
    """doc_id, domain (the group_by value), n_bytes and whether target_where admits it, of every document."""
    import duckdb
    dataset = docs_dataset(store)
    if group_by not in dataset.schema.names:
        raise UserError(f"correlate.group_by {group_by!r} is not a docs column; docs columns: "
                        f"{', '.join(dataset.schema.names)}")
    con = duckdb.connect()
    con.register("docs", dataset)
    try:
        return con.sql(f"""SELECT doc_id, coalesce(CAST("{group_by}" AS VARCHAR), '(none)') AS domain, n_bytes,
                           coalesce(({target_where or 'true'}), false) AS target_ok FROM docs
                           ORDER BY doc_id""").df()
    except duckdb.Error as e:
        raise UserError(f"correlate.target_where {target_where!r}: {str(e).splitlines()[0]}") from None


def read_texts(store: Store, doc_ids) -> dict[str, str]:
    """doc_id -> text of these documents."""
    wanted = sorted(set(doc_ids))
    if not wanted:
        return {}
    table = docs_dataset(store).to_table(columns=["doc_id", "text"], filter=ds.field("doc_id").isin(wanted))
    return dict(zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist()))


def smallest_keys(ids, n: int, seed: str) -> list[str]:
    """The n ids with the smallest seeded keys: a sample that does not depend on order."""
    ids = list(ids)
    if len(ids) <= n:
        return sorted(ids)
    return sorted(np.asarray(ids, dtype=object)[np.argsort(seeded_keys(ids, seed), kind="stable")[:n]].tolist())


def parse_entry(entry: str) -> tuple[str, str]:
    """(name or "", path) of a correlate.models entry: NAME=DIR, DIR, NAME=URL, URL or smollm2-135m."""
    return tuple(entry.partition("=")[::2]) if "=" in entry.split("://")[0] else ("", entry)


def model_entries(entries: list[str], models_dir: str | Path) -> list[tuple[str, str]]:
    """(name, model directory or service URL) of each entry: NAME=DIR, DIR (named by its folder) or
    smollm2-135m (converted into `models_dir` on first use)."""
    out = []
    for entry in entries:
        name, path = parse_entry(entry)
        if path == SMOLLM2:
            from pipeline.scoring.smollm2 import fetch_smollm2
            path = str(fetch_smollm2(Path(models_dir) / SMOLLM2))
            name = name or SMOLLM2
        elif "://" not in path and not (Path(path) / "config.json").is_file():
            raise UserError(f"correlate.models: {path!r} is not a model directory (no config.json); give "
                            f"model directories (DIR or NAME=DIR), a scoring service URL or {SMOLLM2!r}")
        out.append((name or Path(path.rstrip("/")).name, path))
    names = [n for n, _ in out]
    if len(set(names)) < len(names):
        raise UserError(f"correlate.models: two models share a name ({', '.join(sorted(names))}); name them NAME=DIR")
    return out


def read_leaderboard(path: str) -> pa.Table:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    if not Path(path).is_file():
        raise UserError(f"correlate.leaderboard {path!r}: no such file")
    try:
        return pq.read_table(path) if path.endswith(".parquet") else pacsv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"correlate.leaderboard {path!r} is not a readable CSV or Parquet file: {e}") from None


def target_ids(config: Config, index) -> list[str]:
    """The held-out target documents: target_docs of those target_where admits (seeded)."""
    cfg = config.correlate
    return smallest_keys(index.loc[index["target_ok"], "doc_id"], cfg.target_docs, f"correlate-target:{cfg.seed}")


def make_task(config: Config, target_ids: list[str]) -> list[tasks.TaskItem]:
    """The configured task file, or a cloze task built from the held-out target documents."""
    cfg = config.correlate
    if cfg.task:
        try:
            return tasks.read_task(cfg.task)
        except (OSError, ValueError) as e:
            raise UserError(f"correlate.task: {e}") from None
    texts = read_texts(Store(config.store), target_ids)
    try:
        return tasks.cloze_task([texts[d] for d in target_ids], cfg.task_items, seed=cfg.seed)
    except ValueError as e:
        raise UserError(f"correlate: {e} (target_where {cfg.target_where!r})") from None


def task_sha256(items: list[tasks.TaskItem]) -> str:
    return hashlib.sha256("".join(json.dumps([i.context, list(i.choices), i.gold]) + "\n"
                                  for i in items).encode()).hexdigest()


def run_benchmark(entries: list[str], task: Path | None, out: Path, store: str | None = None,
                  target_where: str | None = None, items: int = 100, name: str | None = None, device: str = "cpu",
                  progress=None) -> tuple[pa.Table, Path]:
    """`curate benchmark`: the models on a task file, or on a cloze task built from a store's held-out
    target documents (the ones `curate correlate` holds out with the same settings) and written to
    `task` (default: beside `out`, <out>.task.jsonl). Appends the rows to the CSV `out`."""
    import pyarrow.csv as pacsv
    from pipeline.correlations.benchmark import leaderboard
    if store:
        config = Config.model_validate({"store": store, "correlate": {"target_where": target_where,
                                                                      "task_items": items}})
        target = target_ids(config, read_index(Store(store), config.correlate.group_by, target_where))
        task_items = make_task(config, target)
        task = task or out.with_suffix(".task.jsonl")   # beside the leaderboard, not in the store
        tasks.write_task(task_items, task)
    elif task is None:
        raise UserError("curate benchmark needs --task FILE, or --make-task STORE to build a cloze task")
    else:
        try:
            task_items = tasks.read_task(task)
        except (OSError, ValueError) as e:
            raise UserError(f"--task: {e}") from None
    models = dict(model_entries(entries, Path(store, "models") if store else Path("models")))
    report = (lambda model, done, total: progress(f"benchmark: {model}", done, total)) if progress else None
    table = leaderboard(models, task_items, name or ("cloze" if store else task.stem), device=device, progress=report)
    if out.is_file():
        table = pa.concat_tables([read_leaderboard(str(out)), table], promote_options="default")
    pacsv.write_csv(table, out)
    return table, out
