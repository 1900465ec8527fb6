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

__all__ = ["CARD", "STUDENT_FILE", "is_student_dir", "read_card", "student_identity", "write_student_dir"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def write_student_dir(out: Path, student_bytes: bytes, teacher_dir: Path, card: dict) -> Path:
    """Write the student, its card and the teacher's tokenizer into `out`, built aside and swapped in
    whole (a reader never sees half a student). Returns `out`."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / STUDENT_FILE).write_bytes(student_bytes)
    for name in TOKENIZER_FILES:
        if (Path(teacher_dir) / name).is_file():
            shutil.copyfile(Path(teacher_dir) / name, tmp / name)
    card = sidecars.STUDENT_MODEL.validate({**card, "kind": "distilled_student",
                                            "weights_sha256": file_sha256(tmp / STUDENT_FILE)})
    (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n")
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out
