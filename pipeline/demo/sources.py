"""Real text already on any machine with Python installed, one function per source: sections of the
Python documentation topics (`pydoc_data.topics`), long descriptions (READMEs) of the installed
packages, licence files of the installed packages (and /usr/share/common-licenses where it exists),
and docstrings of standard-library modules, functions and classes. Each returns documents
{text, url, source} whose URL host names the source.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import json
import re
import subprocess
import sys
from functools import lru_cache, wraps
from pathlib import Path
from urllib.parse import quote

from pipeline.errors import UserError

SECTION_MIN_CHARS = 800
SECTION_MAX_CHARS = 3000
MAX_SECTIONS_PER_README = 8                 # so that one huge README does not dominate pypi.org
MAX_LICENSE_SECTIONS_PER_PACKAGE = 4        # some wheels bundle hundreds of third-party licences
MIN_README_CHARS = 500
MIN_DOCSTRING_CHARS = 300
MIN_LICENSE_CHARS = 300

STDLIB_MODULES = [
    "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "codecs", "collections",
    "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "doctest", "email.message", "enum", "fnmatch", "fractions", "ftplib",
    "functools", "gettext", "glob", "gzip", "hashlib", "heapq", "http.client", "inspect",
    "ipaddress", "itertools", "json", "logging", "operator", "optparse", "os", "pathlib", "pickle",
    "pprint", "queue", "random", "re", "sched", "secrets", "shlex", "shutil", "smtplib", "socket",
    "sqlite3", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "timeit", "typing", "unittest", "urllib.parse", "uuid", "weakref",
    "xml.etree.ElementTree", "zipfile",
]
COMMON_LICENSES_DIR = Path("/usr/share/common-licenses")
LICENSE_PREFIXES = ("LICENSE", "LICENCE", "COPYING")

# Hosts, one per source.
HOST_PYDOC = "docs.python.org"
HOST_PYPI = "pypi.org"
HOST_OSI = "opensource.org"
HOST_LICENSES = "licenses.example.org"
HOST_STDLIB = "stdlib-docs.example.org"


def make_doc(text: str, url: str, source: str) -> dict:
    return {"text": text, "url": url, "source": source}



def _split_sections(text: str, max_chars: int = SECTION_MAX_CHARS, min_chars: int = SECTION_MIN_CHARS) -> list[str]:
    """Split a long text at paragraph boundaries into sections of about min..max characters."""
    text = text.strip()
    if len(text) <= max_chars:
        return [text] if text else []
    paragraphs: list[str] = []
    for p in re.split(r"\n\s*\n", text):
        p = p.strip("\n")
        if not p.strip():
            continue
        if len(p) <= max_chars:
            paragraphs.append(p)
            continue
        # a very long paragraph (a code listing, a table): cut it at line boundaries
        chunk = ""
        for line in p.split("\n"):
            if chunk and len(chunk) + len(line) + 1 > max_chars:
                paragraphs.append(chunk)
                chunk = ""
            chunk = f"{chunk}\n{line}" if chunk else line
        if chunk.strip():
            paragraphs.append(chunk)
    sections: list[str] = []
    current = ""
    for p in paragraphs:
        if current and len(current) + len(p) + 2 > max_chars:
            sections.append(current)
            current = ""
        current = f"{current}\n\n{p}" if current else p
    if current:
        if sections and len(current) < min_chars and len(sections[-1]) + len(current) + 2 <= max_chars * 1.5:
            sections[-1] = f"{sections[-1]}\n\n{current}"
        else:
            sections.append(current)
    return sections



def _cached(fn):
    """Scan the installation once per process; callers get fresh copies of the records."""
    scan = lru_cache(maxsize=1)(lambda: tuple(fn()))

    @wraps(fn)
    def wrapper() -> list[dict]:
        return [dict(d) for d in scan()]
    return wrapper



@_cached
def python_docs() -> list[dict]:
    """Sections of the Python documentation topics shipped with the interpreter."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return []
    docs = []
    for topic in sorted(topics):
        for k, section in enumerate(_split_sections(topics[topic])):
            fragment = f"#part-{k + 1}" if k else ""
            docs.append(make_doc(section, f"https://{HOST_PYDOC}/3/reference/{quote(topic)}.html{fragment}",
                             "python_docs"))
    return docs


@lru_cache(maxsize=1)
def _distributions() -> tuple[tuple[str, importlib.metadata.Distribution], ...]:
    """(normalised name, distribution) of the installed packages, one per name, sorted by name."""
    by_name: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        try:
            name = dist.metadata["Name"]
        except Exception:
            continue
        if name:
            by_name.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist)
    return tuple((k, by_name[k]) for k in sorted(by_name))


