import pytest
import yaml

from pydantic import BaseModel

from pipeline.config import Config, apply_overrides, load_config, starter_config
from pipeline.errors import UserError


def test_starter_config_is_valid_and_matches_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(starter_config())
    cfg = load_config(path)
    defaults = Config()
    assert cfg.spark == defaults.spark
    assert cfg.ingest.num_shards == defaults.ingest.num_shards
    assert cfg.ingest.inputs[0].path == "data/raw"
    for section in ("score", "reference", "select", "export", "stages"):
        assert getattr(cfg, section) == getattr(defaults, section), section


def test_starter_config_shows_every_field_with_its_description():
    """Generated from the fields, so a new field cannot be missing from it."""
    text = starter_config()
    lines = text.splitlines()

    def walk(model: BaseModel, indent: int) -> None:
        for name, field in type(model).model_fields.items():
            keyed = [line for line in lines if line.lstrip(" -").startswith(f"{name}:")]
            assert keyed, f"{name} is missing from the starter config"
            if field.description:
                assert " ".join(field.description.split()[:4]) in " ".join(text.split()), name
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                walk(value, indent + 2)
    walk(Config(), 0)
    for section in ("spark", "ingest", "reference", "score", "select", "export"):
        assert f"\n{section}:\n" in text


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"ingest": {"num_shard": 3}}))
    with pytest.raises(UserError) as e:
        load_config(path)
    assert str(path) in str(e.value) and "ingest.num_shard: unknown key" in str(e.value)


def test_wrong_type_names_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"ingest": {"num_shards": "many", "inputs": [{"path": "x", "format": "xml"}]}}))
    with pytest.raises(UserError) as e:
        load_config(path)
    msg = str(e.value)
    assert "ingest.num_shards" in msg and "ingest.inputs.0.format" in msg


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(bad)


def test_overrides_and_shorthand_inputs():
    cfg = Config.model_validate({"ingest": {"inputs": ["a.jsonl", {"path": "b", "format": "wet"}]}})
    assert [i.path for i in cfg.ingest.inputs] == ["a.jsonl", "b"] and cfg.ingest.inputs[1].format == "wet"
    cfg = apply_overrides(cfg, {"spark.master": "spark://h:7077", "ingest.num_shards": 9, "store": None})
    assert cfg.spark.master == "spark://h:7077" and cfg.ingest.num_shards == 9 and cfg.store == "store"
    with pytest.raises(UserError, match="ingest.num_shards"):
        apply_overrides(cfg, {"ingest.num_shards": 0})
