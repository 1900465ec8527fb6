"""The starter config of `curate init`, written from the fields' defaults and descriptions."""
from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from pipeline.config import Config

_COMMENT_COLUMN = 34


def starter_config() -> str:
    """A commented YAML config with every key at its default (and an example input), generated from
    the fields' defaults and descriptions, so that it always matches them."""
    lines = [f"# {line}" for line in _wrap(" ".join(_docstring(Config)) +
                                           ' The values are the defaults, except those marked "example".')]
    _section(Config(), 0, lines)
    return "\n".join(lines) + "\n"


def _docstring(model: type[BaseModel]) -> list[str]:
    return [" ".join(line.split()) for line in (model.__doc__ or "").strip().split("\n\n")[0:1] if line]


def _section(value: BaseModel, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for name, field in type(value).model_fields.items():
        current = getattr(value, name)
        extra = field.json_schema_extra or {}
        if isinstance(current, BaseModel) or indent == 0:
            # a section, or a top-level key: a blank line, then the comment above it
            lines.append("")
            about = _docstring(type(current)) if isinstance(current, BaseModel) else []
            lines += [f"{pad}# {line}" for line in _wrap(" ".join(about + [field.description or ""]))]
            if isinstance(current, BaseModel):
                lines.append(f"{pad}{name}:")
                _section(current, indent + 2, lines)
            else:
                lines.append(f"{pad}{name}: {_yaml(current)}")
        elif "example" in extra:
            lines += _with_comment(f"{pad}{name}:", field.description)
            for item in extra["example"]:
                entry = getattr(type(value).model_validate({name: [item]}), name)[0]
                for i, (key, sub_field) in enumerate(type(entry).model_fields.items()):
                    sub = getattr(entry, key)
                    prefix = f"{pad}  - " if i == 0 else f"{pad}    "
                    if isinstance(sub, BaseModel):
                        lines += _with_comment(f"{prefix}{key}:", sub_field.description)
                        _section(sub, indent + 6, lines)
                    else:
                        lines += _with_comment(f"{prefix}{key}: {_yaml(sub)}",
                                               "example" if i == 0 else sub_field.description)
        else:
            lines += _with_comment(f"{pad}{name}: {_yaml(current)}", field.description)
            for example in extra.get("examples", []):
                lines.append(f"{pad}#  - {_yaml(example)}")


def _wrap(text: str | None, width: int = 98) -> list[str]:
    words, out, line = (text or "").split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return out + ([line] if line else [])


def _with_comment(text: str, comment: str | None) -> list[str]:
    """`text  # comment`, the comment aligned and wrapped onto comment lines below."""
    if not comment:
        return [text]
    column = max(_COMMENT_COLUMN, len(text) + 2)
    chunks = _wrap(comment, width=max(40, 118 - column))
    return [f"{text.ljust(column - 1)} # {chunks[0]}"] + [f"{' ' * (column - 1)} # {c}" for c in chunks[1:]]


_PLAIN = re.compile(r"[A-Za-z0-9_./<>-]+")


def _yaml(value: Any) -> str:
    """A value in YAML flow style (JSON for anything a plain scalar would misread)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, str) and _PLAIN.fullmatch(value) and value.lower() not in (
            "null", "true", "false", "yes", "no", "on", "off", "~") and not value[0].isdigit():
        return value
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return json.dumps(value)
