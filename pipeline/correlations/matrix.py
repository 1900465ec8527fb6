"""The inputs of the estimators: a domain-stratified sample of pages, the bits-per-byte matrix (models x
domains) aggregated from score rows, and the benchmark errors of the same models.

Domain BPB is token-weighted: the NLL summed over every scored token of the domain's pages divided by
ln 2 times the bytes those tokens cover, never a mean of page BPBs. Pages some model could not score
are left out for every model (the matrix compares models on the same text).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.hashing import seeded_keys


def domain_sample(doc_ids, domains, per_domain: int, min_pages: int, seed: int) -> tuple[np.ndarray, dict]:
    """Indexes of `per_domain` pages of every domain with at least `min_pages` pages (the pages with
    the smallest seeded keys: the same sample in any order), and the domains left out with their sizes."""
    if per_domain < 1 or min_pages < 1:
        raise ValueError("per_domain and min_pages must be at least 1")
    names = np.array(["(none)" if d is None else str(d) for d in domains], dtype=object)
    keys = seeded_keys([str(d) for d in doc_ids], f"correlations:{seed}")
    chosen, left_out = [], {}
    order = np.lexsort((keys, names))
    uniq, starts, counts = np.unique(names[order], return_index=True, return_counts=True)
    for name, start, count in zip(uniq, starts, counts):
        if count < min_pages:
            left_out[str(name)] = int(count)
        else:
            chosen.append(order[start:start + min(per_domain, count)])
    return (np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)), left_out


@dataclass(frozen=True)
class BpbMatrix:
    models: list[str]
    domains: list[str]
    bpb: np.ndarray           # len(models) x len(domains)
    tokens: np.ndarray        # len(models) x len(domains): predicted tokens (each model's tokenizer)
    n_bytes: np.ndarray       # len(models) x len(domains): the bytes those tokens cover
    pages: np.ndarray         # pages per domain kept in the matrix
    dropped_pages: int        # pages left out because some model has no score for them

    @property
    def tokens_per_byte(self) -> np.ndarray:
        """Per domain, tokens per byte pooled over the models' tokenizers."""
        return self.tokens.sum(axis=0) / np.maximum(self.n_bytes.sum(axis=0), 1)


def bpb_matrix(rows: pa.Table) -> BpbMatrix:
    """From score rows (model, doc_id, domain, nll_sum, n_bytes, n_predicted; nll_sum null for an
    unscored page): the token-weighted BPB of every (model, domain)."""
    models = sorted(set(rows.column("model").to_pylist()))
    table = rows.to_pandas()
    scored = table[table["nll_sum"].notna() & (table["n_bytes"] > 0)]
    per_doc = scored.groupby("doc_id")["model"].nunique()
    complete = set(per_doc[per_doc == len(models)].index)
    all_docs = set(table["doc_id"])
    kept = scored[scored["doc_id"].isin(complete)]
    if kept.empty:
        raise ValueError("no page has a score under every model")
    sums = kept.groupby(["model", "domain"])[["nll_sum", "n_bytes", "n_predicted"]].sum()
    domains = sorted(kept["domain"].unique())
    shape = (len(models), len(domains))
    bpb, tokens, n_bytes = np.full(shape, np.nan), np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    for (model, domain), (nll, nb, npred) in sums.iterrows():
        i, j = models.index(model), domains.index(domain)
        bpb[i, j], tokens[i, j], n_bytes[i, j] = nll / (math.log(2) * nb), npred, nb
    pages = kept.groupby("domain")["doc_id"].nunique().reindex(domains).to_numpy()
    return BpbMatrix(models, domains, bpb, tokens, n_bytes, pages, len(all_docs - complete))


METRICS = {"error": "1 - accuracy", "error_norm": "1 - accuracy_norm",
           "bits_per_byte": "bits per byte of the gold choices given their contexts"}


def benchmark_errors(table: pa.Table, benchmarks: list[str] | None = None, metric: str = "error") -> dict[str, float]:
    """model -> the metric (lower is better) averaged over the benchmarks, from a leaderboard-shaped table
    with columns model, benchmark and accuracy or error (1 - accuracy); error_norm reads accuracy_norm
    and bits_per_byte its own column. Every chosen benchmark must be there for a model."""
    cols = set(table.column_names)
    needs = {"error": {"accuracy", "error"}, "error_norm": {"accuracy_norm"}, "bits_per_byte": {"bits_per_byte"}}
    if metric not in needs:
        raise ValueError(f"unknown benchmark metric {metric!r}; use one of {', '.join(METRICS)}")
    if not {"model", "benchmark"} <= cols or not cols & needs[metric]:
        raise ValueError(f"a benchmark table for metric {metric} needs columns model, benchmark and "
                         f"{' or '.join(sorted(needs[metric]))}; it has {', '.join(sorted(cols))}")
    df = table.to_pandas()
    if metric == "error":
        df["y"] = df["error"] if "error" in cols else 1 - df["accuracy"]
    else:
        df["y"] = 1 - df["accuracy_norm"] if metric == "error_norm" else df["bits_per_byte"]
    if df["y"].isna().any() or (df["y"] < 0).any() or (metric != "bits_per_byte" and (df["y"] > 1).any()):
        raise ValueError(f"benchmark {metric} ({METRICS[metric]}) must be "
                         f"{'non-negative' if metric == 'bits_per_byte' else 'in [0, 1]'} with no gaps")
    wanted = benchmarks or sorted(df["benchmark"].unique())
    df = df[df["benchmark"].isin(wanted)]
    per_model = df.groupby("model")
    complete = per_model["benchmark"].nunique() == len(wanted)
    return {m: float(e) for m, e in per_model["y"].mean()[complete].items()}


def align(matrix: BpbMatrix, errors: dict[str, float], min_models: int) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """(X, y, models) over the models on both sides, and what was left out of each side; fewer than
    `min_models` is an error naming how many are needed and which are missing."""
    both = [m for m in matrix.models if m in errors]
    missing = {"without_benchmark": [m for m in matrix.models if m not in errors],
               "without_scores": sorted(m for m in errors if m not in matrix.models)}
    if len(both) < min_models:
        raise ValueError(f"{len(both)} model(s) have both scores and benchmark errors; at least {min_models} are "
                         f"needed. Without a benchmark error: {missing['without_benchmark'] or 'none'}; without "
                         f"scores: {missing['without_scores'] or 'none'}")
    rows = [matrix.models.index(m) for m in both]
    return matrix.bpb[rows], np.array([errors[m] for m in both]), both, missing
