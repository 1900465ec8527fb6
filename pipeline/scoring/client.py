"""A client of the scoring service with an engine's shape: `.identity` and `.score(docs)`.

The Spark score job calls `score` from a plain synchronous function inside a task, so the client
uses threads and one `httpx.Client` (thread-safe, pooled connections); no event loop is involved.
A client pickles without its connections (they are reopened on first use), so it can travel in a
Spark closure.

Failures: connection errors, timeouts, 5xx and 429 are retried with exponential backoff (with a
little jitter, honouring Retry-After up to the backoff cap); any other 4xx is raised at once with
the service's message. Either way the caller gets one `UserError` naming the service.
"""
from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any

import httpx

from pipeline.errors import UserError
from pipeline.scoring import core
from pipeline.scoring.identity import ScorerIdentity

MAX_BACKOFF_S = 30.0


class ScoringClient:
    """Score documents through a `curate serve` service at `base_url`.

    `batch_size` documents go in one request, at most `max_concurrency` requests at a time; each
    request gets `timeout_s` and is tried up to `1 + retries` times, waiting
    backoff_s * 2**attempt (capped at 30 s) between tries.
    """

    def __init__(self, base_url: str, token: str | None = None, batch_size: int = 64,
                 max_concurrency: int = 4, timeout_s: float = 120, retries: int = 4,
                 backoff_s: float = 0.5):
        if batch_size < 1 or max_concurrency < 1 or retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise UserError("scoring client: batch_size and max_concurrency must be >= 1, retries >= 0, "
                            "timeout_s > 0 and backoff_s >= 0")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.batch_size, self.max_concurrency = batch_size, max_concurrency
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self._identity: ScorerIdentity | None = None
        self._max_doc_bytes: int | None = None   # the service's per-document limit, from /v1/models
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ engine interface

    @property
    def identity(self) -> ScorerIdentity:
        """The service's scorer identity (GET /v1/models), fetched once."""
        if self._identity is None:
            info = self._request("GET", "/v1/models")
            known = {f.name for f in fields(ScorerIdentity)}
            try:
                identity = ScorerIdentity(**{k: v for k, v in info.items() if k in known})
            except (TypeError, ValueError) as e:
                raise UserError(f"scoring service at {self.base_url} sent an identity this client "
                                f"cannot read ({e}); are both on the same pipeline version?") from e
            if info.get("scorer_id") not in (None, identity.scorer_id):
                raise UserError(f"scoring service at {self.base_url} names its scorer {info['scorer_id']} "
                                f"but this client computes {identity.scorer_id} from the same identity: "
                                "run the same pipeline version on both sides")
            self._max_doc_bytes = (info.get("limits") or {}).get("max_bytes_per_document")
            self._identity = identity
        return self._identity

    def score(self, docs: list[tuple[str, str]]) -> list[dict]:
        """(doc_id, text) pairs in, one `schemas.SCORES` row per document out, in input order.

        Once `identity` has been read (the score job always reads it first), a document over the
        service's byte limit is not sent: it gets an error row here, so one oversized page cannot
        fail a whole scoring job."""
        docs = list(docs)
        limit = self._max_doc_bytes
        sizes = [len(text.encode("utf-8", "surrogatepass")) for _, text in docs]
        if limit and any(n > limit for n in sizes):
            sendable = [d for d, n in zip(docs, sizes) if n <= limit]
            scored = iter(self.score(sendable)) if sendable else iter(())
            return [next(scored) if n <= limit else
                    core.error_row(doc_id, self.identity, 0, n, f"too_large: {n} bytes > the service's limit of {limit}")
                    for (doc_id, _), n in zip(docs, sizes)]
        batches = [docs[i:i + self.batch_size] for i in range(0, len(docs), self.batch_size)]
        if len(batches) <= 1 or self.max_concurrency == 1:
            return [row for batch in batches for row in self._score_batch(batch)]
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(batches)),
                                  thread_name_prefix="curate-score-client")
        try:
            futures = [pool.submit(self._score_batch, batch) for batch in batches]
            return [row for future in futures for row in future.result()]
        finally:
            # On the first failure, drop the batches not yet sent instead of scoring them in vain.
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def __enter__(self) -> "ScoringClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_http"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ internals

    def _score_batch(self, batch: list[tuple[str, str]]) -> list[dict]:
        body = {"documents": [{"doc_id": d, "text": t} for d, t in batch]}
        rows = self._request("POST", "/v1/score", json=body)["rows"]
        if [r["doc_id"] for r in rows] != [d for d, _ in batch]:
            raise UserError(f"scoring service at {self.base_url} answered {len(rows)} rows for "
                            f"{len(batch)} documents, not one per document in order")
        return rows

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
                self._http = httpx.Client(
                    base_url=self.base_url, headers=headers, timeout=self.timeout_s,
                    limits=httpx.Limits(max_connections=self.max_concurrency,
                                        max_keepalive_connections=self.max_concurrency))
            return self._http

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The response's JSON, after up to 1 + retries attempts; UserError otherwise."""
        attempts = 1 + self.retries
        last = ""
        for attempt in range(attempts):
            retry_after = None
            try:
                response = self._client().request(method, path, **kwargs)
            except httpx.TransportError as e:   # refused, reset, timed out, DNS, ...
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            else:
                if response.status_code < 400:
                    return response.json()
                message = _error_message(response)
                if response.status_code != 429 and response.status_code < 500:
                    hint = " (check the token)" if response.status_code in (401, 403) else ""
                    raise UserError(f"scoring service at {self.base_url} rejected {method} {path} "
                                    f"with {response.status_code}{hint}: {message}")
                last = f"HTTP {response.status_code}: {message}"
                retry_after = _retry_after(response)
            if attempt + 1 < attempts:
                time.sleep(self._backoff(attempt, retry_after))
        raise UserError(f"scoring service at {self.base_url} unreachable after {attempts} attempts: {last}")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        wait = self.backoff_s * 2 ** attempt * (1 + 0.25 * random.random())
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, MAX_BACKOFF_S)


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:500]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None
