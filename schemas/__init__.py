"""Arrow schemas of every table in the corpus store, each with a version, and (in `sidecars`) the
keys of every JSON file beside them (`from schemas import sidecars`).

Writers call `validate(table, SCHEMA)` before writing; readers can rely on the columns below.
The version lives in the schema metadata (`schema_version`), so a Parquet file says which
version of its table it holds.
"""
from __future__ import annotations

import pyarrow as pa


def _versioned(name: str, version: int, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={b"table": name.encode(), b"schema_version": str(version).encode()})


SOURCE = pa.struct([
    pa.field("source_file", pa.string()),
    pa.field("source_offset", pa.int64()),
    pa.field("url", pa.string()),
])

# One row per distinct normalised text.
DOCS = _versioned("docs", 1, [
    pa.field("doc_id", pa.string(), nullable=False),        # blake2b-128 hex of the normalised UTF-8 text
    pa.field("text", pa.string(), nullable=False),          # NFC, control characters removed
    pa.field("url", pa.string()),
    pa.field("host", pa.string()),                          # the URL's host name, e.g. docs.python.org
    pa.field("domain", pa.string()),                        # registered domain (public suffix + 1), e.g. python.org
    pa.field("source_id", pa.string()),                     # the input's own id field, if mapped
    pa.field("source_file", pa.string(), nullable=False),   # first occurrence (smallest file, offset)
    pa.field("source_offset", pa.int64(), nullable=False),  # line / row index / WARC byte offset
    pa.field("source_format", pa.string(), nullable=False),
    pa.field("n_bytes", pa.int64(), nullable=False),        # UTF-8 bytes of text
    pa.field("n_chars", pa.int64(), nullable=False),
    pa.field("language", pa.string()),                      # fastText lid.176 label, e.g. "en"
    pa.field("language_score", pa.float32()),
    pa.field("metadata", pa.string()),                      # JSON object of mapped extra fields
    pa.field("duplicate_count", pa.int64(), nullable=False),  # occurrences in the input (>= 1)
    pa.field("duplicate_sources", pa.list_(SOURCE)),        # every occurrence, at most MAX_SOURCES
])
MAX_SOURCES = 64

# Documents of one input file after normalisation, before deduplication (_staging/ingest/).
STAGED_DOCS = _versioned("staged_docs", 1, [f for f in DOCS if not f.name.startswith("duplicate_")])

# One row per rejected input row or file.
QUARANTINE = _versioned("quarantine", 1, [
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("source_offset", pa.int64()),                  # null when the whole file is rejected
    pa.field("source_format", pa.string()),
    pa.field("reason", pa.string(), nullable=False),        # a code, e.g. malformed_json
    pa.field("detail", pa.string()),                        # a human-readable explanation
    pa.field("raw", pa.binary()),                           # the rejected bytes, truncated to MAX_RAW_BYTES
])
MAX_RAW_BYTES = 16_384

# The run record of one stage run, stored as JSON under _runs/<stage>/<run_id>.json.
RUN_RECORD = _versioned("run_record", 1, [
    pa.field("stage", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),        # running | finished | failed | abandoned
    pa.field("config", pa.string(), nullable=False),        # JSON of the stage config
    pa.field("inputs", pa.list_(pa.string())),
    pa.field("code_version", pa.string(), nullable=False),
    pa.field("started_at", pa.string(), nullable=False),    # ISO 8601, UTC
    pa.field("finished_at", pa.string()),
    pa.field("counts", pa.map_(pa.string(), pa.int64())),
    pa.field("timings", pa.map_(pa.string(), pa.float64())),
    pa.field("error", pa.string()),
])

