"""The scoring service: one engine behind a small FastAPI app (`curate serve`).

Endpoints
  POST /v1/score   {"documents": [{"doc_id", "text"}, ...]} -> {"scorer_id", "rows": [SCORES rows], "elapsed_s"}
  POST /v1/rate    the same request -> {"rater_id", "rows": [RATINGS rows], "elapsed_s"}: the rater's answer
                   generated on the same model (constrained or greedy decoding), when served with one
  GET  /v1/models  the scorer identity (ScorerIdentity.to_dict()), the limits, and "rater": the rater's
                   identity (RaterIdentity.to_dict()) or null.
  GET  /healthz    {"status": "ok"}; never needs the token, never waits for the engine.
  GET  /metrics    Prometheus text format (prometheus_client; see `Metrics`).

A first_n scorer reads a document only up to `core.char_limit` characters, so the service cuts
every text there before checking it, as its engine would: a huge page gets the row the in-process
engine gives it, not a rejection.

Errors are JSON `{"detail": message}` (plus `"limit": name` when a ServiceLimits field was hit):
413 for a body, document count or document size (after that cut) over its limit, 422 for a body
that is not a valid request, 400 for an empty document list, 401 for a missing or wrong bearer
token, 500 when the engine fails.

The engine is not thread-safe and is slow: it runs on one dedicated worker thread, so calls are
serialised and the event loop (and /healthz) stays responsive while it works.
"""

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.scoring import core
from pipeline.rating.rater import cut_text
from pipeline.scoring.engines import Engine, load_engine

log = logging.getLogger("curate.service")

