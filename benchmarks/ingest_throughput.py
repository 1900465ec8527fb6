"""Ingest throughput: `curate ingest` against a plain-Python baseline on real text, in one run.

    .venv/bin/python benchmarks/ingest_throughput.py                # 3 interleaved rounds, 1x/2x/4x, WARC
    .venv/bin/python benchmarks/ingest_throughput.py --rounds 1 --scales 1

The corpus is every text of the NLTK archives in ../shared/data cut into 1-4 KB pages, four times
over with different cuts, in 2 JSON Lines gzip shards (~40,000 documents, ~90 MB of text). The
baseline does the least an ingest must: gzip, json, fastText lid.176 and a Parquet write, one process
per core. Both run as fresh processes, interleaved round by round (the machine's speed drifts), and
the medians are compared. A pipeline's steady time is its own work: `curate ingest` without Spark's
start-up (session and Python workers), the baseline without its pool's start-up.

Printed: docs/s and MB/s (of text), peak memory (the whole process tree, and its largest Python process),
the ratio to the baseline, the fixed cost of a tiny input, the 1x/2x/4x scaling line (2x and 4x are
the same 2 files holding 2 and 4 copies, so they are read in chunks), and the WARC line: warcio with
the standard-library HTML parser against FastWARC with Resiliparse's main-content extraction, on
real pages found on this machine (HTML documentation) or, failing that, on generated ones, with an
extraction spot check.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
NLTK = REPO.parent / "shared" / "data" / "nltk"
CURATE = str(Path(sys.executable).with_name("curate"))
HTML_DOCS = ["/usr/share/doc/**/*.html", os.path.expanduser("~/.rustup/toolchains/*/share/doc/rust/html/book/*.html"),
             "/usr/local/share/doc/**/*.html"]


# -- the baseline: the least an ingest must do --------------------------------------------------
def baseline_file(path: str) -> tuple[int, int]:
    """gzip + json + fastText lid.176 + Parquet for one file; (documents, text bytes)."""
    import gzip

    import fasttext
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.ingest.documents import LanguageIdentifier
    model = LanguageIdentifier().model  # the same lid.176 file curate uses
    rows = [json.loads(line) for line in gzip.open(path, "rb")]
    texts = [r["text"] for r in rows]
    labels, probs = model.predict([t.replace("\n", " ") for t in texts], k=1)
    out = os.path.join(os.environ["BASELINE_OUT"], os.path.basename(path) + ".parquet")
    pq.write_table(pa.table({"text": texts, "url": [r.get("url") for r in rows],
                             "language": [lab[0].removeprefix("__label__") for lab in labels],
                             "language_score": [float(p[0]) for p in probs]}), out, compression="zstd")
    del fasttext
    return len(texts), sum(len(t.encode()) for t in texts)


def baseline_main(folder: str, processes: int) -> None:
    from multiprocessing import Pool
    started = time.time()
    with Pool(processes) as pool:
        work_started = time.time()
        done = pool.map(baseline_file, sorted(glob.glob(os.path.join(folder, "*.jsonl.gz"))))
    print(json.dumps({"docs": sum(d for d, _ in done), "bytes": sum(b for _, b in done),
                      "steady_s": time.time() - work_started, "startup_s": work_started - started}))


# -- measuring a process tree --------------------------------------------------------------------
def measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run `cmd`; wall time, stdout, and peak RSS of its whole process tree and of its largest Python
    process (where the tasks run; Spark's JVM, sized by spark.driver_memory, is counted in the tree only)."""
    import psutil
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    peaks = {"tree": 0, "process": 0}

    def sample():
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = [(p.memory_info().rss, p.name()) for p in [root, *root.children(recursive=True)]]
            except psutil.Error:
                continue
            peaks["tree"] = max(peaks["tree"], sum(r for r, _ in rss))
            peaks["process"] = max(peaks["process"], max((r for r, name in rss if "python" in name), default=0))
            time.sleep(0.1)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall_s": time.time() - started, "stdout": out, "peak_tree": peaks["tree"],
            "peak_process": peaks["process"]}


def run_baseline(folder: Path, work: Path, processes: int) -> dict:
    out = work / "baseline-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    m = measured([sys.executable, __file__, "--baseline", str(folder), "--processes", str(processes)],
                 {"BASELINE_OUT": str(out)})
    r = json.loads(m["stdout"].strip().splitlines()[-1])
    return {**m, **r}


