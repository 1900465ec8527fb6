"""What identifies a scorer, and the engine defaults it is resolved with.

A `ScorerIdentity` holds everything that changes a document's score (the model's weights and
tokenizer, dtype, engine, window length and truncation); its `scorer_id` names the scores partition
`scores/scorer=<id>/`. It is read from a model directory's files without loading weights, so the
score stage knows its id (and what is already scored) before any engine starts. The defaults for
the settings a user leaves unset (`dtype`, `max_tokens`) are worked out here, for every engine.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.config import ScoreConfig
from pipeline.errors import UserError
from pipeline.hashing import file_sha256, short_digest
from pipeline.store import code_version

TRUNCATIONS = ("first_n", "sliding")
BACKENDS = ("torch", "vllm", "student")   # student: a distilled model (pipeline.distill)
DTYPES = ("float32", "bfloat16", "float16")
MANIFEST = "curate_model.json"   # how a model directory was made (schemas.sidecars.MODEL_CARDS)
MAX_TOKENS_CAP = 1024            # the default window: the model's context, at most this


# --------------------------------------------------------------------------- engine defaults

def default_dtype(device: str) -> str:
    """float32 on CPU (bf16 matmuls are slow there), bfloat16 on a GPU."""
    return "bfloat16" if device.startswith("cuda") else "float32"


def default_max_tokens(model_dir: str | Path) -> int:
    """The scoring window when none is given: the model's context length, at most MAX_TOKENS_CAP."""
    context = describe_model(model_dir).get("max_position_embeddings") or MAX_TOKENS_CAP
    return min(MAX_TOKENS_CAP, int(context))


def resolve_engine_settings(cfg: ScoreConfig) -> ScoreConfig:
    """`cfg` with dtype and max_tokens filled in from the device and the model (a service decides
    its own)."""
    if cfg.service_url or (cfg.model and is_student_dir(cfg.model)):
        return cfg
    dtype, max_tokens = engine_settings(Path(cfg.model), cfg.device, cfg.dtype, cfg.max_tokens, cfg.truncation,
                                        cfg.stride)
    return cfg.model_copy(update={"dtype": dtype, "max_tokens": max_tokens})


def engine_settings(model_dir: Path, device: str, dtype: str | None, max_tokens: int | None, truncation: str,
                    stride: int | None) -> tuple[str, int]:
    """(dtype, max_tokens) an engine runs `model_dir` with: the defaults filled in and the settings
    checked, with one message per mistake, before any weights are loaded."""
    if not (Path(model_dir) / "config.json").is_file():
        raise UserError(f"{model_dir}: not a model directory (no config.json); "
                        "`curate models fetch smollm2-135m` or `curate models train-reference` write one")
    dtype = dtype or default_dtype(device)
    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    max_tokens = max_tokens or default_max_tokens(model_dir)
    try:
        validate_truncation(max_tokens, truncation, stride)
    except ValueError as e:
        raise UserError(f"scoring windows: {e}") from None
    return dtype, max_tokens


def validate_truncation(max_tokens: int, truncation: str, stride: int | None) -> None:
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2 (one context token and one predicted), got {max_tokens}")
    # stride < max_tokens: every later window needs at least one token of context before the
    # first token it scores (context = max_tokens - stride).
    if truncation == "sliding" and (stride is None or not 1 <= stride < max_tokens):
        raise ValueError(f"sliding windows need 1 <= stride < max_tokens ({max_tokens}), got {stride}")


# --------------------------------------------------------------------------- the identity

@dataclass(frozen=True)
class ScorerIdentity:
    """Everything that changes a document's score; `scorer_id` names the scores/ partition.

    `stride` only matters for sliding windows and is stored as None for first_n, so two first_n
    scorers that differ only in an unused stride share one id. `code_version` is recorded but kept
    out of the id: a refactor that does not change the numbers must not orphan old scores.
    """
    model_name: str
    weights_sha256: str
    tokenizer: str                      # name@hash of the tokenizer files (includes its BOS choice)
    dtype: str                          # float32 | bfloat16 | float16
    backend: Literal["torch", "vllm", "student"]
    max_tokens: int                     # the window length in tokens, BOS included
    truncation: Literal["first_n", "sliding"] = "first_n"
    stride: int | None = None           # sliding only: how far each window advances
    distilled: dict | None = None       # a student: its teacher's id, sample, features, settings and seed
    code_version: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        validate_truncation(self.max_tokens, self.truncation, self.stride)
        if self.truncation == "first_n":
            object.__setattr__(self, "stride", None)

    @property
    def scorer_id(self) -> str:
        """16 hex digits of sha256 over the canonical JSON of every field but code_version (and
        `distilled` when it is None, so a language model's id is the same as before students)."""
        return short_digest({k: v for k, v in asdict(self).items()
                             if k != "code_version" and not (k == "distilled" and v is None)})

    @property
    def truncation_label(self) -> str:
        """`first_n:<max_tokens>` or `sliding:<max_tokens>:<stride>`, as in the scores table."""
        if self.truncation == "first_n":
            return f"first_n:{self.max_tokens}"
        return f"sliding:{self.max_tokens}:{self.stride}"

    def to_dict(self) -> dict[str, Any]:
        """The full identity, for `scores/scorer=<id>/_scorer.json` (schemas.sidecars.SCORER)."""
        out = {**asdict(self), "scorer_id": self.scorer_id, "truncation_label": self.truncation_label}
        if self.distilled is None:
            del out["distilled"]
        return out


