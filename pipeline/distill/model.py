"""A student's directory: the fitted student, its card (curate_model.json: teacher, sample, features,
agreement) and the teacher's tokenizer files (the student counts tokens as its teacher does, and
export finds the tokenizer there). Its scorer identity is read from the card, without loading it
(pipeline.scoring.identity.student_identity: the score stage needs it before any engine exists).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from schemas import sidecars
from pipeline.hashing import file_sha256
from pipeline.scoring.identity import MANIFEST as CARD, STUDENT_FILE, is_student_dir, student_identity
from pipeline.scoring.identity import read_student_card as read_card

__all__ = ["CARD", "STUDENT_FILE", "copy_tokenizer", "is_student_dir", "read_card", "replace_dir", "student_identity",
           "write_student_dir"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def write_student_dir(out: Path, student_bytes: bytes, teacher_dir: Path, card: dict) -> Path:
    """Write the student, its card and the teacher's tokenizer into `out`, swapped in whole. Returns `out`."""
    def fill(tmp: Path) -> None:
        (tmp / STUDENT_FILE).write_bytes(student_bytes)
        copy_tokenizer(teacher_dir, tmp)
        checked = sidecars.STUDENT_MODEL.validate({**card, "kind": "distilled_student",
                                                   "weights_sha256": file_sha256(tmp / STUDENT_FILE)})
        (tmp / CARD).write_text(json.dumps(checked, indent=2) + "\n")
    return replace_dir(out, fill)


def copy_tokenizer(model_dir: Path, out: Path) -> None:
    """The tokenizer files of `model_dir` into `out` (a student counts tokens as its teacher does)."""
    for name in TOKENIZER_FILES:
        if (Path(model_dir) / name).is_file():
            shutil.copyfile(Path(model_dir) / name, Path(out) / name)


def replace_dir(out: Path, fill) -> Path:
    """Build a directory aside (`fill(tmp)`) and swap it in for `out` whole: a reader never sees half of it."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out
