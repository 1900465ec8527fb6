"""Plain text out of web pages, with the standard library only.

`html_to_text` keeps the visible text of a page and turns block elements into line breaks, so
paragraphs stay paragraphs. `decode_payload` turns the bytes of an HTTP body into a string using the
charset the server declared. Neither tries to be a boilerplate remover (trafilatura, resiliparse):
this is the baseline that keeps every visible word, and later stages decide what to keep.
"""
from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser

# Content that is never shown as text on the page.
SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "head", "svg", "iframe", "object"})

# Elements that make a paragraph of their own: a blank line before and after them.
PARAGRAPH_TAGS = frozenset({
    "p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "table", "section", "article", "header",
    "footer", "nav", "aside", "main", "blockquote", "pre", "ul", "ol", "dl", "form", "fieldset",
    "figure", "figcaption", "address", "details", "summary", "hr", "title", "body",
})

# Elements that start a new line but not a new paragraph (list items stay on consecutive lines).
LINE_TAGS = frozenset({"br", "li", "tr", "dt", "dd", "option", "caption"})

# Table cells sit side by side: a space between them keeps their words apart.
CELL_TAGS = frozenset({"td", "th"})


class _TextExtractor(HTMLParser):
    """Collects the visible text of a page as a list of pieces."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self.skip_depth = 0  # > 0 while inside a SKIPPED_TAGS element

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "body":
            # `</head>` may be omitted in valid HTML; the body always ends the head.
            self.skip_depth = 0
        if tag in SKIPPED_TAGS:
            self.skip_depth += 1
        self._break_for(tag)

    def handle_startendtag(self, tag: str, attrs) -> None:
        # `<br/>`, `<script src=.../>`: a self-closed element has no content to skip.
        self._break_for(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
        if tag in PARAGRAPH_TAGS:
            self.pieces.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            # Line breaks in the source are just whitespace in HTML; only tags make lines.
            self.pieces.append(re.sub(r"\s+", " ", data))

    def _break_for(self, tag: str) -> None:
        if tag in PARAGRAPH_TAGS:
            self.pieces.append("\n\n")  # stacked breaks (<div><p>) collapse to one blank line later
        elif tag in LINE_TAGS:
            self.pieces.append("\n")
        elif tag in CELL_TAGS:
            self.pieces.append(" ")


def html_to_text(html: str) -> str:
    """The visible text of an HTML document, one line per block element.

    Drops script/style/noscript/template/head content, breaks lines at block elements, collapses
    runs of spaces within lines, collapses 3+ newlines into one blank line, and strips the ends.
    Never raises on malformed markup: html.parser is lenient and unclosed tags are fine.
    """
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.pieces)
    text = re.sub(r"[^\S\n]+", " ", text)          # any whitespace but newline -> one space (incl. nbsp)
    text = re.sub(r" *\n *", "\n", text)           # no spaces at line ends
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def charset_from_content_type(content_type: str | None) -> str | None:
    """The charset parameter of a Content-Type header (`text/html; charset=ISO-8859-1`), if Python knows it."""
    if not content_type:
        return None
    match = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", content_type, flags=re.IGNORECASE)
    if not match:
        return None
    try:
        return codecs.lookup(match.group(1)).name
    except LookupError:
        return None  # a made-up charset name: fall back as if none was given


def decode_payload(body: bytes, content_type: str | None = None) -> str:
    """Decode an HTTP body: the declared charset, else UTF-8, else cp1252, else UTF-8 with replacements.

    Order and why: a declared charset that decodes cleanly is the best evidence; undeclared pages
    are mostly UTF-8 today; a page that is not valid UTF-8 is most often Windows-1252 (which is
    also what browsers use for ISO-8859-1). cp1252 leaves five bytes undefined, so it can still
    fail, and then undecodable bytes become U+FFFD rather than losing the page. `<meta charset>`
    inside the page is not consulted: keeping it simple. A UTF-8 byte-order mark outranks the
    declared charset, as it does in browsers (a server that says latin-1 about a UTF-8 file).
    """
    if body.startswith(codecs.BOM_UTF8):
        return body[len(codecs.BOM_UTF8):].decode("utf-8", errors="replace")
    for encoding in (charset_from_content_type(content_type), "utf-8", "cp1252"):
        if encoding is None:
            continue
        try:
            return body.decode(encoding).lstrip("\ufeff")
        except UnicodeDecodeError:
            continue
    return body.decode("utf-8", errors="replace").lstrip("\ufeff")
