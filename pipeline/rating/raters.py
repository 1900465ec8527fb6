"""The raters of a store: each `ratings/rater=<rater_id>/` folder that holds rating parts, with the rater's
identity beside them in `_rater.json` (`schemas.sidecars.RATER`). Selection names a rater by its id or
its model name, or takes the store's only one.
"""
from __future__ import annotations

import pyarrow.fs as pafs

from pipeline.errors import UserError
from pipeline.store import Store


def store_raters(store: Store) -> dict[str, dict]:
    """rater_id -> identity (`_rater.json`, plus rater_id) of every rater with rating parts, by id."""
    out = {}
    info = store.fs.get_file_info(pafs.FileSelector(store.path("ratings"), allow_not_found=True))
    for entry in sorted(info, key=lambda i: i.base_name):
        if entry.type == pafs.FileType.Directory and entry.base_name.startswith("rater="):
            rid = entry.base_name.split("=", 1)[1]
            if any(f.startswith("part-") for f in store.list_files("ratings", entry.base_name, suffix=".parquet")):
                ident = store.read_json("ratings", entry.base_name, "_rater.json") \
                    if store.exists("ratings", entry.base_name, "_rater.json") else {}
                out[rid] = {**ident, "rater_id": rid}
    return out


def describe(raters: dict[str, dict]) -> str:
    """`id (model_name, decoding), ...`, for messages that list the raters."""
    return ", ".join(f"{rid} ({r.get('model_name', '?')}, {r.get('decoding', '?')})" for rid, r in raters.items())


def resolve_rater(store: Store, wanted: str | None, preferred: str | None = None) -> dict:
    """The identity of the rater `wanted` names (its id, else its model name); when `wanted` is None, of
    `preferred` (a rater id: the rate stage's students) if it has ratings, else of the store's only rater.
    A UserError that lists the store's raters when there is no such one."""
    raters = store_raters(store)
    if not raters:
        raise UserError(f"no ratings in {store.uri} (ratings/rater=<id>/part-*.parquet): rate the store first "
                        f"(`curate rate`)")
    if wanted is None:
        if preferred in raters:
            return raters[preferred]
        if len(raters) == 1:
            return next(iter(raters.values()))
        raise UserError(f"{store.uri} has {len(raters)} raters: name one in the rating rule (rater: an id or "
                        f"model name): {describe(raters)}")
    if wanted in raters:
        return raters[wanted]
    matches = [r for r in raters.values() if r.get("model_name") == wanted]
    if len(matches) == 1:
        return matches[0]
    raise UserError(f"rater {wanted!r} {'is ambiguous (give its id)' if matches else 'has no ratings'} in "
                    f"{store.uri}; raters: {describe(raters)}")
