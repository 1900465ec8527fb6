"""The `select:` section: the selection rules (one pydantic model per kind) and their order."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from pipeline.config.base import NAME_PATTERN, Strict
from schemas import RATING_CRITERIA


# A scorer column, CCNet's perplexity, or a scorer column as a percentile (0-100) within the document's
# host or domain among the scored documents of that group (pipeline.selection.rules.percentile_in_group).
ScoreColumn = Literal["perplexity", "bits_per_byte", "nll_mean", "ccnet_perplexity",
                      "perplexity_pct_in_host", "perplexity_pct_in_domain",
                      "bits_per_byte_pct_in_host", "bits_per_byte_pct_in_domain",
                      "nll_mean_pct_in_host", "nll_mean_pct_in_domain"]


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


class CorrelationRule(Strict):
    """Thrush et al.: keep pages in descending score of a `curate correlate` run's page selector until a
    keep fraction of the tokens (or a token budget) is reached."""
    type: Literal["correlation"]
    run: str = Field("default", pattern=NAME_PATTERN, description="the correlate run (correlate.name)")
    keep_fraction: float | None = Field(None, gt=0, le=1)
    token_budget: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_target(self):
        if (self.keep_fraction is None) == (self.token_budget is None):
            raise ValueError("give exactly one of keep_fraction and token_budget")
        return self


class RatingRule(Strict):
    """DataMan (Peng et al., 2025): keep documents by one rater's ratings (store/ratings/) with a selection
    recipe: overall_level (documents rated `level`, a seeded uniform sample up to the size target), top_k,
    multi_domain (token quotas per source, then per rater domain, top_k in each) or temperature sampling."""
    type: Literal["rating"]
    rater: str | None = Field(None, description="a rater id or model name in store/ratings; default: the rate "
                                                "stage's students (they rate every document), else the only rater")
    recipe: Literal["overall_level", "top_k", "multi_domain", "temperature"] = "top_k"
    criterion: Literal[RATING_CRITERIA + ("quality_mix",)] = Field(
        "overall_score", description="one of the 14 ratings, or quality_mix (the sum of all 14)")
    expected: bool = Field(False, description="judge the expected scores (<criterion>_expected), not the integers")
    level: int = Field(5, ge=1, le=5, description="overall_level: the score a kept document has")
    keep_fraction: float | None = Field(None, gt=0, le=1, description="share of the rated candidates' tokens kept")
    token_budget: int | None = Field(None, ge=1, description="... or tokens kept (overall_level: optional)")
    rate: float | None = Field(None, gt=0, le=1, description="temperature: the expected share of documents kept")
    tau: float = Field(2.0, gt=0, description="temperature: P(keep) proportional to exp(score / tau)")
    sources: str = Field("domain", description="multi_domain: the docs column naming a document's source")

    @model_validator(mode="after")
    def _recipe_settings(self):
        recipe, sized = self.recipe, self.keep_fraction is not None or self.token_budget is not None
        if self.keep_fraction is not None and self.token_budget is not None:
            raise ValueError("give one of keep_fraction and token_budget, not both")
        if recipe in ("top_k", "multi_domain") and not sized:
            raise ValueError(f"recipe {recipe} needs keep_fraction or token_budget")
        if recipe == "temperature" and (self.rate is None or sized):
            raise ValueError("recipe temperature needs rate (the expected share of documents kept), and takes "
                             "no keep_fraction or token_budget")
        # settings left at their defaults round-trip through model_dump; only a changed one is misplaced
        misplaced = [f"{key} is a setting of recipe {owner}" for key, value, default, owner in (
            ("level", self.level, 5, "overall_level"), ("rate", self.rate, None, "temperature"),
            ("tau", self.tau, 2.0, "temperature"), ("sources", self.sources, "domain", "multi_domain"))
            if value != default and recipe != owner]
        if misplaced:
            raise ValueError(f"recipe {recipe}: {'; '.join(misplaced)}")
        if recipe == "overall_level" and (self.expected or self.criterion == "quality_mix"):
            raise ValueError("recipe overall_level keeps an integer score of one criterion: not expected, "
                             "not quality_mix")
        return self


SelectionRule = Annotated[Union[WhereRule, BandRule, PercentileRule, CCNetRule, BertinRule, CorrelationRule,
                                RatingRule], Field(discriminator="type")]


class SelectConfig(Strict):
    """`curate select`: rules applied in order; each one's thresholds come from the documents the
    rules before it kept. Documents of a reference model's training split are excluded first."""
    name: str = Field("default", pattern=NAME_PATTERN, description="store/selections/<name>/")
    scorer: str | None = Field(None, description="a scorer id or model name in store/scores; default: "
                                                 "the score stage's scorer, or the store's only one")
    rules: list[SelectionRule] = Field(
        default_factory=list,
        description="empty: keep everything outside the reference split. Score rules take `score:` perplexity "
                    "| bits_per_byte | nll_mean | ccnet_perplexity, or one of the first three normalised within "
                    "the document's host or domain as <column>_pct_in_host | <column>_pct_in_domain (its "
                    "percentile, 0-100, among the scored documents of that group: a band over it is taken "
                    "across all groups), `by:` a docs column (domain, language, host, ...) and "
                    "`min_group_docs:` (smaller groups use the global thresholds). `where` rules are DuckDB "
                    "predicates over `candidates`: docs columns, the scorer's columns and the _pct_in_ ones",
        json_schema_extra={"examples": [
            {"type": "where", "sql": "language = 'en' AND n_chars >= 200"},
            {"type": "band", "criterion": "medium", "rate": 0.5},
            {"type": "band", "criterion": "medium", "rate": 0.5, "score": "perplexity_pct_in_host"},
            {"type": "percentile", "lower": 25, "upper": 75, "by": "domain"},
            {"type": "ccnet", "keep": ["head", "middle"], "cuts": [30, 60], "by": "language"},
            {"type": "bertin", "method": "gaussian", "rate": 0.5, "width": 4.5},
            {"type": "rating", "recipe": "overall_level", "level": 5, "keep_fraction": 0.3}]})
    exclude_reference_split: bool = Field(True, description="drop the documents the scorer's model trained on "
                                                             "(when it is a reference model trained on the store)")
    seed: int = Field(0, description="seeds the random draws of BERTIN sampling and of the rating recipes "
                                     "overall_level and temperature")
