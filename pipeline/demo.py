"""A small, web-like demo corpus built from real text found on any machine with Python installed.

`curate demo` uses it to show the whole pipeline without downloading anything. The corpus is made of

* good text, all of it real and already on disk after installing the project:
  - sections of the Python documentation topics shipped with the interpreter (`pydoc_data.topics`),
  - long descriptions (READMEs) of the installed packages (`importlib.metadata`),
  - licence files of the installed packages (`*.dist-info/LICENSE*`, and
    `/usr/share/common-licenses` where it exists),
  - docstrings of standard-library modules, functions and classes;
* short news-style paragraphs in French, German, Spanish, Italian, Portuguese and Dutch (written into
  this module), for language identification;
* generated web junk: navigation/boilerplate pages, keyword spam, machine-generated tables,
  mojibake (real text encoded as UTF-8 and decoded as cp1252) and near-empty pages;
* exact duplicates: about 5% of the documents again, verbatim, under mirror.example.com URLs;
* planted bad inputs in `raw/bad/`: malformed JSON lines, invalid UTF-8, records without text,
  a truncated gzip file, an empty file and a file of an unknown format.

Every document has a URL whose host names its source (docs.python.org, pypi.org, seo-spam.example.net,
...), so per-domain results are easy to read. The files mix every input format the ingest job reads:
JSONL.gz, JSONL.zst, Parquet, WARC.gz (warcinfo + request + response records) and a `datasets`
save_to_disk folder. The build is deterministic: the same seed on the same machine gives the same
bytes (no time stamps; WARC dates and record ids derive from the seed).
"""
from __future__ import annotations

import gzip
import hashlib
import html
import importlib
import importlib.metadata
import inspect
import io
import json
import random
import re
import shutil
import subprocess
import sys
import uuid
import zlib
from functools import lru_cache, wraps
from pathlib import Path
from urllib.parse import quote, urlsplit

from pipeline.errors import UserError

# ----------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------

SUMMARY_FILE = "demo_summary.json"          # written beside raw/; marks the folder as a demo build
WARC_DATE = "2024-01-15T12:00:00Z"          # fixed so that builds are byte-identical
SECTION_MIN_CHARS = 800
SECTION_MAX_CHARS = 3000
MAX_SECTIONS_PER_README = 8                 # so that one huge README does not dominate pypi.org
MAX_LICENSE_SECTIONS_PER_PACKAGE = 4        # some wheels bundle hundreds of third-party licences
MIN_README_CHARS = 500
MIN_DOCSTRING_CHARS = 300
MIN_LICENSE_CHARS = 300
DUPLICATE_FRACTION = 0.05
PYDOC_WARC_EVERY = 5                        # every 5th Python docs section is served through the WARC
N_BROKEN_VALID = 6                          # valid records mixed into bad/broken.jsonl
N_TRUNCATED = 20                            # records in bad/truncated.jsonl.gz before it is cut

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
HOST_BOILERPLATE = "boilerplate-portal.example.com"
HOST_SPAM = "seo-spam.example.net"
HOST_TABLES = "autogen-tables.example.com"
HOST_MOJIBAKE = "mojibake.example.org"
HOST_THIN = "thin-pages.example.com"
HOST_MIRROR = "mirror.example.com"