def pypi_readmes() -> list[dict]:
    """Long descriptions (READMEs) of the installed packages, split into sections."""
    docs = []
    for name, dist in _distributions():
        try:
            description = dist.metadata.get("Description") or dist.metadata.get_payload() or ""
        except Exception:
            continue
        if not isinstance(description, str) or len(description.strip()) <= MIN_README_CHARS:
            continue
        for k, section in enumerate(_split_sections(description)[:MAX_SECTIONS_PER_README]):
            fragment = f"#part-{k + 1}" if k else ""
            docs.append(make_doc(section, f"https://{HOST_PYPI}/project/{quote(name)}/{fragment}", "pypi_readme"))
    return docs


def _license_files(dist: importlib.metadata.Distribution) -> list[tuple[str, Path]]:
    """(path inside the .dist-info folder, file) of a distribution's licence files."""
    info_dir = getattr(dist, "_path", None)         # listing the folder is much faster than parsing RECORD
    if info_dir is not None and Path(info_dir).name.endswith(".dist-info"):
        found = [p for p in Path(info_dir).rglob("*") if p.name.upper().startswith(LICENSE_PREFIXES)]
        return sorted(("/".join(p.relative_to(info_dir).parts), p) for p in found if p.is_file())
    out = []
    for f in dist.files or []:
        parts = f.parts
        if f.name.upper().startswith(LICENSE_PREFIXES) and any(p.endswith(".dist-info") for p in parts):
            inside = parts[[p.endswith(".dist-info") for p in parts].index(True) + 1:]
            out.append(("/".join(inside), Path(dist.locate_file(f))))
    return sorted(out)


def _license_sections(text: str) -> list[str]:
    return [s for s in _split_sections(text, max_chars=20000, min_chars=2000) if len(s) >= MIN_LICENSE_CHARS]


@_cached
def license_texts() -> list[dict]:
    """Licence files of the installed packages and of the operating system."""
    docs = []
    for name, dist in _distributions():
        package_docs = []
        for rel, path in _license_files(dist):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for k, section in enumerate(_license_sections(text)):
                fragment = f"#part-{k + 1}" if k else ""
                url = f"https://{HOST_LICENSES}/{quote(name)}/{quote(rel)}{fragment}"
                package_docs.append(make_doc(section, url, "license"))
        docs += package_docs[:MAX_LICENSE_SECTIONS_PER_PACKAGE]
    if COMMON_LICENSES_DIR.is_dir():
        for path in sorted(COMMON_LICENSES_DIR.iterdir()):
            try:
                text = path.read_text(encoding="utf-8") if path.is_file() else ""
            except (OSError, UnicodeDecodeError):
                continue
            for k, section in enumerate(_license_sections(text)):
                fragment = f"#part-{k + 1}" if k else ""
                docs.append(make_doc(section, f"https://{HOST_OSI}/licenses/{quote(path.name)}{fragment}", "license"))
    return docs


def _public_members(module) -> list[tuple[str, object]]:
    """(qualified name, object) of a module's public functions and classes and their methods."""
    out = []
    for name in sorted(vars(module)):
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        owner = getattr(obj, "__module__", None) or ""
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if owner != module.__name__ and not owner.startswith("_") and owner != "posix":
            continue                                   # re-exported from another public module
        out.append((name, obj))
        if inspect.isclass(obj):
            for attr, member in sorted(vars(obj).items()):
                if not attr.startswith("_") and (inspect.isroutine(member) or isinstance(member, property)):
                    out.append((f"{name}.{attr}", member))
    return out


@_cached
def stdlib_docstrings() -> list[dict]:
    """Docstrings of standard-library modules and their public functions, classes and methods,
    collected in a fresh interpreter: what those modules hold depends on what else a process has
    imported (libraries patch and extend them), and the corpus must not."""
    script = ("import json, sys\n"
              "from pipeline.demo.sources import stdlib_docstrings_in_this_process as collect\n"
              "json.dump(collect(), sys.stdout)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise UserError(f"could not collect standard-library docstrings: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def stdlib_docstrings_in_this_process() -> list[dict]:
    """The docstrings as this process sees them (see `stdlib_docstrings`)."""
    docs = []
    for module_name in STDLIB_MODULES:
        try:
            module = importlib.import_module(module_name)
        except Exception:
            continue
        entries = [("", module)] + _public_members(module)
        for qualname, obj in entries:
            try:
                doc = inspect.getdoc(obj)
            except Exception:
                doc = None
            if not doc or len(doc) <= MIN_DOCSTRING_CHARS:
                continue
            title = f"{module_name}.{qualname}" if qualname else module_name
            url = f"https://{HOST_STDLIB}/{module_name}/{qualname or 'index'}"
            docs.append(make_doc(f"{title}\n\n{doc}", url, "stdlib_docstring"))
    return docs


