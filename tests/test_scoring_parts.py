"""How a score task writes its parts (no Spark): on a size bound, on a time bound, and before it gives
up; and how resume takes limit-caused error rows back. A real tiny Llama, a real service over HTTP,
real Parquet parts in a real store."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")

import schemas  # noqa: E402
from pipeline.errors import UserError  # noqa: E402
from pipeline.scoring import core  # noqa: E402
from pipeline.scoring.client import ScoringClient  # noqa: E402
from pipeline.scoring.engines import load_engine  # noqa: E402
from pipeline.scoring.service import ServiceLimits, create_app  # noqa: E402
from pipeline.scoring.stage import drop_limit_errors, score_in_parts  # noqa: E402
from pipeline.store import Store  # noqa: E402
from tests.helpers import fail_scoring_after, make_tiny_model_dir, random_texts, running  # noqa: E402

REL = ("scores", "scorer=test")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return load_engine("torch", make_tiny_model_dir(tmp_path_factory.mktemp("tiny")), max_tokens=64,
                       num_threads=1)


@pytest.fixture
def docs():
    return [(f"doc-{i:02d}", t) for i, t in enumerate(random_texts(30, seed=4))]


def _writer(store: Store):
    """write_part for score_in_parts: one Parquet part per call, numbered; returns the part's size."""
    names = []

    def write_part(rows):
        names.append(f"part-{len(names):05d}.parquet")
        store.write_table(pa.Table.from_pylist(rows, schema=schemas.SCORES), schemas.SCORES, *REL, names[-1])
        return len(rows)
    return write_part


def _stored(store: Store) -> list[dict]:
    return [r for name in store.list_files(*REL, suffix=".parquet") for r in store.read_table(*REL, name).to_pylist()]


def _failing_service(engine, budget: dict, **limits):
    """The real service, which starts answering 500 once `budget["requests"]` /v1/score calls are spent,
    as if its GPU fell over; `budget["answered"]` collects the doc_ids it scored."""
    return fail_scoring_after(create_app(engine, ServiceLimits(**limits)), budget, status=500)


def test_parts_are_written_by_size(tmp_path, engine, docs):
    store = Store(tmp_path)
    sizes = list(score_in_parts(docs, engine.score, _writer(store), call_docs=4, docs_per_part=7,
                                flush_seconds=3600))
    assert sizes == [7, 7, 7, 7, 2]
    rows = _stored(store)
    assert [r["doc_id"] for r in rows] == [d for d, _ in docs]                  # each once, in order
    assert [r["nll_sum"] for r in rows[:4]] == [r["nll_sum"] for r in engine.score(docs[:4])]   # the engine's


def test_parts_are_written_on_time_too(tmp_path, engine, docs):
    """flush_seconds=0: every call's rows are written at once, however far from docs_per_part."""
    store = Store(tmp_path)
    sizes = list(score_in_parts(docs, engine.score, _writer(store), call_docs=4, docs_per_part=100,
                                flush_seconds=0))
    assert sizes == [4, 4, 4, 4, 4, 4, 4, 2]
    assert sorted(r["doc_id"] for r in _stored(store)) == [d for d, _ in docs]


def test_a_failing_task_writes_what_it_scored_and_resume_skips_exactly_that(tmp_path, engine, docs):
    """The service dies after 5 requests of 4 documents, two requests in flight at a time, inside one
    part of 100: the 20 documents it answered are written before the error is raised."""
    store = Store(tmp_path)
    budget = {"requests": 5, "answered": []}
    with running(_failing_service(engine, budget, max_documents_per_request=4)) as url:
        client = ScoringClient(url, max_concurrency=2, retries=1, backoff_s=0.01)
        with pytest.raises(UserError, match="500: engine crashed"):
            for _ in score_in_parts(docs, client.score, write := _writer(store), call_docs=8, docs_per_part=100,
                                    flush_seconds=3600):
                pass
        kept = [r["doc_id"] for r in _stored(store)]
        assert len(budget["answered"]) == 20 and sorted(kept) == sorted(budget["answered"])
        # Resume: score only the documents without a row; every document ends with exactly one.
        budget["requests"] = 1000
        todo = [d for d in docs if d[0] not in set(kept)]
        assert len(todo) == 10
        list(score_in_parts(todo, client.score, write, call_docs=8, docs_per_part=100, flush_seconds=3600))
    ids = [r["doc_id"] for r in _stored(store)]
    assert sorted(ids) == [d for d, _ in docs]


def test_limit_error_rows_are_taken_back_for_resume(tmp_path, engine, docs):
    """too_large rows (a service with a small per-document limit) leave their parts; other rows stay."""
    store = Store(tmp_path)
    small = [(d, t[:20]) for d, t in docs[:4]]                     # fit in 100 bytes
    big = [("big-0", "word " * 50), ("big-1", "word " * 60)]        # do not
    with running(create_app(engine, ServiceLimits(max_bytes_per_document=100))) as url:
        client = ScoringClient(url)
        write = _writer(store)
        list(score_in_parts(small[:2] + big[:1], client.score, write, 8, 100, 3600))   # part 0: mixed
        list(score_in_parts(big[1:], client.score, write, 8, 100, 3600))               # part 1: errors only
        list(score_in_parts(small[2:], client.score, write, 8, 100, 3600))             # part 2: clean
    errors = [r["doc_id"] for r in _stored(store) if core.is_limit_error(r["error"])]
    assert errors == ["big-0", "big-1"]
    assert drop_limit_errors(store, REL) == 2
    assert store.list_files(*REL, suffix=".parquet") == ["part-00000.parquet", "part-00002.parquet"]
    assert sorted(r["doc_id"] for r in _stored(store)) == sorted(d for d, _ in small)
    schemas.validate(pq.read_table(store.path(*REL, "part-00000.parquet")), schemas.SCORES)
    assert drop_limit_errors(store, REL) == 0