# Real sentences (news-style) per language: (language code, host, sentences).
FOREIGN_SENTENCES: dict[str, tuple[str, list[str]]] = {
    "fr": ("nouvelles.example.fr", [
        "La municipalité a annoncé mardi l'ouverture d'une nouvelle bibliothèque dans le quartier de la gare.",
        "Les travaux, qui ont duré près de deux ans, ont coûté environ quatre millions d'euros.",
        "Selon le maire, le bâtiment accueillera aussi des ateliers pour les enfants et des cours de langue pour les adultes.",
        "Les habitants se sont montrés satisfaits, même si certains regrettent la disparition du petit jardin public.",
        "La météo de ce week-end s'annonce pluvieuse sur l'ensemble de la région, avec des températures en baisse.",
        "Les agriculteurs espèrent que ces pluies permettront de sauver une partie des récoltes après un été très sec.",
        "Au marché du samedi, les prix des fruits et légumes ont légèrement augmenté depuis le début du mois.",
        "Le club de football local a remporté son troisième match consécutif devant un public enthousiaste.",
        "L'entraîneur a salué l'engagement de ses joueurs, tout en reconnaissant que la défense doit encore progresser.",
        "Une exposition consacrée aux peintres impressionnistes ouvrira ses portes au musée municipal le mois prochain.",
        "Les élèves du lycée ont participé à une journée de nettoyage des berges de la rivière.",
        "Le conseil régional a voté un budget supplémentaire pour améliorer les transports en commun entre les villages.",
        "Les trains régionaux circuleront plus souvent le matin et le soir à partir de la rentrée.",
        "Plusieurs associations demandent davantage de pistes cyclables sécurisées dans le centre-ville.",
    ]),
    "de": ("nachrichten.example.de", [
        "Die Stadtverwaltung hat am Dienstag angekündigt, dass die Bauarbeiten am neuen Hallenbad im Frühjahr beginnen sollen.",
        "Nach Angaben des Bürgermeisters wird das Projekt rund zwölf Millionen Euro kosten.",
        "Viele Bürgerinnen und Bürger hatten sich seit Jahren für ein modernes Schwimmbad eingesetzt.",
        "Das Wetter am Wochenende bleibt wechselhaft, im Norden ist mit kräftigen Schauern und Gewittern zu rechnen.",
        "Die Landwirte hoffen nach dem trockenen Sommer auf ausreichend Regen für die Herbstaussaat.",
        "Auf dem Wochenmarkt sind die Preise für Äpfel und Kartoffeln in den letzten Wochen leicht gestiegen.",
        "Der örtliche Fußballverein hat sein drittes Spiel in Folge gewonnen und steht nun auf dem zweiten Tabellenplatz.",
        "Der Trainer lobte die Einsatzbereitschaft seiner Mannschaft, sieht aber in der Abwehr noch Verbesserungsbedarf.",
        "Im Stadtmuseum wird nächsten Monat eine Ausstellung über die Geschichte der Eisenbahn in der Region eröffnet.",
        "Schülerinnen und Schüler der Gesamtschule haben gemeinsam das Ufer des Flusses von Müll befreit.",
        "Der Kreistag hat zusätzliche Mittel bewilligt, um die Busverbindungen zwischen den Dörfern zu verbessern.",
        "Ab dem Herbst sollen die Regionalzüge morgens und abends häufiger fahren.",
        "Mehrere Vereine fordern mehr sichere Radwege in der Innenstadt.",
        "Die Bibliothek verlängert ihre Öffnungszeiten und bietet künftig auch am Samstag Lesungen für Kinder an.",
    ]),
    "es": ("noticias.example.es", [
        "El ayuntamiento anunció el martes la apertura de un nuevo centro cultural en el barrio antiguo de la ciudad.",
        "Las obras, que se prolongaron durante casi dos años, costaron alrededor de tres millones de euros.",
        "Según la alcaldesa, el edificio ofrecerá talleres para niños y clases de idiomas para adultos.",
        "Los vecinos se mostraron satisfechos, aunque algunos lamentan la pérdida de la pequeña plaza que había antes.",
        "El pronóstico del tiempo para el fin de semana anuncia lluvias en gran parte del país y un descenso de las temperaturas.",
        "Los agricultores esperan que el agua ayude a salvar parte de la cosecha después de un verano muy seco.",
        "En el mercado del sábado, los precios de la fruta y la verdura subieron ligeramente desde principios de mes.",
        "El equipo de fútbol local ganó su tercer partido consecutivo ante un público entusiasmado.",
        "El entrenador elogió el esfuerzo de sus jugadores, aunque reconoció que la defensa todavía debe mejorar.",
        "El museo municipal inaugurará el próximo mes una exposición dedicada a la pintura española del siglo diecinueve.",
        "Los estudiantes del instituto participaron en una jornada de limpieza a orillas del río.",
        "El gobierno regional aprobó un presupuesto adicional para mejorar el transporte público entre los pueblos.",
        "A partir de septiembre, los trenes de cercanías pasarán con más frecuencia por la mañana y por la tarde.",
        "Varias asociaciones piden más carriles para bicicletas en el centro de la ciudad.",
    ]),
    "it": ("notizie.example.it", [
        "Il comune ha annunciato martedì l'apertura di una nuova biblioteca nel quartiere vicino alla stazione.",
        "I lavori, durati quasi due anni, sono costati circa quattro milioni di euro.",
        "Secondo il sindaco, l'edificio ospiterà anche laboratori per i bambini e corsi di lingua per gli adulti.",
        "Gli abitanti si sono detti soddisfatti, anche se alcuni rimpiangono il piccolo giardino che c'era prima.",
        "Le previsioni del tempo per il fine settimana indicano piogge diffuse e un calo delle temperature.",
        "Gli agricoltori sperano che la pioggia permetta di salvare una parte del raccolto dopo un'estate molto secca.",
        "Al mercato del sabato i prezzi della frutta e della verdura sono leggermente aumentati dall'inizio del mese.",
        "La squadra di calcio locale ha vinto la terza partita consecutiva davanti a un pubblico entusiasta.",
        "L'allenatore ha elogiato l'impegno dei suoi giocatori, ma ha ammesso che la difesa deve ancora migliorare.",
        "Il mese prossimo il museo civico inaugurerà una mostra dedicata ai pittori del Rinascimento.",
        "Gli studenti del liceo hanno partecipato a una giornata di pulizia delle rive del fiume.",
        "La regione ha approvato un bilancio aggiuntivo per migliorare i trasporti pubblici tra i paesi.",
        "Da settembre i treni regionali passeranno più spesso la mattina e la sera.",
        "Diverse associazioni chiedono più piste ciclabili sicure nel centro storico.",
    ]),
    "pt": ("noticias.example.com.br", [
        "A prefeitura anunciou na terça-feira a abertura de uma nova biblioteca no bairro próximo à estação.",
        "As obras, que duraram quase dois anos, custaram cerca de quatro milhões de reais.",
        "Segundo o prefeito, o prédio também vai oferecer oficinas para crianças e cursos de idiomas para adultos.",
        "Os moradores ficaram satisfeitos, embora alguns lamentem o fim da pequena praça que existia no local.",
        "A previsão do tempo para o fim de semana indica chuva em grande parte do estado e queda nas temperaturas.",
        "Os agricultores esperam que a chuva ajude a salvar parte da colheita depois de um inverno muito seco.",
        "Na feira de sábado, os preços das frutas e verduras subiram um pouco desde o início do mês.",
        "O time de futebol da cidade venceu a terceira partida seguida diante de uma torcida animada.",
        "O treinador elogiou a dedicação dos jogadores, mas reconheceu que a defesa ainda precisa melhorar.",
        "O museu municipal vai inaugurar no próximo mês uma exposição sobre a história da ferrovia na região.",
        "Os alunos da escola estadual participaram de um mutirão de limpeza nas margens do rio.",
        "O governo do estado aprovou um orçamento extra para melhorar o transporte público entre as cidades vizinhas.",
        "A partir de setembro, os ônibus intermunicipais vão circular com mais frequência de manhã e à noite.",
        "Várias associações pedem mais ciclovias seguras no centro da cidade.",
    ]),
    "nl": ("nieuws.example.nl", [
        "De gemeente heeft dinsdag bekendgemaakt dat er een nieuwe bibliotheek komt in de wijk bij het station.",
        "De verbouwing heeft bijna twee jaar geduurd en kostte ongeveer vier miljoen euro.",
        "Volgens de burgemeester komen er in het gebouw ook workshops voor kinderen en taallessen voor volwassenen.",
        "De buurtbewoners zijn tevreden, al betreuren sommigen dat het kleine plantsoen is verdwenen.",
        "Het weer in het weekend blijft wisselvallig, met regenbuien en lagere temperaturen in het hele land.",
        "De boeren hopen dat de regen na de droge zomer een deel van de oogst kan redden.",
        "Op de zaterdagmarkt zijn de prijzen van groente en fruit sinds het begin van de maand iets gestegen.",
        "De plaatselijke voetbalclub heeft voor de derde keer op rij gewonnen voor een enthousiast publiek.",
        "De trainer prees de inzet van zijn spelers, maar gaf toe dat de verdediging nog beter moet.",
        "Het stadsmuseum opent volgende maand een tentoonstelling over de geschiedenis van de scheepvaart.",
        "Leerlingen van de middelbare school hebben samen de oevers van de rivier schoongemaakt.",
        "De provincie heeft extra geld vrijgemaakt om het openbaar vervoer tussen de dorpen te verbeteren.",
        "Vanaf september rijden de stoptreinen 's ochtends en 's avonds vaker.",
        "Verschillende verenigingen vragen om meer veilige fietspaden in het centrum.",
    ]),
}

