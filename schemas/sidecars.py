"""The JSON files beside the tables ("sidecars"): where each lives, its version and its keys.

Writers pass the declaration to `Store.write_json` (or call `Sidecar.validate` for files outside the
store), which refuses a missing or unknown key and stamps `schema_version`, so a sidecar on disk
always matches what is written here.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field


class SidecarError(ValueError):
    """A JSON sidecar does not have the keys its declaration lists."""


@dataclass(frozen=True)
class Sidecar:
    name: str
    path: str                      # where it lives (a glob: `*` is one path component or part of one)
    version: int
    required: dict[str, str]       # key -> what it holds
    optional: dict[str, str] = field(default_factory=dict)

    def validate(self, obj: dict) -> dict:
        """`obj` plus `schema_version`; SidecarError naming missing or unknown keys."""
        if not isinstance(obj, dict):
            raise SidecarError(f"{self.name}: expected a JSON object, got {type(obj).__name__}")
        keys = set(obj) - {"schema_version"}
        missing = sorted(set(self.required) - keys)
        unknown = sorted(keys - set(self.required) - set(self.optional))
        if missing or unknown:
            raise SidecarError(f"{self.name} ({self.path}): missing keys {missing}, unknown keys {unknown}")
        return {**obj, "schema_version": self.version}

    def matches(self, rel_path: str) -> bool:
        return fnmatch.fnmatch(rel_path, self.path)


INGEST_MARKER = Sidecar("ingest_marker", "_staging/ingest/*.json", 2, {
    "path": "the input file (absolute path)",
    "format": "the format it was read as",
    "fingerprint": "size:mtime_ns of the file when it was read",
    "options": "the field mapping and datasets options it was read with",
    "settings_key": "short digest of the ingest settings (filters, language ID)",
    "input_rows": "records read (= staged_rows + quarantined + skipped_records), one marker per chunk",
    "staged_rows": "documents staged (before deduplication)",
    "quarantined": "rows sent to quarantine",
    "reasons": "quarantine reason -> rows",
    "skipped_records": "records that hold no document by design (WARC request, metadata, warcinfo); "
                       "markers written before it existed lack it: read it as 0",
    "seconds": "time the chunk took",
    "chunk": "the chunk's index within its file (0 for a file read whole)",
    "chunks": "chunks of the file",
    "plan": "short digest of the chunk's place in the file (start, lines before, lines passed over, size)",
})

INGEST_PLAN = Sidecar("ingest_plan", "_staging/ingest-plans/*.json", 1, {
    "path": "the input file (absolute path)",
    "fingerprint": "size:mtime_ns of the file when it was planned",
    "chunk_bytes": "ingest.chunk_mb in bytes",
    "chunks": "per chunk: [start, lines before, lines passed over, size] (pipeline.io.chunks.Chunk)",
})

DOCS_MANIFEST = Sidecar("docs_manifest", "docs/_manifest.json", 1, {
    "state": "short digest of the finished input files the shards were built from",
    "num_shards": "ingest.num_shards",
    "shards": "docs, bytes, shards, largest_shard_bytes, smallest_shard_bytes",
    "written_at": "ISO 8601 time, UTC",
})

SCORER = Sidecar("scorer", "scores/scorer=*/_scorer.json", 1, {
    "scorer_id": "16 hex of sha256 over the identity below (code_version excluded)",
    "model_name": "curate_model.json's name, else the model directory's name",
    "weights_sha256": "sha256 of the weights",
    "tokenizer": "name@hash of the tokenizer files",
    "dtype": "float32 | bfloat16 | float16",
    "backend": "torch | vllm | student",
    "max_tokens": "window length in tokens, BOS included",
    "truncation": "first_n | sliding",
    "stride": "sliding windows' stride; null for first_n",
    "truncation_label": "first_n:<max_tokens> | sliding:<max_tokens>:<stride>",
    "code_version": "the pipeline version that scored (not part of the id)",
}, {
    "model_path": "the model directory, on the machine that scored in-process (export finds the tokenizer "
                  "there); absent for a service",
    "distilled": "a distilled student: {teacher (the teacher's identity), sample, features, target, seed}",
})

RATER = Sidecar("rater", "ratings/rater=*/_rater.json", 1, {
    "rater_id": "16 hex of sha256 over the identity below (code_version excluded)",
    "model_name": "curate_model.json's name, else the model directory's name",
    "weights_sha256": "sha256 of the weights (of student.npz for a student)",
    "tokenizer": "name@hash of the tokenizer files",
    "backend": "torch | vllm | student",
    "dtype": "float32 | bfloat16 | float16 (null for a student)",
    "decoding": "constrained (only the answer's slot tokens compete) | greedy (free generation, parsed) | student",
    "prompt_sha256": "sha256 of the prompt's instruction and answer template",
    "text_tokens": "the text's token budget in the prompt (head + tail beyond it)",
    "code_version": "the pipeline version that rated (not part of the id)",
}, {
    "model_path": "the model directory, when rated in-process",
    "distilled": "a student: {rater (the LLM rater's identity), targets, sample, agreement}",
})

SELECTION = Sidecar("selection", "selections/*/_selection.json", 1, {
    "name": "the selection's name (its folder)",
    "selection_id": "short digest of the select config and the files it read",
    "scorer_id": "the scorer whose scores the rules used; null if none",
    "scorer": "that scorer's identity (_scorer.json)",
    "config": "the select config",
    "counts": "docs, kept, dropped, reference_split, no_score, tokens, tokens_kept",
    "reasons": "drop reason -> documents",
    "timings": "seconds per phase",
    "thresholds": "per rule: label, type, candidates, and per threshold group its thresholds and counts",
    "report": "per report group: docs, kept and tokens (the dry-run table)",
    "report_by": "the docs column the report groups by",
    "code_version": "the pipeline version",
    "created_at": "ISO 8601 time, UTC",
})

EXPORT_FINGERPRINT = Sidecar("export_fingerprint", "exports/*/_export.json", 1, {
    "fingerprint": "short digest of the selection, the resolved export config, the tokenizer and mixture",
    "config": "the resolved export config",
})

EXPORT_SHARD = Sidecar("export_shard", "exports/*/_shards/shard-*.json", 1, {
    "shard": "shard index",
    "docs": "documents in the shard",
    "tokens": "tokens in the shard",
    "text_bytes": "UTF-8 bytes of the shard's texts",
    "files": "[{name, bytes, sha256}] of the shard's files",
    "plan_fingerprint": "the plan the shard was written under (a resumed export reuses it only if equal)",
})

EXPORT_MANIFEST = Sidecar("export_manifest", "exports/*/manifest.json", 1, {
    "name": "the export's name (its folder)",
    "fingerprint": "as in _export.json",
    "format": "parquet | jsonl.zst | tokens",
    "columns": "docs columns written; null for tokens",
    "tokens": "tokens format: dtype, byte order, EOS and the .idx layout; null otherwise",
    "tokenizer": "path, hash and vocab_size of the tokenizer that counted (and wrote) tokens",
    "selection": "name, selection_id and scorer_id of the selection exported",
    "seed": "seed of the global shuffle",
    "shuffle": "whether documents were shuffled",
    "token_budget": "the token budget; null for none",
    "group_by": "the docs column groups are counted by",
    "mixture": "source, group_by, weights and achieved token shares; null for none",
    "counts": "candidate_docs, sampled_out_docs, docs, tokens, text_bytes, bytes, shards",
    "groups": "[{group, docs, tokens, token_share}]",
    "shards": "per shard: shard, docs, tokens, text_bytes and files [{name, bytes, sha256}]",
    "config": "the resolved export config",
    "code_version": "the pipeline version",
    "created_at": "ISO 8601 time, UTC",
})

MIXTURE = Sidecar("mixture", "mixtures/*.json", 1, {
    "weights": "group -> weight (normalised to token shares)",
}, optional={"group_by": "the docs column (or, from curate mix, the DuckDB expression) of the groups "
                         "(default: export.group_by)",
             "groups_table": "mixtures/<name>/groups.parquet: doc_id -> group, heldout (curate mix)",
             "method": "the method whose proportions are the weights", "proportions": "final | average",
             "methods": "per method: final and average proportions, trajectory, per-group losses, mean loss",
             "groups": "per group: documents, held-out documents, training tokens",
             "config": "the mix config", "proxy": "the proxy model: parameters, tokens/s"})

CORRELATIONS = Sidecar("correlations", "correlations/*/_correlations.json", 1, {
    "name": "the run's name", "config": "the correlate config", "models": "[{name, path, scorer_id, source}]",
    "sample": "{group_by, pages_per_domain, min_domain_pages, seed, pages, domains, left_out: {domain: pages}}",
    "benchmark": "{source: leaderboard file or task, benchmarks, task_sha256, target_docs, items}",
    "missing": "{without_benchmark: [...], without_scores: [...]}: models left out",
    "dropped_pages": "sampled pages some model could not score (left out for all)",
    "selector": "the page selector's settings and held-out metrics (precision, recall, f1, accuracy)",
    "counts": "pages scored now, page scores written, ...", "timings": "seconds per phase",
    "code_version": "the pipeline version", "created_at": "ISO 8601, UTC",
})

TRAINED_MODEL = Sidecar("trained_model", "<model dir>/curate_model.json", 1, {
    "name": "the model's name (the scorer identity's model_name)",
    "kind": "trained_reference",
    "params": "parameters", "steps": "optimiser steps", "n_train_tokens": "tokens trained on",
    "n_reference_docs": "documents of the reference split", "n_train_docs": "of them trained on",
    "n_heldout_docs": "of them held out", "train_split_tokens": "tokens of the packed training rows",
    "heldout_tokens": "tokens of the held-out rows evaluated", "epochs": "passes over the training rows",
    "initial_heldout_loss": "held-out loss before training (nats/token)",
    "final_train_loss": "mean train loss over the last eval_every steps",
    "final_heldout_loss": "held-out loss after training", "train_seconds": "time in the training loop",
    "tokens_per_second": "training throughput", "seed": "the seed",
    "config": "the reference config it was trained with",
    "tokenizer": "the tokenizer's kind, size and special tokens",
    "history": "[{step, train_loss, heldout_loss}] at every evaluation",
    "heldout_doc_indexes": "indexes (in doc_id order) of the held-out documents of the split",
    "versions": "pipeline, torch and transformers versions",
})

CONVERTED_MODEL = Sidecar("converted_model", "<model dir>/curate_model.json", 1, {
    "name": "the model's name", "kind": "converted_gguf",
    "source": "where the GGUF came from", "source_sha256": "sha256 of the GGUF",
    "weights_sha256": "sha256 of the converted safetensors", "dtype": "dtype of the converted weights",
    "doc_start_token": "the token that starts a document (the tokenizer's BOS)",
    "license": "the model's licence", "conversion_seconds": "time the conversion took",
}, {
    "description": "what the model is, in words (e.g. which checkpoint, and that it was dequantised)",
})

# Every sidecar in the store, for `sidecar_for`; model cards are found by their `kind`.
EVALUATION = Sidecar("evaluation", "evaluations/*/_evaluation.json", 1, {
    "name": "the evaluation's name", "config": "the evaluate config",
    "arms": "per arm: source, docs available, and per seed the documents and tokens it trained on",
    "sets": "per held-out set (each group, the target): documents and tokens",
    "headline": "{set, rows}: the comparison on the target (or the groups' mean) per arm",
    "proxy": "the proxy model: parameters, tokens per proxy, tokens/s", "created_at": "ISO 8601 time, UTC",
})

EVALUATION_RUN = Sidecar("evaluation_run", "evaluations/*/_runs/*.json", 1, {
    "fingerprint": "what the run depends on (config, arm, seed, its documents, the held-out sets): a re-run "
                   "with the same fingerprint reuses it",
    "losses": "held-out set -> loss (nats)", "docs": "distinct documents trained on", "unique_tokens": "their tokens",
    "train_tokens": "tokens trained on", "tokens_per_second": "training throughput",
})

STORE_SIDECARS = (INGEST_MARKER, INGEST_PLAN, DOCS_MANIFEST, SCORER, RATER, SELECTION, EXPORT_FINGERPRINT, EXPORT_SHARD,
                  EXPORT_MANIFEST, MIXTURE, CORRELATIONS, EVALUATION, EVALUATION_RUN)
STUDENT_MODEL = Sidecar("student_model", "<model dir>/curate_model.json", 1, {
    "name": "the student's name (the scorer identity's model_name)", "kind": "distilled_student",
    "teacher": "the teacher scorer's identity (_scorer.json)", "target": "the teacher's column it predicts",
    "sample": "{group_by, fraction, min_docs, max_docs, seed, n_docs, n_groups, doc_ids_sha256}",
    "features": "the featurizer's settings (StudentSettings)", "weights_sha256": "sha256 of student.npz",
    "agreement": "k-fold agreement with the teacher on the sample: spearman, band_agreement, folds, rate",
    "fit_seconds": "time to fit the student (k folds and the final fit)",
    "key": "what the student depends on (teacher id, sample digest, features, target, folds): a re-run "
           "with the same key keeps it",
})

RATING_STUDENT = Sidecar("rating_student", "<model dir>/curate_model.json", 1, {
    "name": "the students' name (their rater identity's model_name)", "kind": "rating_student",
    "rater": "the LLM rater's identity (_rater.json)", "targets": "the ratings the students predict",
    "sample": "{group_by, fraction, min_docs, max_docs, seed, n_docs, n_groups, of_docs, doc_ids_sha256}",
    "features": "the featurizer's settings (StudentSettings)",
    "weights_sha256": "sha256 over the lines '<rating> <sha256 of <rating>.npz>'",
    "agreement": "per rating, k-fold agreement with the rater on the sample: spearman, accuracy, within_one, "
                 "constant_accuracy, folds, n_docs, rater_mean, rater_std",
    "fit_seconds": "time to fit the students (k folds and the final fits)",
    "key": "what the students depend on (rater id, sample digest, targets, folds, features): a re-run with the "
           "same key keeps them",
})

MODEL_CARDS = {"trained_reference": TRAINED_MODEL, "converted_gguf": CONVERTED_MODEL,
               "distilled_student": STUDENT_MODEL, "rating_student": RATING_STUDENT}


def sidecar_for(rel_path: str) -> Sidecar | None:
    """The declaration of the store sidecar at `rel_path` (relative to the store), if any."""
    return next((s for s in STORE_SIDECARS if s.matches(rel_path)), None)