def run_curate(folder: Path, work: Path, chunk_mb: int = 32, shards: int = 4) -> dict:
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    config = work / "ingest.yaml"
    config.write_text(json.dumps({"store": str(store), "ingest": {"inputs": [str(folder)], "num_shards": shards,
                                                                   "chunk_mb": chunk_mb}}))
    m = measured([CURATE, "ingest", "--config", str(config)])
    (record,) = [json.loads(p.read_text()) for p in (store / "_runs" / "ingest").glob("*.json")]
    t, c = record["timings"], record["counts"]
    return {**m, "docs": c["input_rows"], "bytes": c["doc_bytes"], "chunks": c["chunks"],
            "steady_s": t["total_s"] - t.get("spark_start_s", 0.0), "startup_s": t.get("spark_start_s", 0.0),
            "stage_s": t["total_s"], "read_s": t["read_s"], "dedup_shard_s": t["dedup_shard_s"],
            "largest_shard": c["largest_shard_bytes"], "smallest_shard": c["smallest_shard_bytes"]}


# -- the WARC line ------------------------------------------------------------------------------
def html_pages(limit: int) -> list[tuple[str, bytes]]:
    """(url, html) of real pages on this machine, else pages generated from the NLTK text with boilerplate."""
    found = []
    for pattern in HTML_DOCS:
        for path in sorted(glob.glob(pattern, recursive=True)):
            if os.path.isfile(path) and os.path.getsize(path) > 4000:
                url = f"https://docs.example.org/{len(found)}/{os.path.basename(path)}"
                found.append((url, Path(path).read_bytes()))
            if len(found) >= limit:
                return found
    if found:
        return found
    from benchmarks.ingest_corpus import pages
    nav = "".join(f"<li><a href='/{w}'>{w.title()}</a></li>" for w in ["home", "news", "about", "contact", "shop"])
    return [(row["url"], (f"<html><head><title>{row['id']}</title></head><body><nav><ul>{nav}</ul></nav><article>"
                          + "".join(f"<p>{p}</p>" for p in row["text"].split("\n") if p.strip())
                          + "</article><footer>Copyright 2024 Example. All rights reserved.</footer></body></html>"
                          ).encode()) for row in pages(NLTK, passes=1)[:limit]]


def write_warc(path: Path, pages: list[tuple[str, bytes]]) -> None:
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for url, body in pages:
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          http_headers=headers))


def warcio_stdlib(path: Path) -> list[str]:
    """The former path: warcio's iterator and the standard-library HTML parser."""
    from warcio.archiveiterator import WARCIterator

    from pipeline.io.html import decode_payload, html_to_text
    texts = []
    with open(path, "rb") as fh:
        for record in WARCIterator(fh):
            if record.rec_type == "response":
                payload = record.content_stream().read()
                texts.append(html_to_text(decode_payload(payload, record.http_headers.get_header("Content-Type"))))
    return texts


def fastwarc_path(path: Path, html_text: str) -> list[str]:
    from pipeline.io import InputFile, RawDoc
    from pipeline.io.warc import read_warc
    f = InputFile(str(path), "warc", options={"html_text": html_text})
    return [r.text for r in read_warc(f) if isinstance(r, RawDoc)]


def warc_line(work: Path, n_pages: int, rounds: int) -> dict:
    pages = html_pages(n_pages)
    path = work / "pages.warc.gz"
    write_warc(path, pages)
    methods = {"warcio + stdlib HTML parser (all text)": warcio_stdlib,
               "FastWARC + stdlib HTML parser (all text)": lambda p: fastwarc_path(p, "all_text"),
               "FastWARC + Resiliparse main content (default)": lambda p: fastwarc_path(p, "main_content")}
    times: dict[str, list[float]] = {m: [] for m in methods}
    texts = {}
    for _ in range(rounds):
        for name, fn in methods.items():
            started = time.time()
            texts[name] = fn(path)
            times[name].append(time.time() - started)
    return {"pages": len(pages), "source": "real" if pages[0][0].startswith("https://docs.") else "generated",
            "mb": sum(len(b) for _, b in pages) / 1e6, "seconds": {m: statistics.median(t) for m, t in times.items()},
            "texts": texts}


