"""Where the details of a failure go: one log file per process, so that the terminal shows a one-line
error and the path of the file that holds the tracebacks (Python's, and Spark's JVM log).

The folder is $CURATE_LOG_DIR, else ~/.cache/curate/logs (else the temporary folder)."""
from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path

_path: Path | None = None
_written = False


def log_file() -> Path:
    """This process's log file (its folder is created; the file appears when something is logged)."""
    global _path
    if _path is None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        for folder in (os.environ.get("CURATE_LOG_DIR"), Path.home() / ".cache" / "curate" / "logs",
                       Path(tempfile.gettempdir()) / "curate-logs"):
            if not folder:
                continue
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
            except OSError:
                continue
            if os.access(folder, os.W_OK):
                _path = Path(folder) / f"curate-{stamp}-{os.getpid()}.log"
                break
        else:
            _path = Path(tempfile.gettempdir()) / f"curate-{stamp}-{os.getpid()}.log"
    return _path


def log_detail(title: str, text: str) -> Path:
    """Append a titled block (a traceback, a failed Spark job's error) to the log; returns its path."""
    global _written
    path = log_file()
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {title}\n{text.rstrip()}\n\n")
    _written = True
    return path


def log_exception(error: BaseException, title: str = "error") -> Path:
    return log_detail(title, "".join(traceback.format_exception(error)))


def details_logged() -> bool:
    """Whether this process wrote details to its log file (Spark's JVM log counted)."""
    return _written or (_path is not None and _path.exists() and _path.stat().st_size > 0)
