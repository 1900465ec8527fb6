"""The pure core of perplexity scoring: window plans, tokenization, score rows, batching.

No torch, no HTTP: engines (`torch_engine`, the vLLM engine) tokenize, run a model to get the
negative log-likelihood (NLL, natural log) of every predicted token, and hand the arrays to the
functions here, which turn them into rows of `schemas.SCORES`.

Positions. An engine scores a *sequence* = [BOS] + document tokens (BOS only when the tokenizer
names one, see `encode`). Position p >= 1 is predicted from positions < p, so a sequence of L
tokens has L - 1 predictable positions; a document is `too_short` when it has none.

Huge documents. first_n scores only the first max_tokens tokens, so every engine, the service and its
client read a document only up to `char_limit` characters (`truncate_text`) before tokenizing it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

import schemas
from pipeline.scoring.identity import ScorerIdentity, validate_truncation


# --------------------------------------------------------------------------- windows

def plan_windows(n_tokens: int, max_tokens: int, mode: str = "first_n",
                 stride: int | None = None) -> list[tuple[int, int, int]]:
    """Windows (start, end, first_scored) over a sequence of `n_tokens` positions.

    A window feeds positions [start, end) to the model and sums the NLL of positions
    [first_scored, end), each predicted from everything in the window before it.

    first_n:  one window [0, min(n, max_tokens)), scoring 1 .. end-1; later tokens are dropped.
    sliding:  the strided-perplexity scheme: window k starts at k*stride and ends at
              min(k*stride + max_tokens, n); it scores only the positions the previous window did
              not reach (first_scored = previous end; 1 for the first window). Every position
              1..n-1 is scored exactly once, and each scored position after the first window has at
              least max_tokens - stride positions of context. Stops at the window that reaches n.
    Sequences with fewer than 2 positions have nothing to predict: [].
    """
    validate_truncation(max_tokens, mode, stride)
    if n_tokens < 2:
        return []
    if mode == "first_n":
        return [(0, min(n_tokens, max_tokens), 1)]
    windows, prev_end, start = [], 0, 0
    while prev_end < n_tokens:
        end = min(start + max_tokens, n_tokens)
        windows.append((start, end, max(prev_end, 1)))
        prev_end, start = end, start + stride
    return windows


# --------------------------------------------------------------------------- huge documents

# No token of a real vocabulary spans more characters than this in ordinary text (English runs at
# ~4 characters a token, code and URLs at 2-3). A first_n window of max_tokens tokens therefore ends
# long before max_tokens * CHARS_PER_TOKEN characters, and cutting the text there changes none of
# the tokens it scores, while a 50 MB one-line page costs a few kilobytes of tokenizing, not minutes.
CHARS_PER_TOKEN = 32
# Error rows caused by a limit (not by the document) start with this; resume scores them again.
LIMIT_ERROR = "too_large"


def char_limit(identity: ScorerIdentity) -> int | None:
    """Characters of a document this scorer reads: max_tokens * CHARS_PER_TOKEN for first_n,
    None (all) for sliding windows, which score every token."""
    return identity.max_tokens * CHARS_PER_TOKEN if identity.truncation == "first_n" else None


def truncate_text(text: str, identity: ScorerIdentity) -> str:
    """`text` cut to `char_limit(identity)` characters. Idempotent, so a client may cut before sending
    and the engine cut again: both read the same prefix, and give the same row."""
    limit = char_limit(identity)
    return text if limit is None or len(text) <= limit else text[:limit]


def is_limit_error(error: str | None) -> bool:
    """Whether a row's `error` was caused by a limit (and so may be scored later), not by the text."""
    return error is not None and error.startswith(LIMIT_ERROR)


# --------------------------------------------------------------------------- tokenization

@dataclass(frozen=True)
class EncodedDoc:
    """A document as the model sees it: `ids` = [bos] + document tokens (bos when has_bos).

    `char_ends[i]` is the end (exclusive, in characters of the text) of document token i, from
    the fast tokenizer's offsets mapping; it gives the bytes a truncated score covers.
    """
    ids: list[int]
    has_bos: bool
    char_ends: list[int]

    @property
    def n_tokens(self) -> int:
        """Tokens of the document itself, BOS not counted."""
        return len(self.ids) - int(self.has_bos)


def quiet_transformers() -> None:
    """No per-file progress bars or advisory warnings from transformers: the CLI shows progress."""
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_tokenizer(model_dir: Any) -> Any:
    """The model's fast tokenizer, quiet: documents are tokenized whole and windowed by
    `plan_windows`, so the tokenizer's own length limit (and its warning) does not apply."""
    from transformers import AutoTokenizer
    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.model_max_length = 10**12
    return tokenizer


