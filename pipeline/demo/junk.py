"""Text the pipeline should learn to drop or route: short news items in six European languages (for
language identification) and generated web junk: navigation/boilerplate pages, keyword spam,
machine-generated tables, mojibake (real text encoded as UTF-8 and decoded as cp1252) and
near-empty pages. Each generator takes its own seeded random stream.
"""
from __future__ import annotations

import random

from pipeline.demo.sources import make_doc

HOST_BOILERPLATE = "boilerplate-portal.example.com"
HOST_SPAM = "seo-spam.example.net"
HOST_TABLES = "autogen-tables.example.com"
HOST_MOJIBAKE = "mojibake.example.org"
HOST_THIN = "thin-pages.example.com"

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



def foreign_news(rng: random.Random, per_language: int) -> list[dict]:
    """Short news items in six European languages, each a random selection of real sentences."""
    docs = []
    for lang, (host, sentences) in FOREIGN_SENTENCES.items():
        def make(r: random.Random, sentences=sentences) -> str:
            picked = r.sample(sentences, r.randint(5, 8))
            cut = len(picked) // 2
            return " ".join(picked[:cut]) + "\n\n" + " ".join(picked[cut:])
        for i, text in enumerate(_unique_texts(make, per_language, rng)):
            docs.append(make_doc(text, f"https://{host}/{lang}/artikel/{i + 1:04d}.html", f"news_{lang}"))
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
    return [make_doc(t, f"https://{HOST_BOILERPLATE}/{PATH_WORDS[i % len(PATH_WORDS)]}/page-{i + 1:04d}.html",
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
    return [make_doc(t, f"http://{HOST_SPAM}/deals/cheap-{i + 1:04d}.html", "seo_spam")
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
    return [make_doc(t, f"https://{HOST_TABLES}/export/table-{i + 1:04d}.html", "generated_table")
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
    return [make_doc(t, f"https://{HOST_MOJIBAKE}/forum/thread-{i + 1:04d}", "mojibake")
            for i, t in enumerate(_unique_texts(make, n, rng))]


def thin_pages(rng: random.Random, n: int) -> list[dict]:
    """Near-empty pages: loading screens, soft 404s, 'click here'."""
    def make(r: random.Random) -> str:
        path = f"{r.choice(PATH_WORDS)}/{r.randint(1, 99999)}"
        return r.choice(THIN_TEMPLATES).format(n=r.randint(1, 99), m=r.randint(100, 999), path=path)
    return [make_doc(t, f"https://{HOST_THIN}/p/{i + 1:04d}", "thin_page")
            for i, t in enumerate(_unique_texts(make, n, rng))]