# -- printing -------------------------------------------------------------------------------------
def show(results: dict, args) -> None:
    def med(runs, key):
        return statistics.median(r[key] for r in runs)
    base, cur = results["baseline"], results["curate"]
    docs, mb = base[0]["docs"], base[0]["bytes"] / 1e6
    print(f"\ncorpus: {docs:,} documents, {mb:.1f} MB of text, 2 JSON Lines gzip files; "
          f"{args.rounds} interleaved rounds, medians; {os.cpu_count()} cores")
    print(f"{'pipeline':<44}{'wall s':>8}{'steady s':>10}{'docs/s':>9}{'MB/s':>7}{'peak tree':>11}{'peak Python':>13}")
    for name, runs in [("plain Python (gzip+json+fastText+Parquet)", base), ("curate ingest", cur)]:
        print(f"{name:<44}{med(runs, 'wall_s'):>8.1f}{med(runs, 'steady_s'):>10.1f}"
              f"{docs / med(runs, 'steady_s'):>9,.0f}{mb / med(runs, 'steady_s'):>7.1f}"
              f"{med(runs, 'peak_tree') / 2**20:>9,.0f}MB{med(runs, 'peak_process') / 2**20:>11,.0f}MB")
    steady = med(base, "steady_s") / med(cur, "steady_s")
    wall = med(base, "wall_s") / med(cur, "wall_s")
    print(f"curate / baseline throughput: steady {steady:.2f} (target >= 0.65), whole run {wall:.2f}")
    print(f"curate: Spark start-up {med(cur, 'startup_s'):.1f}s; read {med(cur, 'read_s') - med(cur, 'startup_s'):.1f}s"
          f" and dedup+shard {med(cur, 'dedup_shard_s'):.1f}s of work; shards "
          f"{cur[0]['smallest_shard']:,} to {cur[0]['largest_shard']:,} bytes")
    print(f"fixed cost of a tiny input (100 documents, start-up included): {results['tiny']['wall_s']:.1f}s wall "
          f"(target < 10s)")
    if results.get("scales"):
        print(f"\n{'scale':<7}{'docs':>10}{'chunks':>8}{'steady s':>10}{'docs/s':>9}{'vs 1x':>7}{'peak Python':>13}")
        one = results["scales"][0]
        for s, r in zip(args.scales, results["scales"]):
            rate, rate1 = r["docs"] / r["steady_s"], one["docs"] / one["steady_s"]
            print(f"{s}x{'':<5}{r['docs']:>10,}{r['chunks']:>8}{r['steady_s']:>10.1f}{rate:>9,.0f}{rate / rate1:>7.2f}"
                  f"{r['peak_process'] / 2**20:>11,.0f}MB")
    if results.get("warc"):
        w = results["warc"]
        print(f"\nWARC: {w['pages']:,} {w['source']} HTML pages, {w['mb']:.1f} MB, one process")
        first = w["seconds"]["warcio + stdlib HTML parser (all text)"]
        for name, sec in w["seconds"].items():
            chars = sum(len(t) for t in w["texts"][name])
            print(f"  {name:<48}{sec:>7.2f}s {w['pages'] / sec:>8,.0f} pages/s  x{first / sec:.2f}  {chars:>12,} chars")
        every = w["texts"]["FastWARC + stdlib HTML parser (all text)"]
        main = w["texts"]["FastWARC + Resiliparse main content (default)"]
        for i in range(min(2, len(main))):
            print(f"  spot check, page {i}: all text {len(every[i]):,} chars, main content {len(main[i]):,} chars; "
                  f"main content begins: {main[i][:160]!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scales", default="1,2,4", help="corpus multiples for the scaling line ('' for none)")
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--warc-pages", type=int, default=500)
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--baseline", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        baseline_main(args.baseline, args.processes)
        return 0
    if not NLTK.is_dir():
        print(f"skipped: {NLTK} not found (the benchmark's corpus is built from it)")
        return 0
    args.scales = [int(s) for s in args.scales.split(",") if s]
    work = Path(args.work or tempfile.mkdtemp(prefix="curate-ingest-bench-"))
    from benchmarks.ingest_corpus import pages, write_shards
    rows = pages(NLTK)
    one = work / "x1"
    write_shards(rows, one)
    results: dict = {"baseline": [], "curate": []}
    for r in range(args.rounds):
        order = [("baseline", lambda: run_baseline(one, work, args.processes)),
                 ("curate", lambda: run_curate(one, work))]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            results[name].append(fn())
            print(f"round {r + 1} {name}: steady {results[name][-1]['steady_s']:.1f}s, "
                  f"wall {results[name][-1]['wall_s']:.1f}s", flush=True)
    tiny = work / "tiny"
    tiny.mkdir(exist_ok=True)
    (tiny / "tiny.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[:100]))
    results["tiny"] = run_curate(tiny, work)
    results["scales"] = []
    for s in args.scales:
        folder = one if s == 1 else work / f"x{s}"
        if s != 1:
            write_shards(rows, folder, copies=s, shards=2)
        results["scales"].append(results["curate"][0] if s == 1 else run_curate(folder, work))
        print(f"scale {s}x: steady {results['scales'][-1]['steady_s']:.1f}s", flush=True)
    if args.warc_pages:
        results["warc"] = warc_line(work, args.warc_pages, args.rounds)
    show(results, args)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
