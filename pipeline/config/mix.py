"""The `mix:` section: groups of the store, the proxy model, and the mixing methods compared on it."""
from __future__ import annotations

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
    warmup_steps: int = Field(10, ge=0)
    device: str = Field("cpu", description="cpu or cuda (bf16 autocast)")


class AioliConfig(Strict):
    """Aioli's hyper-parameters (the paper's 160M runs: lp_rounds 2-4, lp_steps 4-10, eta 0.1-1,
    one_hot_factor 0.5-0.75)."""
    round_steps: int = Field(50, ge=2, description="steps per round, LearnParams' sweeps included")
    lp_rounds: int = Field(1, ge=1, description="sweeps over the groups per LearnParams")
    lp_steps: int = Field(4, ge=1, description="steps on each group's smoothed one-hot mixture")
    eta: float = Field(1.0, gt=0, description="exponentiated-gradient step size")
    one_hot_factor: float = Field(0.625, gt=0, le=1, description="the swept group's share (1: pure one-hot)")
    ema: float | None = Field(None, ge=0, lt=1, description="average the learned matrices over rounds")
    prior: list[float] | None = Field(None, description="restricted mode: train on this mixture first ...")
    prior_steps: int = Field(0, ge=0, description="... for this many steps")


class MixConfig(Strict):
    """`curate mix`: groups of the store (any SQL expression over docs), each with a held-out split recorded
    in store/mixtures/<name>/groups.parquet; proxies trained for `steps` steps under each method; the
    chosen method's proportions in store/mixtures/<name>.json, which `curate export --mixture` samples."""
    name: str = Field("default", pattern=NAME_PATTERN, description="store/mixtures/<name>.json")
    group_by: str = Field("host", description="a DuckDB expression over docs naming a document's group, e.g. "
                                              "host, language, or CASE WHEN n_chars < 500 THEN 'short' ELSE 'long' END")
    where: str | None = Field(None, description="a DuckDB predicate over docs")
    selection: str | None = Field(None, description="only the kept documents of this selection")
    max_groups: int = Field(8, ge=2, description="the largest groups by documents; the rest are left out")
    min_group_docs: int = Field(20, ge=2, description="smaller groups are left out")
    max_docs_per_group: int = Field(400, ge=2, description="a seeded sample of each group (bounds the work)")
    heldout_fraction: float = Field(0.1, gt=0, lt=1, description="share of each group held out for its loss")
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
        return self
