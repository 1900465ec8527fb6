"""What the rate stage tells its user: how many answers parsed, the students' agreement with the rater,
and the mean Overall Score per host (the rater's greedy and expected scores, and the students')."""
from __future__ import annotations

from pipeline.store import Store


def _glob(store: Store, rater_id: str) -> str:
    return store.spark_path("ratings", f"rater={rater_id}", "part-*.parquet").replace("'", "''")


def rating_counts(store: Store, rater_id: str) -> dict:
    """rated (every row of this rater), parsed, unparsed (kept with their error)."""
    from pipeline.sql import connect
    con, _ = connect(store)
    rated, parsed = con.execute(f"SELECT count(*), count(*) FILTER (WHERE parsed) FROM read_parquet('{_glob(store, rater_id)}')"
                            ).fetchall()[0]
    return {"rated": int(rated), "parsed": int(parsed), "unparsed": int(rated - parsed)}


def by_host(store: Store, rater_id: str, student_id: str | None, group_by: str, limit: int = 40) -> list[dict]:
    """Per `group_by` value (the largest `limit` groups): the rater's sample documents, their mean Overall
    Score (greedy integers and expected), and the students' mean predicted Overall Score over all documents."""
    from pipeline.sql import connect
    con, _ = connect(store)
    student = (f"""LEFT JOIN (SELECT d.{group_by} AS g, count(*) AS docs, avg(s.overall_score_expected) AS student
                   FROM docs d JOIN read_parquet('{_glob(store, student_id)}') s USING (doc_id) GROUP BY 1) st
                   ON st.g IS NOT DISTINCT FROM r.g""" if student_id else "")
    rows = con.execute(f"""
        WITH r AS (SELECT d.{group_by} AS g, count(*) AS rated, count(*) FILTER (WHERE r.parsed) AS parsed,
                          avg(r.overall_score) AS overall, avg(r.overall_score_expected) AS expected
                   FROM docs d JOIN read_parquet('{_glob(store, rater_id)}') r USING (doc_id) GROUP BY 1)
        SELECT r.g, r.rated, r.parsed, r.overall, r.expected{', st.docs, st.student' if student_id else ''}
        FROM r {student} ORDER BY r.expected DESC NULLS LAST LIMIT {int(limit)}""").fetchall()
    keys = ["group", "rated", "parsed", "overall", "overall_expected"] + (["docs", "student_expected"] if student_id else [])
    return [dict(zip(keys, row)) for row in rows]
