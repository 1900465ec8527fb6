"""One writer at a time per store: `_lock.json` at the store root names the stage run that holds it.

Every stage run that writes takes the lock first (`StageRun`), so two runs started together can never
interleave their commits: the second fails at once with a message naming the first (or waits, with
`wait_s`). A lock whose holder is gone is stale and is taken over:
- on the holder's host, its process no longer exists (a run killed with -9);
- from anywhere, its heartbeat (rewritten every HEARTBEAT_S while the holder runs) is older than
  STALE_AFTER_S (a holder on another machine that died).

Taking the lock is an exclusive create (O_EXCL) on a local store. Object stores have no exclusive
create in pyarrow.fs: there the lock is written, then read back to check that this run won.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from pipeline.errors import UserError
from pipeline.store import Store, utc_now

LOCK_FILE = "_lock.json"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


_HELD: dict[str, "StoreLock"] = {}  # store uri -> the lock this process holds on it


class StoreLock:
    """`with StoreLock(store, stage, run_id):` holds the store's writer lock for the block. Within the
    process that holds it, taking it again is a no-op (a stage that runs other stages, e.g. distill
    running score, holds it once)."""

    def __init__(self, store: Store, stage: str, run_id: str, wait_s: float = 0.0):
        self.store, self.wait_s = store, wait_s
        self.holder = {"stage": stage, "run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                       "token": uuid.uuid4().hex, "started_at": utc_now(), "heartbeat": time.time()}
        self.taken_over: dict | None = None  # the stale holder this lock replaced, if any
        self.nested = False                  # this process held it already: nothing to take or give back
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _local(self) -> bool:
        return isinstance(self.store.fs, pafs.LocalFileSystem)

    # -- taking and giving back ----------------------------------------------------------------
    def acquire(self) -> "StoreLock":
        if self.store.uri in _HELD:
            self.nested = True
            return self
        deadline = time.time() + self.wait_s
        while True:
            if self._create():
                self._thread = threading.Thread(target=self._heartbeat, daemon=True, name="curate-lock")
                self._thread.start()
                _HELD[self.store.uri] = self
                return self
            current = self.read(self.store)
            if current is None:
                continue  # released between our attempt and the read
            if self.is_stale(current):
                self._break(current)
                continue
            if time.time() >= deadline:
                raise UserError(f"store {self.store.uri} is in use by {describe(current)}; wait for it to "
                                f"finish (a lock left by a killed run is taken over automatically)")
            time.sleep(min(1.0, max(0.05, deadline - time.time())))

    def release(self) -> None:
        if self.nested:
            return
        if _HELD.get(self.store.uri) is self:
            del _HELD[self.store.uri]
        self._stop.set()
        if self._thread:
            self._thread.join()
        current = self.read(self.store)
        if current and current.get("token") == self.holder["token"]:
            self.store.delete(LOCK_FILE)

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # -- the lock file -------------------------------------------------------------------------
    @staticmethod
    def read(store: Store) -> dict | None:
        try:
            return store.read_json(LOCK_FILE)
        except (FileNotFoundError, json.JSONDecodeError):  # absent, or being written right now
            return None

    @staticmethod
    def is_stale(holder: dict, now: float | None = None) -> bool:
        if holder.get("host") == socket.gethostname() and not process_alive(int(holder.get("pid", -1))):
            return True
        return (now or time.time()) - float(holder.get("heartbeat", 0)) > STALE_AFTER_S

    def _blob(self) -> bytes:
        return json.dumps(self.holder, indent=2, sort_keys=True).encode()

    def _create(self) -> bool:
        """Create the lock file only if there is none; True when this run now holds the lock."""
        self.store.fs.create_dir(self.store.base, recursive=True)
        if self._local:  # write a whole file aside, then link it in: link fails if the lock exists
            aside = Path(self.store.path(f".tmp-{self.holder['token']}{LOCK_FILE}"))
            aside.write_bytes(self._blob())
            try:
                os.link(aside, self.store.path(LOCK_FILE))
                return True
            except FileExistsError:
                return False
            finally:
                aside.unlink()
        if self.store.exists(LOCK_FILE):
            return False
        self._write()
        time.sleep(0.5)  # let a concurrent writer's object land, then see who won
        current = self.read(self.store)
        return bool(current) and current.get("token") == self.holder["token"]

    def _write(self) -> None:
        blob = self._blob()

        def write(path):
            with self.store.fs.open_output_stream(path) as f:
                f.write(blob)
        self.store.atomic_write((LOCK_FILE,), write)

    def _break(self, stale: dict) -> None:
        """Remove a stale lock, unless another run replaced it in the meantime."""
        if self._local:
            aside = self.store.path(f".stale-{uuid.uuid4().hex}{LOCK_FILE}")
            try:
                os.rename(self.store.path(LOCK_FILE), aside)
            except FileNotFoundError:
                return  # another run broke it first
            moved = json.loads(Path(aside).read_text() or "{}")
            try:
                if moved.get("token") != stale.get("token"):  # a fresh lock: put it back, unless one exists
                    try:
                        os.link(aside, self.store.path(LOCK_FILE))
                    except FileExistsError:
                        pass
                    return
            finally:
                os.unlink(aside)
        else:
            self.store.delete(LOCK_FILE)
        self.taken_over = stale

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            current = self.read(self.store)
            if current and current.get("token") == self.holder["token"]:
                self.holder["heartbeat"] = time.time()
                self._write()


def describe(holder: dict) -> str:
    return (f"{holder.get('stage')} run {holder.get('run_id')} (pid {holder.get('pid')} on "
            f"{holder.get('host')}, started {holder.get('started_at')})")