# One row per (doc_id, scorer): the document's likelihood under one reference model.
# Stored under scores/scorer=<scorer_id>/; the scorer's full identity is in _scorer.json there.
SCORES = _versioned("scores", 1, [
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("scorer_id", pa.string(), nullable=False),     # short hash of the scorer identity below
    pa.field("model_name", pa.string(), nullable=False),
    pa.field("backend", pa.string(), nullable=False),       # torch | vllm
    pa.field("dtype", pa.string(), nullable=False),
    pa.field("truncation", pa.string(), nullable=False),    # first_n:<max_tokens> | sliding:<window>:<stride>
    pa.field("n_tokens", pa.int64(), nullable=False),       # tokens in the document (first_n: in its first max_tokens x 32 characters)
    pa.field("n_predicted", pa.int64(), nullable=False),    # tokens whose NLL was summed
    pa.field("n_bytes", pa.int64(), nullable=False),        # UTF-8 bytes of the scored span
    pa.field("nll_sum", pa.float64()),                      # natural log, over predicted tokens
    pa.field("nll_mean", pa.float64()),
    pa.field("perplexity", pa.float64()),                   # exp(nll_sum / n_predicted)
    pa.field("bits_per_byte", pa.float64()),                # nll_sum / (ln 2 * n_bytes)
    pa.field("nll_p50", pa.float32()),                      # token-NLL quantiles
    pa.field("nll_p90", pa.float32()),
    pa.field("surprise_fraction", pa.float32()),            # share of tokens with NLL > SURPRISE_NATS
    pa.field("error", pa.string()),                         # why no score, e.g. too_short; null when scored
])
SURPRISE_NATS = 6.907755  # ln(1000): the model gave the token less than a 1/1000 chance

# The documents a trained reference model saw (reference_splits/model=<name>/): excluded from selection.
REFERENCE_SPLIT = _versioned("reference_split", 1, [
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("model_name", pa.string(), nullable=False),
    pa.field("heldout", pa.bool_(), nullable=False),        # kept out of training for the held-out loss
])

# One row per document of `docs` per selection (selections/<name>/): kept or why not.
# The thresholds and rules are in _selection.json beside the parts.
SELECTION = _versioned("selection", 1, [
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("kept", pa.bool_(), nullable=False),
    pa.field("reason", pa.string()),                        # the rule that dropped it, e.g. "band:medium:above"; null if kept
    pa.field("score", pa.float64()),                        # the score the last score rule used; null if none
    pa.field("group", pa.string()),                         # the threshold group (e.g. the domain) of that rule
])

# The documents of one export, in shard order (exports/<name>/documents.parquet).
EXPORT_DOCUMENTS = _versioned("export_documents", 1, [
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("shard", pa.int32(), nullable=False),          # shard index
    pa.field("position", pa.int64(), nullable=False),       # order within the shard
    pa.field("group", pa.string()),                         # value of export.group_by
    pa.field("n_tokens", pa.int64(), nullable=False),       # under the export tokenizer (EOS included for tokens)
    pa.field("n_bytes", pa.int64(), nullable=False),        # UTF-8 bytes of text
])

