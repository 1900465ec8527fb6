import random
import unicodedata

import pytest

from pipeline import hashing
from pipeline.ingest.documents import (IngestSettings, LanguageIdentifier, normalize_text, prepare_document,
                                       url_host_and_domain)
from pipeline.io import RawDoc, Rejected


def test_normalize_text_nfc_controls_and_line_endings():
    decomposed = "Cafe\u0301 au lait"  # e + combining acute
    assert normalize_text(decomposed) == "Café au lait" == unicodedata.normalize("NFC", decomposed)
    assert normalize_text("a\r\nb\rc\x00d\x1be\x7f\x85f\tg\n") == "a\nb\ncdef\tg"
    assert normalize_text("  \n x \n ") == "x"


def test_normalize_is_idempotent_and_removes_every_cc_but_tab_newline():
    rng = random.Random(0)
    for _ in range(200):
        s = "".join(chr(rng.choice([rng.randrange(0, 0x250), rng.randrange(0x300, 0x370)])) for _ in range(40))
        n = normalize_text(s)
        assert normalize_text(n) == n
        assert all(unicodedata.category(ch) != "Cc" or ch in "\t\n" for ch in n)


def test_doc_id_is_stable_hash_of_normalised_text():
    assert hashing.doc_id("hello") == hashing.doc_id("hello")
    assert hashing.doc_id("hello") != hashing.doc_id("hello!")
    assert len(hashing.doc_id("x")) == 32 and int(hashing.doc_id("x"), 16) >= 0
    assert hashing.doc_id(normalize_text("Cafe\u0301\r\n")) == hashing.doc_id(normalize_text("Café"))


@pytest.mark.parametrize("url,host,domain", [
    ("https://docs.python.org/3/index.html", "docs.python.org", "python.org"),
    ("http://news.bbc.co.uk/a", "news.bbc.co.uk", "bbc.co.uk"),
    ("http://127.0.0.1:8080/x", "127.0.0.1", "127.0.0.1"),
    (None, None, None),
    ("not a url", None, None),
    ("http://localhost:8000/x", "localhost", "localhost"),       # no public suffix: the host is the domain
    ("https://wiki.corp.internal/page", "wiki.corp.internal", "wiki.corp.internal"),
])
def test_url_host_and_registered_domain(url, host, domain):
    assert url_host_and_domain(url) == (host, domain)


def test_language_identifier_on_real_sentences():
    lid = LanguageIdentifier()
    texts = ["The committee will publish its report on the state of the economy next week.",
             "Le gouvernement a annoncé hier une nouvelle réforme des retraites.",
             "Die Bundesregierung hat gestern ein neues Gesetz zur Energiepolitik beschlossen.",
             "El presidente del gobierno anunció ayer nuevas medidas económicas.\nSegunda línea."]
    result = lid.predict(texts)
    assert [lang for lang, _ in result] == ["en", "fr", "de", "es"]
    assert all(0.5 < p <= 1.0 for _, p in result)


def test_prepare_document_rows_and_reasons():
    raw = RawDoc(text="  Hello\r\nworld  ", source_file="/f.jsonl", source_offset=3, source_format="jsonl",
                 url="https://a.example.co.uk/x", source_id="7", metadata={"k": 1})
    row = prepare_document(raw, IngestSettings())
    assert row["text"] == "Hello\nworld" and row["n_bytes"] == 11 and row["n_chars"] == 11
    assert row["domain"] == "example.co.uk" and row["metadata"] == '{"k": 1}' and row["doc_id"] == hashing.doc_id("Hello\nworld")
    cases = [(RawDoc("\x00 \n", "/f", 1, "jsonl"), IngestSettings(), "empty_text"),
             (RawDoc("short", "/f", 1, "jsonl"), IngestSettings(min_chars=10), "too_short"),
             (RawDoc("x" * 20, "/f", 1, "jsonl"), IngestSettings(max_chars=10), "too_long"),
             (RawDoc("bad \ud800 surrogate", "/f", 1, "jsonl"), IngestSettings(), "invalid_utf8")]
    for raw, settings, reason in cases:
        out = prepare_document(raw, settings)
        assert isinstance(out, Rejected) and out.reason == reason and out.source_offset == 1


def test_settings_key_changes_with_settings():
    assert IngestSettings().key == IngestSettings().key
    assert IngestSettings(min_chars=5).key != IngestSettings().key