def encode(tokenizer: Any, text: str) -> EncodedDoc:
    """Tokenize `text` with a HF fast tokenizer and prepend `tokenizer.bos_token_id` if it has one.

    Why a BOS: models are trained on documents that follow a separator token, and the first
    content position doubles as an attention sink; without one, every prediction in a short
    document is worse (SmolLM2 on a clear sentence: perplexity 25 without, 8.4 with its
    `<|endoftext|>`). With a BOS the first document token is predicted too, so the NLL sum covers
    every document byte. The tokenizer's own special-token template is bypassed
    (add_special_tokens=False) and BOS added here, so every engine builds the same ids.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = list(enc["input_ids"])
    char_ends = [int(end) for _, end in enc["offset_mapping"]]
    if bos is not None:
        return EncodedDoc([int(bos)] + ids, True, char_ends)
    return EncodedDoc(ids, False, char_ends)


def scored_bytes(text: str, doc: EncodedDoc, windows: Sequence[tuple[int, int, int]]) -> int:
    """UTF-8 bytes of the text the windows cover: the whole document when they reach its last
    token, else the prefix up to the end of the last covered token (first_n truncation)."""
    if not windows:
        return len(text.encode("utf-8"))
    last_pos = max(end for _, end, _ in windows) - 1          # sequence position
    last_tok = last_pos - int(doc.has_bos)                    # document token index
    if last_tok >= doc.n_tokens - 1:
        return len(text.encode("utf-8"))
    return len(text[: doc.char_ends[last_tok]].encode("utf-8"))


# --------------------------------------------------------------------------- rows

def score_row(doc_id: str, identity: ScorerIdentity, token_nlls: np.ndarray, n_tokens: int,
              n_bytes_scored: int) -> dict[str, Any]:
    """One `schemas.SCORES` row from the NLLs (nats) of the predicted tokens.

    nll_sum = sum_i nll_i over the n_predicted tokens,   nll_mean = nll_sum / n_predicted,
    perplexity = exp(nll_sum / n_predicted),              bits_per_byte = nll_sum / (ln 2 * n_bytes),
    nll_p50, nll_p90 = quantiles of nll_i (linear interpolation),
    surprise_fraction = #{i : nll_i > SURPRISE_NATS} / n_predicted.
    No predicted token gives an `error_row` (too_short) instead of an exception.
    """
    nlls = np.asarray(token_nlls, dtype=np.float64).ravel()
    if nlls.size == 0:
        return error_row(doc_id, identity, n_tokens, n_bytes_scored, f"too_short: {n_tokens} token(s)")
    nll_sum = float(nlls.sum())
    nll_mean = nll_sum / nlls.size
    with np.errstate(over="ignore"):
        perplexity = float(np.exp(nll_mean))
    p50, p90 = np.percentile(nlls, [50, 90])
    return {
        **_identity_columns(doc_id, identity),
        "n_tokens": int(n_tokens),
        "n_predicted": int(nlls.size),
        "n_bytes": int(n_bytes_scored),
        "nll_sum": nll_sum,
        "nll_mean": nll_mean,
        "perplexity": perplexity,
        "bits_per_byte": nll_sum / (math.log(2) * n_bytes_scored) if n_bytes_scored > 0 else None,
        "nll_p50": float(p50),
        "nll_p90": float(p90),
        "surprise_fraction": float(np.mean(nlls > schemas.SURPRISE_NATS)),
        "error": None,
    }


def error_row(doc_id: str, identity: ScorerIdentity, n_tokens: int, n_bytes: int,
              reason: str) -> dict[str, Any]:
    """A row for a document that could not be scored: scores null, `error` says why."""
    return {
        **_identity_columns(doc_id, identity),
        "n_tokens": int(n_tokens),
        "n_predicted": 0,
        "n_bytes": int(n_bytes),
        "nll_sum": None, "nll_mean": None, "perplexity": None, "bits_per_byte": None,
        "nll_p50": None, "nll_p90": None, "surprise_fraction": None,
        "error": reason,
    }


def _identity_columns(doc_id: str, identity: ScorerIdentity) -> dict[str, Any]:
    return {
        "doc_id": doc_id,
        "scorer_id": identity.scorer_id,
        "model_name": identity.model_name,
        "backend": identity.backend,
        "dtype": identity.dtype,
        "truncation": identity.truncation_label,
    }


# --------------------------------------------------------------------------- batching

def score_documents(docs: Sequence[tuple[str, str]], tokenizer: Any, identity: ScorerIdentity,
                    score_windows: Callable[[list[list[int]], list[int]], list[np.ndarray]]) -> list[dict[str, Any]]:
    """(doc_id, text) pairs -> one SCORES row each, in input order, for any engine.

    Each document is cut to `char_limit` characters (so a first_n row's n_tokens counts the tokens
    of at most that prefix), encoded (`encode`) and cut into windows (`plan_windows`); the engine's
    `score_windows(sequences, first_scored)` returns, per window, the NLLs of its positions from
    `first_scored` on. A document's NLLs are its windows' NLLs concatenated (every token once).
    """
    docs = [(doc_id, truncate_text(text, identity)) for doc_id, text in docs]
    encoded = [encode(tokenizer, text) for _, text in docs]
    plans = [plan_windows(len(e.ids), identity.max_tokens, identity.truncation, identity.stride) for e in encoded]
    windows = [(d, w) for d, plan in enumerate(plans) for w in plan]  # a document may own several (sliding)
    window_nlls = score_windows([encoded[d].ids[w[0]:w[1]] for d, w in windows], [w[2] - w[0] for _, w in windows])
    per_doc: list[list[np.ndarray]] = [[] for _ in docs]
    for (d, _), nll in zip(windows, window_nlls):  # windows are in document order
        per_doc[d].append(nll)
    rows = []
    for (doc_id, text), enc, plan, nlls in zip(docs, encoded, plans, per_doc):
        n_bytes = scored_bytes(text, enc, plan)
        if not plan:
            rows.append(error_row(doc_id, identity, enc.n_tokens, n_bytes, f"too_short: {enc.n_tokens} token(s)"))
        else:
            rows.append(score_row(doc_id, identity, np.concatenate(nlls), enc.n_tokens, n_bytes))
    return rows


def length_sorted_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Group indices into batches, longest first, each with max(length) * batch_size <= budget.

    Sorting by length keeps padding small (right-padding to the batch's longest); putting the
    longest first makes an out-of-memory budget fail on the first batch, not the last. A sequence
    longer than the budget gets a batch of its own.
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        # Sorted descending, so the batch's first member is its longest.
        if batches and lengths[batches[-1][0]] * (len(batches[-1]) + 1) <= token_budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches
