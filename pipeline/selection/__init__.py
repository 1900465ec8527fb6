"""Selection: which documents to keep, by their scores.

    rules.py         the rules, pure numpy functions with their papers' formulas, and their registry
    rating.py        a rater's ratings as candidates columns for the `rating` rule (DataMan's recipes)
    report.py        what-if tables: kept vs total per group, sweeps over criteria and rates
    stage.py         the select stage: DuckDB reads docs + one scorer's scores (+ a correlate run's
                     page scores, a rater's ratings) -> selections/<name>/
"""
