"""The shape of the library, drawn from its imports (lazy ones inside functions included): every import
goes down a floor or stays on its own floor, there is no circle, and no module grows past ~500 lines."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Lowest first. A module may import its own floor or those below, never one above.
FLOORS = [
    ("pipeline", "pipeline.errors", "pipeline.hashing", "pipeline.logs", "schemas"),
    ("pipeline.config", "pipeline.store", "pipeline.lock", "pipeline.io", "pipeline.sql", "pipeline.spark"),
    ("pipeline.stage",),
    ("pipeline.ingest", "pipeline.train", "pipeline.scoring", "pipeline.selection", "pipeline.export",
     "pipeline.distill", "pipeline.correlations", "pipeline.rating", "pipeline.mixing", "pipeline.evaluate"),
    ("pipeline.run",),
    ("pipeline.demo",),
    ("pipeline.console", "pipeline.cli"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for root in ("pipeline", "schemas"):
        for path in (REPO / root).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _floor(module: str) -> int:
    best = None
    for i, floor in enumerate(FLOORS):
        for prefix in floor:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    assert best is not None, f"{module} is on no floor: add it to FLOORS"
    return best[0]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, modules) - {m} - {p for p in modules if m.startswith(p + ".")} for m, p in modules.items()}


def test_imports_never_run_back_up_a_floor():
    upward = [f"{m} (floor {_floor(m)}) imports {d} (floor {_floor(d)})"
              for m, deps in _graph().items() for d in deps if _floor(d) > _floor(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            assert state.get(d) != 1, "circle: " + " -> ".join(path + [m, d])
            if d not in state:
                visit(d, path + [m])
        state[m] = 2
    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_modules_stay_small():
    sizes = {m: len(p.read_text().splitlines()) for m, p in _modules().items()}
    assert sizes["pipeline.cli"] <= 350, sizes["pipeline.cli"]
    assert not {m: n for m, n in sizes.items() if n > 500}


def test_every_stage_is_a_package_with_a_stage_driver():
    from pipeline.run import STAGES
    for stage in STAGES.values():
        package, _, module = stage.report.__module__.rpartition(".")
        assert module == "stage" and stage.summary_row.__module__ == stage.report.__module__, stage.name
        assert (REPO / package.replace(".", "/") / "__init__.py").is_file(), stage.name
