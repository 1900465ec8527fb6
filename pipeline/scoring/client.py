"""A client of the scoring service with an engine's shape: `.identity` and `.score(docs)`.

The Spark score job calls `score` from a plain synchronous function inside a task, so the client
uses threads and one `httpx.Client` (thread-safe, pooled connections); no event loop is involved.
A client pickles without its connections (they are reopened on first use), so it can travel in a
Spark closure.

Requests fit the limits the service advertises in /v1/models: documents are cut to the scorer's
`core.char_limit` (as its engine would cut them), at most `max_documents_per_request` go in one
request, and bodies stay under `max_request_bytes`. A document that still cannot be sent gets a
`too_large` error row, which a later run scores again (`core.is_limit_error`).

Failures: connection errors, timeouts, 5xx and 429 are retried with exponential backoff (with a
little jitter, honouring Retry-After up to the backoff cap); any other 4xx is raised at once with
the service's message. Either way the caller gets one `UserError` naming the service: a
`ScoringInterruptedError` carrying the rows of the requests that did succeed.
"""
from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any

import httpx

from pipeline.errors import UserError
from pipeline.scoring import core
from pipeline.scoring.engines import ScoringInterruptedError
from pipeline.scoring.identity import ScorerIdentity

MAX_BACKOFF_S = 30.0
DEFAULT_REQUEST_DOCS = 64
_BODY_FRAME = len(b'{"documents":[]}')


class ScoringClient:
    """Score documents through a `curate serve` service at `base_url`.

    `batch_size` documents (default 64, at most the service's max_documents_per_request) go in one
    request, at most `max_concurrency` requests at a time; each request gets `timeout_s` and is tried
    up to `1 + retries` times, waiting backoff_s * 2**attempt (capped at 30 s) between tries.
    """

    PATH = "/v1/score"

    def __init__(self, base_url: str, token: str | None = None, batch_size: int | None = None,
                 max_concurrency: int = 4, timeout_s: float = 120, retries: int = 4,
                 backoff_s: float = 0.5):
        if (batch_size is not None and batch_size < 1) or max_concurrency < 1 or retries < 0 or timeout_s <= 0 \
                or backoff_s < 0:
            raise UserError("scoring client: batch_size and max_concurrency must be >= 1, retries >= 0, "
                            "timeout_s > 0 and backoff_s >= 0")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.batch_size, self.max_concurrency = batch_size, max_concurrency
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self._identity: ScorerIdentity | None = None
        self._limits: dict[str, int] = {}   # the service's ServiceLimits, from /v1/models
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ engine interface

    @property
    def identity(self) -> ScorerIdentity:
        """The service's scorer identity (GET /v1/models), fetched once."""
        if self._identity is None:
            info = self._request("GET", "/v1/models")
            identity = self._read_identity(info)
            self._limits = info.get("limits") or {}
            self._identity = identity
        return self._identity

    def _read_identity(self, info: dict) -> ScorerIdentity:
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
        return identity

    def _cut(self, text: str) -> str:
        """The text as the engine reads it (cut to the scorer's character limit)."""
        return core.truncate_text(text, self.identity)

    def _limit_row(self, doc_id: str, n_bytes: int, reason: str) -> dict:
        return core.error_row(doc_id, self.identity, 0, n_bytes, reason)

    @property
    def request_docs(self) -> int:
        """Documents per request: batch_size (default 64), at most the service's advertised limit."""
        self.identity   # reads the limits too
        limit = self._limits.get("max_documents_per_request")
        wanted = self.batch_size or DEFAULT_REQUEST_DOCS
        return min(wanted, limit) if limit else wanted

    def score(self, docs: list[tuple[str, str]]) -> list[dict]:
        """(doc_id, text) pairs in, one `schemas.SCORES` row per document out, in input order."""
        return self._process(docs)

    def _process(self, docs: list[tuple[str, str]]) -> list[dict]:
        """One row per document, in input order, through `PATH`.

        A document the service's limits leave no way to send gets a `too_large` error row here, so
        one oversized page cannot fail a whole scoring job. On a failure, the rows of the requests
        that succeeded travel in the ScoringInterruptedError."""
        docs = list(docs)
        rows: list[dict | None] = [None] * len(docs)
        batches = self._batches(docs, rows)
        try:
            if len(batches) <= 1 or self.max_concurrency == 1:
                for indices, body in batches:
                    self._score_batch(docs, indices, body, rows)
            else:
                pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(batches)),
                                          thread_name_prefix="curate-score-client")
                try:
                    for future in [pool.submit(self._score_batch, docs, indices, body, rows)
                                   for indices, body in batches]:
                        future.result()
                finally:
                    # On the first failure, drop the batches not yet sent instead of scoring them in
                    # vain; the requests in flight finish first, and their rows are kept.
                    pool.shutdown(wait=True, cancel_futures=True)
        except UserError as e:
            raise ScoringInterruptedError(str(e), [r for r in rows if r is not None]) from e
        return rows   # type: ignore[return-value]  (every slot is filled)

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

    def _batches(self, docs: list[tuple[str, str]], rows: list[dict | None]) -> list[tuple[list[int], bytes]]:
        """(document indices, request body) per request, in order, within the service's limits; a
        document that fits no request gets its too_large row in `rows` instead."""
        max_docs = self.request_docs
        max_doc_bytes = self._limits.get("max_bytes_per_document")
        max_body = self._limits.get("max_request_bytes")
        batches: list[tuple[list[int], list[bytes]]] = []
        size = 0
        for i, (doc_id, text) in enumerate(docs):
            text = self._cut(text)      # the engine reads no more than this
            piece = json.dumps({"doc_id": doc_id, "text": text}, separators=(",", ":")).encode()
            if max_doc_bytes and len(text) * 4 > max_doc_bytes:   # UTF-8: at most 4 bytes a character
                n_bytes = len(text.encode("utf-8", "surrogatepass"))
                if n_bytes > max_doc_bytes:
                    rows[i] = self._limit_row(doc_id, n_bytes, f"{core.LIMIT_ERROR}: {n_bytes} bytes > "
                                              f"the service's max_bytes_per_document ({max_doc_bytes})")
                    continue
            if max_body and _BODY_FRAME + len(piece) > max_body:
                rows[i] = self._limit_row(doc_id, len(text.encode("utf-8", "surrogatepass")),
                                          f"{core.LIMIT_ERROR}: a request of this document alone is over the "
                                          f"service's max_request_bytes ({max_body})")
                continue
            if (not batches or len(batches[-1][0]) == max_docs
                    or (max_body and size + 1 + len(piece) > max_body)):
                batches.append(([], []))
                size = _BODY_FRAME - 1     # the first piece needs no comma
            batches[-1][0].append(i)
            batches[-1][1].append(piece)
            size += 1 + len(piece)
        return [(indices, b'{"documents":[' + b",".join(pieces) + b"]}") for indices, pieces in batches]

    def _score_batch(self, docs: list[tuple[str, str]], indices: list[int], body: bytes,
                     rows: list[dict | None]) -> None:
        """POST one request (the documents at `indices`) and put its rows there in `rows`."""
        answer = self._request("POST", self.PATH, content=body, headers={"Content-Type": "application/json"})
        batch_rows = answer["rows"]
        if [r["doc_id"] for r in batch_rows] != [docs[i][0] for i in indices]:
            raise UserError(f"scoring service at {self.base_url} answered {len(batch_rows)} rows for "
                            f"{len(indices)} documents, not one per document in order")
        for i, row in zip(indices, batch_rows):
            rows[i] = row

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
