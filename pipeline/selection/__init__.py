"""Selection: which documents to keep, by their scores.

    rules.py         the rules, pure numpy functions with their papers' formulas, and their registry
    report.py        what-if tables: kept vs total per group, sweeps over criteria and rates
    stage.py         the select stage: DuckDB reads docs + one scorer's scores -> selections/<name>/
"""
