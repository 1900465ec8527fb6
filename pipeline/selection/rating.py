"""What the select stage needs for `rating` rules (`rules.SCORE_RULES["rating"]`): one rater's DataMan
ratings (store/ratings/rater=<id>/) as candidates columns, and the sum of the 14 for quality_mix."""
from __future__ import annotations

import numpy as np

from pipeline.rating import recipes
from pipeline.selection.rules import RATING_DOMAIN, score_column
from schemas import RATING_CRITERIA


def ratings_sql(glob: str) -> str:
    """The rater's parsed ratings as candidates columns: doc_id, rating_domain, and rating_<criterion> and
    rating_<criterion>_expected for the 14 criteria (an unparsed row gives none: the document is unrated)."""
    columns = [f"CAST({c}{s} AS DOUBLE) AS rating_{c}{s}" for s in ("", "_expected") for c in RATING_CRITERIA]
    return (f"SELECT doc_id, domain AS {RATING_DOMAIN}, {', '.join(columns)} "
            f"FROM read_parquet('{glob}') WHERE parsed")


def rating_columns(rules: list) -> set[str]:
    """The candidates columns the rating rules read: each one's criterion (the 14 behind quality_mix) and,
    for multi_domain, the rater's domain and the `sources` docs column."""
    out = set()
    for rule in rules:
        if rule.type != "rating":
            continue
        suffix = "_expected" * rule.expected
        out |= ({f"rating_{c}{suffix}" for c in RATING_CRITERIA} if rule.criterion == "quality_mix"
                else {score_column(rule)})
        out |= {RATING_DOMAIN, rule.sources} if rule.recipe == "multi_domain" else set()
    return out


def add_quality_mix(columns: dict[str, np.ndarray], rules: list) -> None:
    """rating_quality_mix[_expected]: `recipes.quality_mix`, the sum of the 14 (NaN where one is missing)."""
    for rule in rules:
        if rule.type == "rating" and rule.criterion == "quality_mix":
            suffix = "_expected" * rule.expected
            columns[score_column(rule)] = recipes.quality_mix(
                np.column_stack([columns[f"rating_{c}{suffix}"] for c in RATING_CRITERIA]))
