"""The `mix:` section: groups of the store, the proxy model, and the mixing methods compared on it."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import NAME_PATTERN, Strict

MixMethod = Literal["stratified", "token_share", "log_linear", "aioli"]


class ProxyModelConfig(Strict):
    """The proxy: a small Llama trained by pipeline.train (the reference model's trainer)."""
    vocab_size: int = Field(2048, ge=300, description="byte-level BPE trained on the groups' training documents")
    hidden_size: int = Field(64, ge=1)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    max_seq_len: int = Field(128, ge=8)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int | None = Field(None, ge=0, description="default: a tenth of the steps (a short warmup at "
                                     "this rate left some seeds 0.3 nats behind the rest after 1,000 steps)")
    device: str = Field("cpu", description="cpu or cuda (bf16 autocast)")


class AioliConfig(Strict):
    """Aioli's hyper-parameters. The paper's 160M runs used lp_rounds 2-4, lp_steps 4-10, eta 0.1-1 and
    one_hot_factor 0.5-0.75. The defaults are for small proxies and short runs: a step on a skewed mixture costs
    held-out loss there (4 consecutive steps per group cost about 0.07 nats at 1,000 steps), so LearnParams
    takes one step per group and sweeps 8 times to average out the noise of single steps, and a larger eta
    lets the few rounds move the proportions (benchmarks/mixing_quality.py)."""
    round_steps: int = Field(200, ge=2, description="steps per round, LearnParams' sweeps included")
    lp_rounds: int = Field(8, ge=1, description="sweeps over the groups per LearnParams")
    lp_steps: int = Field(1, ge=1, description="steps on each group's smoothed one-hot mixture")
    eta: float = Field(4.0, gt=0, description="exponentiated-gradient step size")
    one_hot_factor: float = Field(0.5, gt=0, le=1, description="the swept group's share (1: pure one-hot)")
    ema: float | None = Field(None, ge=0, lt=1, description="average the learned matrices over rounds")
    prior: list[float] | None = Field(None, description="restricted mode: train on this mixture (default uniform) ...")
    prior_steps: int = Field(0, ge=0, description="... for this many steps first (a short run's early sweeps cost "
                                                   "held-out loss: half of a run of 100 steps)")


class MixConfig(Strict):
    """`curate mix`: groups of the store (any SQL expression over docs), each with a held-out split recorded
    in store/mixtures/<name>/groups.parquet; proxies trained for `steps` steps under each method; the
    chosen method's proportions in store/mixtures/<name>.json, which `curate export --mixture` samples."""
    name: str = Field("default", pattern=NAME_PATTERN, description="store/mixtures/<name>.json")
    group_by: str = Field("host", description="a DuckDB expression over docs naming a document's group, e.g. "
                                              "host, language, or CASE WHEN n_chars < 500 THEN 'short' ELSE 'long' END")
    where: str | None = Field(None, description="a DuckDB predicate over docs")
    selection: str | None = Field(None, pattern=NAME_PATTERN, description="only the kept documents of this selection")
    max_groups: int = Field(8, ge=2, description="the largest groups by documents; the rest are left out")
    min_group_docs: int = Field(20, ge=2, description="smaller groups are left out")
    max_docs_per_group: int = Field(400, ge=2, description="a seeded sample of each group (bounds the work)")
    heldout_fraction: float = Field(0.1, gt=0, lt=1, description="share of each group held out for its loss")
    max_eval_rows: int = Field(64, ge=1, description="rows of max_seq_len tokens each group's held-out loss is "
                                                     "measured on (Aioli measures it after every sweep)")
    steps: int = Field(300, ge=1, description="training steps of every method's proxy")
    methods: list[MixMethod] = Field(default_factory=lambda: ["stratified", "token_share", "log_linear", "aioli"])
    use: MixMethod = Field("aioli", description="the method whose proportions become the mixture's weights")
    average: bool = Field(False, description="use the time-averaged proportions, not the final ones")
    law_runs: int | None = Field(None, ge=3, description="log_linear: small runs to fit on (default groups + 3)")
    law_steps: int | None = Field(None, ge=1, description="log_linear: steps of each small run (default steps / 4)")
    proxy: ProxyModelConfig = Field(default_factory=ProxyModelConfig)
    aioli: AioliConfig = Field(default_factory=AioliConfig)
    seed: int = 0

    @model_validator(mode="after")
    def _use_is_run(self):
        if self.use not in self.methods:
            raise ValueError(f"mix.use {self.use!r} is not among mix.methods {self.methods}")
        if self.law_steps and self.law_steps > self.steps:
            raise ValueError(f"mix.law_steps {self.law_steps} exceeds mix.steps {self.steps}: the law's runs are "
                             "small runs of the same proxy")
        return self


class EvaluateConfig(Strict):
    """`curate evaluate`: does a curation choice help? Proxies trained on exactly the same number of tokens
    from a random subset of the store and from each curated arm, one per seed, compared on each group's
    held-out documents and on a target set; store/evaluations/<name>/ and the `evaluations` view."""
    name: str = Field("default", pattern=NAME_PATTERN, description="store/evaluations/<name>/")
    arms: list[str] = Field(default_factory=list, description="curated arms, each selection:<name> (its kept "
                            "documents) or export:<name> (its exported documents); default: selection:<select.name>")
    pool_where: str | None = Field(None, description="the random arm draws from the documents this DuckDB "
                                                     "predicate over docs admits (default: every document)")
    group_by: str = Field("host", description="a DuckDB expression over docs: the groups whose held-out loss is reported")
    max_groups: int = Field(8, ge=1, description="the largest groups by documents")
    min_group_docs: int = Field(20, ge=2)
    heldout_fraction: float = Field(0.1, gt=0, lt=1, description="share of each group held out from every arm")
    max_heldout_docs: int = Field(40, ge=1, description="held-out documents evaluated per group")
    target_where: str | None = Field(None, description="the target set: documents this predicate admits, held "
                                                       "out from every arm (e.g. host = 'docs.python.org')")
    target_file: str | None = Field(None, description="or a JSONL (.gz) / Parquet file of texts (field `text`)")
    max_target_docs: int = Field(200, ge=1)
    max_eval_rows: int = Field(64, ge=1, description="rows of max_seq_len tokens each held-out set is cut to")
    seeds: int = Field(3, ge=1, description="proxies per arm (the random subset is drawn afresh per seed)")
    steps: int = Field(200, ge=1, description="training steps of every proxy: steps x batch_size x max_seq_len tokens")
    tokenizer_docs: int = Field(2000, ge=10, description="documents the shared BPE is trained on")
    proxy: ProxyModelConfig = Field(default_factory=ProxyModelConfig)
    seed: int = 0

    @model_validator(mode="after")
    def _one_target(self):
        if self.target_where and self.target_file:
            raise ValueError("evaluate: set target_where or target_file, not both")
        for arm in self.arms:
            kind, _, name = arm.partition(":")
            if kind not in ("selection", "export") or not re.match(NAME_PATTERN, name):
                raise ValueError(f"evaluate.arms: {arm!r} is not selection:<name> or export:<name>")
        return self