UNAUTHENTICATED_PATHS = frozenset({"/healthz"})
WORK_PATHS = frozenset({"/v1/score", "/v1/rate"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class ServiceLimits:
    """What one /v1/score request may carry. The body limit is checked while reading, before
    parsing, so an oversized request costs no more than max_request_bytes of memory."""
    max_documents_per_request: int = 256
    max_bytes_per_document: int = 1_000_000      # UTF-8 bytes of the text a document is read to
    max_request_bytes: int = 64 * 1024 * 1024    # the raw JSON body

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise UserError(f"service limit {name} must be a positive integer, got {value!r}")


class RequestRejected(Exception):
    """A request the service answers with `status` and a JSON message, naming `limit` if one was hit."""

    def __init__(self, status: int, message: str, limit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.limit = status, message, limit

    def response(self):
        from fastapi.responses import JSONResponse
        body = {"detail": self.message, **({"limit": self.limit} if self.limit else {})}
        return JSONResponse(body, status_code=self.status)


# --------------------------------------------------------------------------- metrics

class Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per app, so two services in one
    process never share counts), with the process and platform metrics of prometheus_client.

    curate_documents_total               documents scored (rows returned, error rows included)
    curate_rated_documents_total         documents rated (rows returned, unparsed answers included)
    curate_tokens_total                  tokens whose NLL was computed (sum of n_predicted)
    curate_requests_total{status}        /v1/score and /v1/rate requests by HTTP status (401 included)
    curate_request_errors_total          such requests answered with a status >= 400
    curate_unauthorized_requests_total   requests to any path refused for a missing or wrong token
    curate_request_seconds               their latency, histogram (queueing for the engine included)
    curate_requests_in_flight            such requests being read, queued or worked on now
    """

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector,
                                       ProcessCollector)
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.documents = Counter("curate_documents", "Documents scored (error rows included).", registry=registry)
        self.tokens = Counter("curate_tokens", "Tokens whose NLL was computed.", registry=registry)
        self.rated = Counter("curate_rated_documents", "Documents rated (unparsed answers included).",
                             registry=registry)
        self.requests = Counter("curate_requests", "Scoring requests by HTTP status.", ["status"], registry=registry)
        self.errors = Counter("curate_request_errors", "Scoring requests answered with an error.",
                              registry=registry)
        self.unauthorized = Counter("curate_unauthorized_requests", "Requests refused for a missing or wrong "
                                    "bearer token.", registry=registry)
        self.in_flight = Gauge("curate_requests_in_flight", "Scoring requests in progress.", registry=registry)
        self.latency = Histogram("curate_request_seconds", "Scoring request latency in seconds.",
                                 buckets=buckets, registry=registry)

    def add_rows(self, rows: list[dict]) -> None:
        self.documents.inc(len(rows))
        self.tokens.inc(sum(int(r.get("n_predicted") or 0) for r in rows))

    def end_request(self, status: int, seconds: float) -> None:
        self.requests.labels(status=str(status)).inc()
        if status >= 400:
            self.errors.inc()
        self.latency.observe(seconds)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition a scraper's Accept header asks for (Prometheus text by default, or
        OpenMetrics), and its content type."""
        from prometheus_client.exposition import choose_encoder
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


# --------------------------------------------------------------------------- the app

def create_app(engine: Engine, limits: ServiceLimits | None = None, token: str | None = None, rater=None):
    """A FastAPI app serving `engine` (and `rater`, a rater on the same model, at /v1/rate). `token`:
    when set, every path but /healthz needs `Authorization: Bearer <token>`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from pydantic import BaseModel, ConfigDict, ValidationError
    from starlette.concurrency import run_in_threadpool

    limits = limits or ServiceLimits()
    metrics = Metrics()
    # One thread owns the engine: calls are serialised and never block the event loop.
    engine_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="curate-engine")
    identity = engine.identity

    class Document(BaseModel):
        model_config = ConfigDict(extra="forbid")
        doc_id: str
        text: str

    class ScoreRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        documents: list[Document]

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        engine_thread.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="curate scoring service", version="1", lifespan=lifespan,
                  description=__doc__.split("\n\n")[0])
    app.state.engine, app.state.limits, app.state.metrics = engine, limits, metrics

    async def authenticate(request: Request, call_next):
        if token is not None and request.url.path not in UNAUTHENTICATED_PATHS:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                metrics.unauthorized.inc()
                return JSONResponse({"detail": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.middleware("http")
    async def measure_then_authenticate(request: Request, call_next):
        # Measured before authentication, so refused scoring requests count among the requests too.
        if request.url.path not in WORK_PATHS:
            return await authenticate(request, call_next)
        started = time.perf_counter()
        metrics.in_flight.inc()
        status = 500
        try:
            response = await authenticate(request, call_next)
            status = response.status_code
            return response
        finally:
            metrics.in_flight.dec()
            metrics.end_request(status, time.perf_counter() - started)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict:
        return {**identity.to_dict(), "limits": asdict(limits),
                "rater": rater.identity.to_dict() if rater is not None else None}

    @app.get("/metrics")
    async def prometheus_metrics(request: Request) -> Response:
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    async def documents_of(request: Request, cut) -> list[tuple[str, str]]:
        body = await _read_body(request, limits.max_request_bytes)
        try:
            parsed = await run_in_threadpool(ScoreRequest.model_validate_json, body)
        except ValidationError as e:
            raise RequestRejected(422, f"not a valid request: {_first_errors(e)}") from e
        # Cut as the engine will (it cuts again, to the same text): limits apply to what is read.
        docs = [(d.doc_id, cut(d.text)) for d in parsed.documents]
        _check_documents(docs, limits)
        return docs

    async def on_engine_thread(work, docs: list[tuple[str, str]]) -> tuple[list[dict], float]:
        try:
            return await asyncio.get_running_loop().run_in_executor(engine_thread, _timed, work, docs)
        except Exception as e:   # the engine's own failure: the client may retry (5xx)
            log.exception("engine failed on a batch of %d documents", len(docs))
            raise RequestRejected(500, f"engine failed: {type(e).__name__}: {e}") from e

    def rows_response(key: str, value: str, rows: list[dict], elapsed: float) -> Response:
        # allow_nan: an overflowing perplexity is inf; Python's json reads it back exactly.
        return Response(json.dumps({key: value, "rows": rows, "elapsed_s": elapsed}, allow_nan=True,
                                   separators=(",", ":")), media_type="application/json")

    @app.post("/v1/score")
    async def score(request: Request) -> Response:
        try:
            docs = await documents_of(request, lambda text: core.truncate_text(text, identity))
            rows, elapsed = await on_engine_thread(engine.score, docs)
        except RequestRejected as e:
            return e.response()
        metrics.add_rows(rows)
        return rows_response("scorer_id", identity.scorer_id, rows, elapsed)

    @app.post("/v1/rate")
    async def rate(request: Request) -> Response:
        try:
            if rater is None:
                raise RequestRejected(404, "this service has no rater: start it with `curate serve --rater`")
            docs = await documents_of(request, lambda text: cut_text(text, rater.identity.text_tokens))
            rows, elapsed = await on_engine_thread(rater.rate, docs)
        except RequestRejected as e:
            return e.response()
        metrics.rated.inc(len(rows))
        return rows_response("rater_id", rater.identity.rater_id, rows, elapsed)

    return app


async def _read_body(request, max_bytes: int) -> bytes:
    """The body, refused (413) as soon as it is known to pass `max_bytes`."""
    too_big = RequestRejected(413, f"request body exceeds max_request_bytes ({max_bytes} bytes); "
                                   "send fewer documents per request", "max_request_bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _check_documents(docs: list[tuple[str, str]], limits: ServiceLimits) -> None:
    if not docs:
        raise RequestRejected(400, "no documents: send at least one in \"documents\"")
    if len(docs) > limits.max_documents_per_request:
        raise RequestRejected(413, f"{len(docs)} documents exceed max_documents_per_request "
                                   f"({limits.max_documents_per_request}); send smaller batches",
                              "max_documents_per_request")
    for doc_id, text in docs:
        # UTF-8 is at most 4 bytes a character: most texts are settled without encoding them.
        if len(text) * 4 > limits.max_bytes_per_document:
            n_bytes = len(text.encode("utf-8", "surrogatepass"))
            if n_bytes > limits.max_bytes_per_document:
                raise RequestRejected(413, f"document {doc_id!r} has {n_bytes} bytes, over "
                                           f"max_bytes_per_document ({limits.max_bytes_per_document})",
                                      "max_bytes_per_document")


def _timed(work, docs: list[tuple[str, str]]) -> tuple[list[dict], float]:
    """`work(docs)` (score or rate) on the engine thread, and how long it took."""
    started = time.perf_counter()
    rows = work(docs)
    return rows, time.perf_counter() - started


def _first_errors(error, n: int = 3) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()[:n]]
    more = error.error_count() - n
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


# --------------------------------------------------------------------------- serve

def serve(engine_name: str, model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
          token: str | None = None, limits: ServiceLimits | None = None,
          engine_options: dict[str, Any] | None = None, log_level: str = "info",
          rater_options: dict[str, Any] | None = None) -> None:
    """Load the engine once and serve it with uvicorn until interrupted (`curate serve`); with
    `rater_options` (decoding, text_tokens, token_budget) a rater on the same loaded model too."""
    import uvicorn

    _check_port_free(host, port)   # fail before minutes of model loading, not after
    if token is None and not _is_loopback(host):
        log.warning("serving on %s without a token: anyone who can reach it can use the engine", host)
    engine = load_engine(engine_name, model_dir, **(engine_options or {}))
    rater = None
    if rater_options is not None:
        from pipeline.rating.engines import rater_on
        rater = rater_on(engine, model_dir, **rater_options)
    app = create_app(engine, limits or ServiceLimits(), token, rater=rater)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def _check_port_free(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"cannot serve on host {host!r}: {e}") from e
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); "
                            "choose another --port or stop what uses it") from e


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
