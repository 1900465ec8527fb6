"""Engine defaults, worked out in one place for every engine, and the scorer identity of a config."""
import json

import pytest

from pipeline.config import ScoreConfig
from pipeline.errors import UserError
from pipeline.scoring.identity import (MAX_TOKENS_CAP, default_dtype, engine_settings, resolve_engine_settings,
                                       tokenizer_hash)


def _model_dir(path, context: int):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"num_attention_heads": 2, "hidden_size": 64,
                                                  "max_position_embeddings": context}))
    return path


def test_defaults_follow_the_device_and_the_model(tmp_path):
    assert default_dtype("cpu") == "float32" and default_dtype("cuda:1") == "bfloat16"
    short, long = _model_dir(tmp_path / "short", 256), _model_dir(tmp_path / "long", 8192)
    assert engine_settings(short, "cpu", None, None, "first_n", None) == ("float32", 256)
    assert engine_settings(long, "cuda", None, None, "first_n", None) == ("bfloat16", MAX_TOKENS_CAP)
    assert engine_settings(long, "cpu", "float16", 64, "sliding", 32) == ("float16", 64)
    cfg = resolve_engine_settings(ScoreConfig(model=str(short)))
    assert (cfg.dtype, cfg.max_tokens) == ("float32", 256)
    assert resolve_engine_settings(ScoreConfig(service_url="http://x")).max_tokens is None  # the service decides


def test_bad_settings_are_one_clear_message(tmp_path):
    model = _model_dir(tmp_path / "m", 256)
    with pytest.raises(UserError, match="dtype must be one of"):
        engine_settings(model, "cpu", "float64", None, "first_n", None)
    with pytest.raises(UserError, match="scoring windows: sliding windows need 1 <= stride < max_tokens"):
        engine_settings(model, "cpu", None, 64, "sliding", 64)
    with pytest.raises(UserError, match="not a model directory"):
        engine_settings(tmp_path / "nothing", "cpu", None, None, "first_n", None)


def test_tokenizer_hash_changes_with_the_tokenizer_files(tmp_path):
    model = _model_dir(tmp_path / "m", 256)
    empty = tokenizer_hash(model)
    (model / "tokenizer.json").write_text("{}")
    with_tokenizer = tokenizer_hash(model)
    (model / "tokenizer_config.json").write_text('{"bos_token": "<s>"}')
    assert len({empty, with_tokenizer, tokenizer_hash(model)}) == 3