# A `curate correlate` run (correlations/<run>/...): the bits-per-byte matrix, the models' benchmark
# results, one row per domain with the estimates and the projected weight, and the page selector's
# score of every document. The run's settings, metrics and what was left out are in _correlations.json.
BPB_MATRIX = _versioned("bpb_matrix", 1, [
    pa.field("run", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("domain", pa.string(), nullable=False),
    pa.field("bits_per_byte", pa.float64(), nullable=False),  # summed NLL / (ln 2 * summed bytes) over its pages
    pa.field("pages", pa.int64(), nullable=False),
    pa.field("tokens", pa.int64(), nullable=False),         # predicted tokens under this model
])
BENCHMARK_RESULTS = _versioned("benchmark_results", 1, [
    pa.field("run", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("benchmark", pa.string(), nullable=False),
    pa.field("accuracy", pa.float64()),                     # lm-evaluation-harness acc (null if only an error was given)
    pa.field("accuracy_norm", pa.float64()),                # acc_norm: per UTF-8 byte of the choice
    pa.field("error", pa.float64()),                        # 1 - accuracy
    pa.field("bits_per_byte", pa.float64()),                # of the gold choices given their contexts
    pa.field("items", pa.int64()),
    pa.field("used", pa.bool_(), nullable=False),           # the model has scores too (it is in the estimate)
])
CORRELATION_ESTIMATES = _versioned("correlation_estimates", 1, [
    pa.field("run", pa.string(), nullable=False),
    pa.field("domain", pa.string(), nullable=False),
    pa.field("estimate", pa.float64(), nullable=False),     # of the run's method; larger = lower loss goes with lower error
    pa.field("rank", pa.int64(), nullable=False),           # 1 = the largest estimate
    pa.field("method", pa.string(), nullable=False),
    pa.field("sign_cdf", pa.float64(), nullable=False),     # every estimator, for comparison
    pa.field("sign", pa.float64(), nullable=False),
    pa.field("sign_sign", pa.float64(), nullable=False),
    pa.field("product", pa.float64(), nullable=False),
    pa.field("spearmanr", pa.float64(), nullable=False),
    pa.field("pages", pa.int64(), nullable=False),          # sampled pages in the matrix
    pa.field("store_pages", pa.int64(), nullable=False),    # pages of the domain in the store
    pa.field("store_bytes", pa.int64(), nullable=False),
    pa.field("token_share", pa.float64(), nullable=False),  # share of the store's tokens: its bytes x the sample's tokens per byte
    pa.field("tau", pa.float64(), nullable=False),          # cap: token_share / keep_fraction
    pa.field("weight", pa.float64(), nullable=False),       # projected sampling weight (sums to 1)
    pa.field("projection", pa.string(), nullable=False),    # linear | l2
])
PAGE_SCORES = _versioned("page_scores", 1, [
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("run", pa.string(), nullable=False),
    pa.field("p_include", pa.float64(), nullable=False),    # the fastText selector's P(include)
    pa.field("domain", pa.string()),                        # the page's group_by value
    pa.field("label", pa.string()),                         # include | exclude by its domain's weight; null if not in the matrix
])

# One row per (doc_id, rater) (ratings/rater=<rater_id>/): a DataMan-style rating of the document,
# by an LLM rater (decoding constrained | greedy) or a distilled student. The rater's identity is in
# _rater.json there. Scores are integers 1-5 (higher is better); the expected scores are
# sum_s s * p(s) over the rater's probabilities of "1".."5" at each score slot (a student predicts them).
RATING_CRITERIA = ("accuracy", "coherence", "language_consistency", "semantic_density", "knowledge_novelty",
                   "topic_focus", "creativity", "professionalism", "style_consistency", "grammatical_diversity",
                   "structural_standardization", "originality", "sensitivity", "overall_score")
RATINGS = _versioned("ratings", 1, [
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("rater_id", pa.string(), nullable=False),      # short hash of the rater identity
    pa.field("model_name", pa.string(), nullable=False),
    pa.field("decoding", pa.string(), nullable=False),      # constrained | greedy | student
    pa.field("domain", pa.string()),                        # the rater's domain letter A-O; null if not parsed
    *[pa.field(name, pa.int8()) for name in RATING_CRITERIA],                  # 1-5; null if not parsed / not predicted
    *[pa.field(f"{name}_expected", pa.float64()) for name in RATING_CRITERIA],  # 1.0-5.0
    pa.field("answer", pa.string()),                        # the rater's raw answer (null for a student)
    pa.field("parsed", pa.bool_(), nullable=False),         # the answer parsed (always, when constrained)
    pa.field("error", pa.string()),                         # why not: the parser's message, or e.g. too_short
    pa.field("n_text_tokens", pa.int64()),                  # tokens of the text in the prompt, after head+tail truncation
    pa.field("truncated", pa.bool_()),                      # the text was cut to its head and tail
])

# The groups of a `curate mix` run (mixtures/<name>/groups.parquet): every document it grouped, and whether
# it is in its group's held-out split (the validation set a downstream trainer can keep using).
MIXTURE_GROUPS = _versioned("mixture_groups", 1, [
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("group", pa.string(), nullable=False),
    pa.field("heldout", pa.bool_(), nullable=False),
    pa.field("sampled", pa.bool_(), nullable=False),        # among the documents the proxies trained or were evaluated on
])

# `curate evaluate` (evaluations/<name>/): every proxy's loss on every held-out set (runs.parquet), and per
# set each arm's mean and spread over seeds against the random arm (summary.parquet). A set is a group's
# held-out documents, `target`, or `groups_mean` (the mean over the groups).
EVALUATION_RUNS = _versioned("evaluation_runs", 1, [
    pa.field("evaluation", pa.string(), nullable=False),
    pa.field("arm", pa.string(), nullable=False),           # random | selection:<name> | export:<name>
    pa.field("seed", pa.int32(), nullable=False),
    pa.field("set", pa.string(), nullable=False),
    pa.field("loss", pa.float64(), nullable=False),         # mean next-token loss, nats
    pa.field("docs", pa.int64(), nullable=False),           # distinct documents the proxy trained on
    pa.field("unique_tokens", pa.int64(), nullable=False),  # their tokens
    pa.field("train_tokens", pa.int64(), nullable=False),   # tokens trained on: steps x batch_size x max_seq_len
])
EVALUATION_SUMMARY = _versioned("evaluation_summary", 1, [
    pa.field("evaluation", pa.string(), nullable=False),
    pa.field("arm", pa.string(), nullable=False),
    pa.field("set", pa.string(), nullable=False),
    pa.field("seeds", pa.int32(), nullable=False),
    pa.field("mean_loss", pa.float64(), nullable=False),
    pa.field("std_loss", pa.float64()),                     # over seeds (n - 1); null with one seed
    pa.field("perplexity", pa.float64(), nullable=False),   # exp(mean_loss)
    pa.field("diff_mean", pa.float64(), nullable=False),    # mean over seeds of (arm - random); negative is better
    pa.field("diff_std", pa.float64()),                     # its spread over seeds; null with one seed
    pa.field("beats_random", pa.bool_(), nullable=False),   # lower on every seed, by more than the spread
])

TABLES = {"reference_split": REFERENCE_SPLIT, "docs": DOCS, "quarantine": QUARANTINE, "run_record": RUN_RECORD,
          "scores": SCORES, "selection": SELECTION, "export_documents": EXPORT_DOCUMENTS, "bpb_matrix": BPB_MATRIX,
          "benchmark_results": BENCHMARK_RESULTS, "correlation_estimates": CORRELATION_ESTIMATES,
          "page_scores": PAGE_SCORES, "ratings": RATINGS,
          "mixture_groups": MIXTURE_GROUPS, "evaluation_runs": EVALUATION_RUNS,
          "evaluation_summary": EVALUATION_SUMMARY}


class SchemaError(ValueError):
    """A table does not match the schema its writer declared."""


def validate(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Return `table` cast to `schema`, or raise SchemaError naming the offending columns.

    Columns must match by name and order-insensitively; types must be castable without loss
    (e.g. int32 -> int64, large_string -> string); non-nullable columns must hold no nulls.
    """
    name = schema.metadata.get(b"table", b"?").decode()
    missing = [f.name for f in schema if f.name not in table.column_names]
    extra = [c for c in table.column_names if c not in schema.names]
    if missing or extra:
        raise SchemaError(f"{name}: missing columns {missing}, unexpected columns {extra}")
    table = table.select(schema.names)
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise SchemaError(f"{name}: column {field.name!r} holds nulls but is not nullable")
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
        raise SchemaError(f"{name}: cannot cast to schema version "
                          f"{schema.metadata[b'schema_version'].decode()}: {e}") from e