# Vocabulary of the generated junk.
NAV_ITEMS = ["Home", "About", "About Us", "Contact", "Login", "Register", "Services", "Products", "Blog",
             "News", "Careers", "FAQ", "Support", "Shop", "Cart (0)", "My Account", "Search", "Sitemap"]
FOOTER_ITEMS = ["Privacy Policy", "Terms of Use", "Cookie Policy", "Imprint", "Accessibility",
                "Do Not Sell My Info", "Sitemap", "Advertise", "Press"]
SITE_WORDS = ["Global", "Smart", "Prime", "Metro", "Blue", "Bright", "United", "First", "Star", "Green"]
SITE_KINDS = ["Solutions", "Portal", "Group", "Media", "Services", "Network", "Hub", "Partners"]
SPAM_PHRASES = ["cheap flights", "cheap hotels", "best deals", "buy now", "lowest price guaranteed",
                "discount travel", "last minute deals", "free shipping", "limited offer", "click here",
                "best price", "top rated", "book today", "save 90%", "hot deals", "cheap car rental"]
CITIES = ["Paris", "London", "New York", "Berlin", "Rome", "Madrid", "Lisbon", "Tokyo", "Sydney", "Dubai",
          "Bangkok", "Toronto", "Chicago", "Vienna", "Prague", "Amsterdam"]