def scorer_identity(model_dir: str | Path, backend: str, dtype: str, max_tokens: int, truncation: str,
                    stride: int | None) -> ScorerIdentity:
    """The ScorerIdentity of scoring `model_dir` this way (read from the files; no weights loaded)."""
    name = model_name(model_dir)
    return ScorerIdentity(model_name=name, weights_sha256=weights_sha256(model_dir),
                          tokenizer=f"{name}@{tokenizer_hash(model_dir)}", dtype=dtype, backend=backend,
                          max_tokens=max_tokens, truncation=truncation, stride=stride, code_version=code_version())


def local_identity(cfg: ScoreConfig) -> ScorerIdentity:
    """The identity an in-process engine scoring with `cfg` will have, without loading the weights."""
    if not cfg.model:
        raise UserError("score: set score.model (a model directory) or score.service_url")
    if is_student_dir(cfg.model):
        return student_identity(cfg.model)
    if not (Path(cfg.model) / "config.json").is_file():
        raise UserError(f"score.model {cfg.model!r} is not a model directory (no config.json); "
                        "`curate models fetch smollm2-135m` or `curate models train-reference` write one")
    cfg = resolve_engine_settings(cfg)
    return scorer_identity(cfg.model, cfg.engine, cfg.dtype, cfg.max_tokens, cfg.truncation, cfg.stride)


# --------------------------------------------------------------------------- distilled students

STUDENT_FILE = "student.npz"   # what makes a directory a student's (pipeline.distill.model writes it)


def is_student_dir(model_dir: str | Path) -> bool:
    return (Path(model_dir) / STUDENT_FILE).is_file()


def read_student_card(model_dir: str | Path) -> dict:
    """A student directory's curate_model.json (schemas.sidecars.STUDENT_MODEL)."""
    manifest = Path(model_dir) / MANIFEST
    if not manifest.is_file():
        raise UserError(f"{model_dir}: a student directory without its {MANIFEST}; run `curate distill` again")
    return json.loads(manifest.read_text())


def student_identity(model_dir: str | Path) -> ScorerIdentity:
    """The identity of scoring with the distilled student in `model_dir`, from its card alone: the
    teacher's tokenizer and window, backend `student`, and what it was distilled from in `distilled`."""
    card = read_student_card(model_dir)
    teacher = card["teacher"]
    return ScorerIdentity(
        model_name=card["name"], weights_sha256=card["weights_sha256"], tokenizer=teacher["tokenizer"],
        dtype="float32", backend="student", max_tokens=int(teacher["max_tokens"]), truncation="first_n",
        distilled={"teacher": teacher["scorer_id"], "teacher_model": teacher["model_name"], "target": card["target"],
                   "sample": card["sample"], "features": card["features"]},
        code_version=code_version())


# --------------------------------------------------------------------------- model directories

def weights_sha256(model_dir: str | Path) -> str:
    """sha256 of the model's weights: of the file itself when there is one `*.safetensors`,
    else of the lines "<file name> <sha256>\\n" over all of them in name order."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir}: no *.safetensors weights found (is it a model directory?)")
    if len(files) == 1:
        return file_sha256(files[0])
    return hashlib.sha256("".join(f"{f.name} {file_sha256(f)}\n" for f in files).encode()).hexdigest()


def tokenizer_hash(model_dir: str | Path) -> str:
    """sha256 (16 hex) over the tokenizer files present; they hold the vocabulary and the BOS."""
    h = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        path = Path(model_dir) / name
        if path.is_file():
            h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def model_name(model_dir: str | Path) -> str:
    """The name in curate_model.json, else the directory's name."""
    manifest = Path(model_dir) / MANIFEST
    if manifest.is_file():
        name = json.loads(manifest.read_text()).get("name")
        if name:
            return str(name)
    return Path(model_dir).resolve().name


def describe_model(model_dir: str | Path) -> dict[str, Any]:
    """Shape facts of a HF model directory, read from config.json and the safetensors headers
    (no weights loaded): name, architecture, params (tied weights counted once), layers, hidden,
    heads, kv_heads, head_dim, vocab, max_position_embeddings."""
    d = Path(model_dir)
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{d}: no config.json (is it a Hugging Face model directory?)")
    cfg = json.loads(cfg_path.read_text())
    heads = cfg.get("num_attention_heads")
    return {
        "name": model_name(d),
        "architecture": (cfg.get("architectures") or [cfg.get("model_type")])[0],
        "params": sum(_safetensors_numels(f) for f in sorted(d.glob("*.safetensors"))),
        "layers": cfg.get("num_hidden_layers"),
        "hidden": cfg.get("hidden_size"),
        "heads": heads,
        "kv_heads": cfg.get("num_key_value_heads", heads),
        "head_dim": cfg.get("head_dim") or (cfg["hidden_size"] // heads if heads else None),
        "vocab": cfg.get("vocab_size"),
        "max_position_embeddings": cfg.get("max_position_embeddings"),
    }


def _safetensors_numels(path: Path) -> int:
    # The format: 8-byte little-endian header length, then a JSON header of name -> shape.
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return sum(int(np.prod(v["shape"], dtype=np.int64)) for k, v in header.items() if k != "__metadata__")
