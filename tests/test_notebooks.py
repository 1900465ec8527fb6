"""The notebooks run top to bottom against a real store (their code cells, in one namespace)."""
import json
from pathlib import Path

import pytest

from pipeline.config import Config
from pipeline.ingest.stage import run_ingest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.spark


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(spark, tmp_path, notebook, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_text("".join(json.dumps({"text": f"Page {i} about rivers and tides. " * (i + 1),
                                                     "url": f"https://site{i % 3}.org/{i}"}) + "\n"
                                         for i in range(30)) + "{oops\n")
    store = tmp_path / "store"
    run_ingest(Config.model_validate({"store": str(store), "ingest": {"inputs": [str(raw)], "num_shards": 2}}),
               spark=spark)
    from pipeline.selection.stage import run_select
    run_select(Config.model_validate({"store": str(store), "select": {
        "name": "long", "rules": [{"type": "where", "sql": "n_chars > 300"}]}}))
    monkeypatch.setenv("STORE", str(store))
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    assert cells, f"{notebook.name} has no code"
    namespace: dict = {}
    for cell in cells:
        exec(compile("".join(cell["source"]), f"{notebook.name}", "exec"), namespace)
    assert set(namespace["by_domain"]["domain"]) == {"site0.org", "site1.org", "site2.org"}
    assert namespace["rejected"]["reason"].tolist() == ["malformed_json"]
    assert namespace["runs"]["status"].tolist() == ["finished", "finished"]
    kept = namespace["kept_by_domain"]
    assert kept["docs"].sum() == 30 and 0 < kept["kept"].sum() < 30
    assert namespace["drop_reasons"]["reason"].tolist() == ["where:0"]