PRODUCT_ADJ = ["Deluxe", "Compact", "Ultra", "Classic", "Pro", "Mini", "Heavy-Duty", "Eco", "Smart"]
PRODUCT_NOUN = ["Widget", "Bracket", "Adapter", "Cable", "Valve", "Sensor", "Hinge", "Bolt", "Filter"]
THIN_TEMPLATES = [
    "Loading... please wait ({n}%)",
    "404 Not Found\n\nThe requested URL /{path} was not found on this server.",
    "Click here to continue to /{path}",
    "Please enable JavaScript to view page {n}.",
    "Redirecting to /{path} ...",
    "Page {n} of {m}",
    "Access denied. You do not have permission to access /{path} on this server.",
    "Coming soon! Page {n} is under construction.",
]
PATH_WORDS = ["index", "products", "item", "view", "page", "category", "article", "user", "search", "tag"]


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------

def _doc(text: str, url: str, source: str) -> dict:
    return {"text": text, "url": url, "source": source}


def _rng(seed: int, name: str) -> random.Random:
    """One independent, reproducible random stream per source."""
    return random.Random(f"{seed}:{name}")


def _cap(docs: list[dict], n: int, rng: random.Random) -> list[dict]:
    """At most `n` documents, chosen at random but kept in their original order."""
    if len(docs) <= n:
        return docs
    keep = sorted(rng.sample(range(len(docs)), n))
    return [docs[i] for i in keep]


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


def _unique_texts(make, n: int, rng: random.Random) -> list[str]:
    """Call `make(rng)` until it gave `n` distinct texts (or clearly cannot)."""
    seen: dict[str, None] = {}
    for _ in range(n * 20):
        if len(seen) >= n:
            break
        seen.setdefault(make(rng), None)
    return list(seen)


def _mojibake(text: str) -> str:
    """Encode as UTF-8 and decode as cp1252 (bytes cp1252 leaves undefined become C1 controls, as in the wild)."""
    out = []
    for b in text.encode("utf-8"):
        try:
            out.append(bytes([b]).decode("cp1252"))
        except UnicodeDecodeError:
            out.append(chr(b))
    return "".join(out)


def _smart_punctuation(text: str) -> str:
    """Typographic quotes and dashes, as a CMS would produce them (so mojibake shows up)."""
    text = text.replace("--", "\u2014").replace(" - ", " \u2013 ").replace("'", "\u2019")
    parts = text.split('"')
    return "".join(p + ("\u201c" if i % 2 == 0 else "\u201d") for i, p in enumerate(parts[:-1])) + parts[-1]


def _cached(fn):
    """Scan the installation once per process; callers get fresh copies of the records."""
    scan = lru_cache(maxsize=1)(lambda: tuple(fn()))

    @wraps(fn)
    def wrapper() -> list[dict]:
        return [dict(d) for d in scan()]
    return wrapper


# ----------------------------------------------------------------------------------------------
# Real text, one function per source
# ----------------------------------------------------------------------------------------------

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
            docs.append(_doc(section, f"https://{HOST_PYDOC}/3/reference/{quote(topic)}.html{fragment}",
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
            docs.append(_doc(section, f"https://{HOST_PYPI}/project/{quote(name)}/{fragment}", "pypi_readme"))
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
                package_docs.append(_doc(section, url, "license"))
        docs += package_docs[:MAX_LICENSE_SECTIONS_PER_PACKAGE]
    if COMMON_LICENSES_DIR.is_dir():
        for path in sorted(COMMON_LICENSES_DIR.iterdir()):
            try:
                text = path.read_text(encoding="utf-8") if path.is_file() else ""
            except (OSError, UnicodeDecodeError):
                continue
            for k, section in enumerate(_license_sections(text)):
                fragment = f"#part-{k + 1}" if k else ""
                docs.append(_doc(section, f"https://{HOST_OSI}/licenses/{quote(path.name)}{fragment}", "license"))
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
              "from pipeline.demo import stdlib_docstrings_in_this_process as collect\n"
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
            docs.append(_doc(f"{title}\n\n{doc}", url, "stdlib_docstring"))
    return docs


def foreign_news(rng: random.Random, per_language: int) -> list[dict]:
    """Short news items in six European languages, each a random selection of real sentences."""
    docs = []
    for lang, (host, sentences) in FOREIGN_SENTENCES.items():
        def make(r: random.Random, sentences=sentences) -> str:
            picked = r.sample(sentences, r.randint(5, 8))
            cut = len(picked) // 2
            return " ".join(picked[:cut]) + "\n\n" + " ".join(picked[cut:])
        for i, text in enumerate(_unique_texts(make, per_language, rng)):
            docs.append(_doc(text, f"https://{host}/{lang}/artikel/{i + 1:04d}.html", f"news_{lang}"))
    return docs


# ----------------------------------------------------------------------------------------------
# Web junk, one function per kind
# ----------------------------------------------------------------------------------------------

def boilerplate_pages(rng: random.Random, n: int) -> list[dict]:
    """Navigation menus, cookie banners and footers with almost no content."""
    def make(r: random.Random) -> str:
        site = f"{r.choice(SITE_WORDS)} {r.choice(SITE_KINDS)}"
        nav = " | ".join(r.sample(NAV_ITEMS, r.randint(5, 9)))
        crumbs = " » ".join(["Home"] + r.sample(NAV_ITEMS[5:], 2) + [f"Page {r.randint(1, 999)}"])
        lines = [
            nav, crumbs, f"Welcome to {site}!",
            "Share: Facebook | Twitter | LinkedIn | Email | Print",
            "Related: " + " | ".join(r.sample(NAV_ITEMS, 4)),
            "We use cookies to improve your experience. By continuing to browse the site you agree "
            "to our use of cookies. Accept | Decline | Cookie settings",
            "Subscribe to our newsletter! Enter your e-mail address: [          ] Subscribe",
            " | ".join(r.sample(FOOTER_ITEMS, r.randint(3, 6))),
            f"© {r.randint(2012, 2024)} {site} Ltd. All rights reserved.",
        ]
        if r.random() < 0.5:
            lines.insert(3, "Back to top ↑ | Skip to main content | Skip to navigation")
        return "\n".join(lines)
    return [_doc(t, f"https://{HOST_BOILERPLATE}/{PATH_WORDS[i % len(PATH_WORDS)]}/page-{i + 1:04d}.html",
                 "boilerplate") for i, t in enumerate(_unique_texts(make, n, rng))]


def seo_spam(rng: random.Random, n: int) -> list[dict]:
    """Keyword-stuffed pages (safe for work: travel and shopping deals)."""
    def make(r: random.Random) -> str:
        city = r.choice(CITIES)
        title = f"Cheap Flights {city} | Cheap Hotels {city} | Best Deals | Buy Now"
        block = "cheap flights cheap hotels best deals buy now"
        words = [r.choice(SPAM_PHRASES + [f"{city} hotels", f"flights to {city}", f"{city} cheap"])
                 for _ in range(r.randint(40, 120))]
        body = " ".join(words)
        return "\n".join([title, (block + " ") * r.randint(3, 7), body,
                          f"BUY NOW!!! {r.randint(50, 95)}% OFF {city.upper()} DEALS click here click here"])
    return [_doc(t, f"http://{HOST_SPAM}/deals/cheap-{i + 1:04d}.html", "seo_spam")
            for i, t in enumerate(_unique_texts(make, n, rng))]


def generated_tables(rng: random.Random, n: int) -> list[dict]:
    """Machine-generated product and measurement tables."""
    def make(r: random.Random) -> str:
        rows = []
        if r.random() < 0.6:
            rows.append("SKU | Product | Qty | Price | Stock")
            for _ in range(r.randint(15, 50)):
                rows.append(f"SKU-{r.randint(10000, 99999)} | {r.choice(PRODUCT_ADJ)} {r.choice(PRODUCT_NOUN)} "
                            f"{r.choice('ABCDEFGHJK')}{r.randint(10, 999)} | {r.randint(0, 500)} | "
                            f"${r.randint(1, 999)}.{r.randint(0, 99):02d} | "
                            f"{r.choice(['in stock', 'out of stock', 'backorder'])}")
        else:
            rows.append("date,sensor,min,max,mean,count")
            for _ in range(r.randint(15, 50)):
                rows.append(f"2023-{r.randint(1, 12):02d}-{r.randint(1, 28):02d},S{r.randint(1, 64):03d},"
                            f"{r.uniform(-10, 10):.2f},{r.uniform(10, 40):.2f},{r.uniform(0, 25):.3f},"
                            f"{r.randint(1, 10000)}")
        return "\n".join(rows)
    return [_doc(t, f"https://{HOST_TABLES}/export/table-{i + 1:04d}.html", "generated_table")
            for i, t in enumerate(_unique_texts(make, n, rng))]


def mojibake_pages(rng: random.Random, n: int, real: list[dict]) -> list[dict]:
    """Real English text with typographic punctuation, garbled by a wrong decoding."""
    if not real:
        return []
    def make(r: random.Random) -> str:
        for _ in range(20):                          # find a passage that actually gets garbled
            text = r.choice(real)["text"]
            start = r.randint(0, max(0, len(text) - 1500))
            passage = text[start:start + 1500].strip()
            garbled = _mojibake(_smart_punctuation(passage))
            if garbled != passage:
                break
        return garbled
    return [_doc(t, f"https://{HOST_MOJIBAKE}/forum/thread-{i + 1:04d}", "mojibake")
            for i, t in enumerate(_unique_texts(make, n, rng))]


def thin_pages(rng: random.Random, n: int) -> list[dict]:
    """Near-empty pages: loading screens, soft 404s, 'click here'."""
    def make(r: random.Random) -> str:
        path = f"{r.choice(PATH_WORDS)}/{r.randint(1, 99999)}"
        return r.choice(THIN_TEMPLATES).format(n=r.randint(1, 99), m=r.randint(100, 999), path=path)
    return [_doc(t, f"https://{HOST_THIN}/p/{i + 1:04d}", "thin_page")
            for i, t in enumerate(_unique_texts(make, n, rng))]


# ----------------------------------------------------------------------------------------------
# Writers (deterministic: no time stamps, fixed compression settings)
# ----------------------------------------------------------------------------------------------

def _jsonl_bytes(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in records)


def _gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def _write_jsonl_gz(path: Path, records: list[dict]) -> None:
    path.write_bytes(_gzip_bytes(_jsonl_bytes(records)))


def _write_jsonl_zst(path: Path, records: list[dict]) -> None:
    import zstandard
    path.write_bytes(zstandard.ZstdCompressor(level=10).compress(_jsonl_bytes(records)))


def _columns(records: list[dict]) -> dict[str, list]:
    return {k: [r[k] for r in records] for k in ("text", "url", "id", "source")}


def _write_parquet(path: Path, records: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table(_columns(records)), path, compression="zstd")


def _write_hf_disk(path: Path, records: list[dict], seed: int) -> None:
    import datasets
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        ds = datasets.Dataset.from_dict(_columns(records))
        ds._fingerprint = hashlib.sha256(f"demo:{seed}:{len(records)}".encode()).hexdigest()[:16]
        ds.save_to_disk(str(path))
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _record_id(seed: int, key: str) -> str:
    return f"<urn:uuid:{uuid.UUID(bytes=hashlib.sha256(f'{seed}:{key}'.encode()).digest()[:16], version=4)}>"


def _as_html(text: str, lang: str) -> bytes:
    title = html.escape(text.strip().split("\n", 1)[0][:80])
    paragraphs = "\n".join(f"<p>{html.escape(p)}</p>" for p in re.split(r"\n\s*\n", text) if p.strip())
    return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title></head>\n'
            f"<body>\n{paragraphs}\n</body></html>\n").encode("utf-8")


def _write_warc(path: Path, records: list[dict], seed: int) -> None:
    """warcinfo, then a request and a response (HTML) record per document."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        info = (f"software: curate demo corpus\r\nformat: WARC File Format 1.0\r\n"
                f"description: generated demo crawl, seed {seed}\r\n").encode()
        warcinfo_headers = StatusAndHeaders("", [
            ("WARC-Type", "warcinfo"), ("WARC-Record-ID", _record_id(seed, "warcinfo")),
            ("WARC-Filename", path.name), ("WARC-Date", WARC_DATE)], protocol="WARC/1.0")
        writer.write_record(writer.create_warc_record("", "warcinfo", payload=io.BytesIO(info), length=len(info),
                                                      warc_headers=warcinfo_headers,
                                                      warc_content_type="application/warc-fields"))
        for r in records:
            parts = urlsplit(r["url"])
            response_id = _record_id(seed, f"response:{r['id']}")
            request_id = _record_id(seed, f"request:{r['id']}")
            req_http = StatusAndHeaders(f"GET {parts.path or '/'} HTTP/1.1", [
                ("Host", parts.hostname), ("User-Agent", "curate-demo-crawler/1.0"), ("Accept", "text/html")],
                is_http_request=True)
            writer.write_record(writer.create_warc_record(r["url"], "request", http_headers=req_http,
                                                          warc_headers_dict={"WARC-Record-ID": request_id,
                                                                             "WARC-Date": WARC_DATE,
                                                                             "WARC-Concurrent-To": response_id}))
            body = _as_html(r["text"], r.get("lang", "en"))
            resp_http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                                    ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(r["url"], "response", payload=io.BytesIO(body),
                                                          length=len(body), http_headers=resp_http,
                                                          warc_headers_dict={"WARC-Record-ID": response_id,
                                                                             "WARC-Date": WARC_DATE}))


# ----------------------------------------------------------------------------------------------
# Planted bad inputs
# ----------------------------------------------------------------------------------------------

def _write_bad_inputs(bad_dir: Path, spare: list[dict]) -> dict:
    """Corrupt inputs the ingest job must quarantine; `spare` gives real records to mix in."""
    bad_dir.mkdir(parents=True, exist_ok=True)
    valid, truncated = spare[:N_BROKEN_VALID], spare[N_BROKEN_VALID:N_BROKEN_VALID + N_TRUNCATED]
    line = lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8")  # noqa: E731
    v = iter(valid)
    lines = [
        line(next(v)),
        b'{"text": "an object that never ends, "url": "https://broken.example.com/1"',      # malformed
        line(next(v)),
        b"{'text': 'single quotes are not JSON', 'url': 'https://broken.example.com/2'}",  # malformed
        b'{"text": "caf\xe9 cr\xe8me \xff\xfe not UTF-8", "url": "https://broken.example.com/3", "id": "bad-utf8"}',
        line(next(v)),
        b'{"url": "https://broken.example.com/4", "id": "no-text", "source": "broken"}',     # missing text
        b'<html><body>this is not JSON at all</body></html>',                                # malformed
        line(next(v)),
        b'{"text": null, "url": "https://broken.example.com/5", "id": "null-text", "source": "broken"}',
        line(next(v)),
        line(next(v)),
    ]
    (bad_dir / "broken.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    full = _gzip_bytes(_jsonl_bytes(truncated))
    cut = full[: int(len(full) * 0.6)]
    (bad_dir / "truncated.jsonl.gz").write_bytes(cut)
    readable = zlib.decompressobj(wbits=31).decompress(cut)
    complete = readable.count(b"\n")

    (bad_dir / "empty.jsonl").write_bytes(b"")
    (bad_dir / "sitemap.xml").write_bytes(
        b'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        b"  <url><loc>https://boilerplate-portal.example.com/</loc></url>\n</urlset>\n")
    return {
        "bad/broken.jsonl": {"lines": len(lines), "valid_records": len(valid), "malformed_json": 3,
                             "invalid_utf8": 1, "missing_text": 2},
        "bad/truncated.jsonl.gz": {"records_written": len(truncated), "complete_records_before_cut": complete,
                                   "bytes_kept": len(cut), "bytes_full": len(full)},
        "bad/empty.jsonl": {"empty_file": 1},
        "bad/sitemap.xml": {"unknown_format": 1},
    }


# ----------------------------------------------------------------------------------------------
# The corpus
# ----------------------------------------------------------------------------------------------

def _assign_ids(records: list[dict], prefix: str) -> list[dict]:
    return [{"text": r["text"], "url": r["url"], "id": f"{prefix}-{i:05d}", "source": r["source"],
             **({"lang": r["lang"]} if "lang" in r else {})} for i, r in enumerate(records)]


def _drop_repeats(groups: dict[str, list[dict]]) -> None:
    """Make every text unique across all groups (so the only duplicates are the planted ones)."""
    seen: set[str] = set()
    for name in groups:
        kept = []
        for r in groups[name]:
            if r["text"].strip() and r["text"] not in seen:
                seen.add(r["text"])
                kept.append(r)
        groups[name] = kept


def build_demo_corpus(out_dir: str | Path, seed: int = 0, max_docs_per_source: int = 400) -> dict:
    """Write the demo corpus into `out_dir/raw/` and return a summary of what is there.

    Summary keys: `files` maps each clean file (path relative to raw/) to its number of documents,
    `domains` maps each URL host to its number of documents over those files, `duplicates` counts the
    planted exact copies (in `mirror.jsonl.gz`), `total_records` is the number of documents in the clean
    files, and `planted_bad` describes each file under `raw/bad/` (not counted in the totals).
    A previous demo build in `out_dir` is replaced; any other non-empty `raw/` is an error.
    """
    if max_docs_per_source < 1:
        raise UserError(f"max_docs_per_source must be at least 1, got {max_docs_per_source}")
    out_dir = Path(out_dir)
    raw = out_dir / "raw"
    if raw.exists() and any(raw.iterdir()):
        if not (out_dir / SUMMARY_FILE).is_file():
            raise UserError(f"{raw} exists and is not a demo corpus; choose an empty folder for `curate demo`")
        shutil.rmtree(raw)
    raw.mkdir(parents=True, exist_ok=True)

    n = max_docs_per_source
    n_junk = max(4, n // 5)
    n_foreign = max(2, n // 16)

    # Real text. Python docs are taken in full first: some of them feed the mojibake and the bad files.
    all_pydocs = python_docs()
    pydoc_rng = _rng(seed, "python_docs")
    spare_idx = set(pydoc_rng.sample(range(len(all_pydocs)), min(len(all_pydocs) // 3,
                                                                  N_BROKEN_VALID + N_TRUNCATED)))
    spare = [d for i, d in enumerate(all_pydocs) if i in spare_idx]
    pydocs = _cap([d for i, d in enumerate(all_pydocs) if i not in spare_idx], n, pydoc_rng)

    groups: dict[str, list[dict]] = {
        "python_docs": pydocs,
        "pypi_readme": _cap(pypi_readmes(), n, _rng(seed, "pypi")),
        "license": _cap(license_texts(), n, _rng(seed, "license")),
        "stdlib_docstring": _cap(stdlib_docstrings(), n, _rng(seed, "stdlib")),
        "news": foreign_news(_rng(seed, "news"), n_foreign),
        "boilerplate": boilerplate_pages(_rng(seed, "boilerplate"), n_junk),
        "seo_spam": seo_spam(_rng(seed, "spam"), n_junk),
        "generated_table": generated_tables(_rng(seed, "tables"), n_junk),
        "mojibake": mojibake_pages(_rng(seed, "mojibake"), n_junk, all_pydocs),
        "thin_page": thin_pages(_rng(seed, "thin"), n_junk),
    }
    for r in groups["news"]:
        r["lang"] = r["source"].split("_", 1)[1]
    _drop_repeats(groups)
    spare_texts = {r["text"] for g in groups.values() for r in g}
    spare = [r for r in spare if r["text"] not in spare_texts]

    # Which records go into which file (the WARC gets the web-like pages and a slice of the docs).
    py = _assign_ids(groups["python_docs"], "python_docs")
    files: dict[str, list[dict]] = {
        "python_docs.jsonl.gz": [r for i, r in enumerate(py) if i % PYDOC_WARC_EVERY != PYDOC_WARC_EVERY - 1],
        "pypi_readmes.parquet": _assign_ids(groups["pypi_readme"], "pypi_readme"),
        "licenses.jsonl.zst": _assign_ids(groups["license"], "license"),
        "stdlib_docstrings": _assign_ids(groups["stdlib_docstring"], "stdlib_docstring"),
        "forum_posts.jsonl.gz": _assign_ids(groups["mojibake"], "mojibake"),
    }
    crawl = [r for i, r in enumerate(py) if i % PYDOC_WARC_EVERY == PYDOC_WARC_EVERY - 1]
    for name in ("news", "boilerplate", "seo_spam", "generated_table", "thin_page"):
        crawl += _assign_ids(groups[name], name)
    _rng(seed, "crawl-order").shuffle(crawl)
    files["web_crawl.warc.gz"] = crawl

    # Exact duplicates: ~5% of all documents again under mirror URLs, copied from the non-WARC files
    # (the WARC text is wrapped in HTML, so copies of it would not be byte-identical after extraction).
    n_total = sum(len(v) for v in files.values())
    eligible = [r for name, recs in files.items() if not name.endswith(".warc.gz") for r in recs]
    n_dup = min(len(eligible), max(1, round(DUPLICATE_FRACTION * n_total / (1 - DUPLICATE_FRACTION))))
    originals = [eligible[i] for i in sorted(_rng(seed, "mirror").sample(range(len(eligible)), n_dup))]
    files["mirror.jsonl.gz"] = [
        {"text": r["text"], "url": f"https://{HOST_MIRROR}/{urlsplit(r['url']).hostname}{urlsplit(r['url']).path}",
         "id": f"mirror-{i:05d}", "source": "mirror"} for i, r in enumerate(originals)]

    # Write.
    for name, recs in files.items():
        path = raw / name
        clean = [{k: r[k] for k in ("text", "url", "id", "source")} for r in recs]
        if name.endswith(".jsonl.gz"):
            _write_jsonl_gz(path, clean)
        elif name.endswith(".jsonl.zst"):
            _write_jsonl_zst(path, clean)
        elif name.endswith(".parquet"):
            _write_parquet(path, clean)
        elif name.endswith(".warc.gz"):
            _write_warc(path, recs, seed)
        else:
            _write_hf_disk(path, clean, seed)
    planted_bad = _write_bad_inputs(raw / "bad", _assign_ids(spare, "spare"))

    domains: dict[str, int] = {}
    for recs in files.values():
        for r in recs:
            host = urlsplit(r["url"]).hostname
            domains[host] = domains.get(host, 0) + 1
    summary = {
        "files": {name: len(recs) for name, recs in files.items()},
        "domains": dict(sorted(domains.items(), key=lambda kv: (-kv[1], kv[0]))),
        "planted_bad": planted_bad,
        "duplicates": len(files["mirror.jsonl.gz"]),
        "total_records": sum(len(v) for v in files.values()),
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def demo_config(out_dir: str | Path) -> dict:
    """The run configuration (as a YAML-able dict) of the whole pipeline on the demo corpus in
    `out_dir`: ingest, train a reference model, score, select and export."""
    out_dir = Path(out_dir)
    return {
        "store": str(out_dir / "store"),
        "ingest": {
            "inputs": [{"path": str(out_dir / "raw"),
                        "fields": {"text": "text", "url": "url", "id": "id", "metadata": ["source"]}}],
            "num_shards": 4,
        },
        # A small reference model trained on a quarter of the corpus: about a minute on two CPU cores.
        "reference": {"out": str(out_dir / "models" / "reference"), "reference_fraction": 0.25,
                      "min_reference_docs": 0, "max_steps": 150, "vocab_size": 4096},
        "score": {"model": str(out_dir / "models" / "reference"), "max_tokens": 256},
        # Ankner et al.'s medium band at a 50% selection rate, over English documents.
        "select": {"name": "medium-50", "rules": [{"type": "where", "sql": "language = 'en'"},
                                                  {"type": "band", "criterion": "medium", "rate": 0.5}]},
        "export": {"name": "medium-50", "format": "parquet", "shard_bytes": 256 * 1024, "seed": 0},
        "stages": ["ingest", "train_reference", "score", "select", "export"],
    }
