"""The classifier package's imports go one way (data <- fit <- evaluate <- train <- cli): no cycle, at any level.

Static: every ``import``/``from ... import`` of a ``classifier`` module anywhere in a module (also inside
functions, where a cycle can hide) is an edge.  Run alone: ``python -m pytest tests/test_classifier_imports.py -q``.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "classifier"

# Each module may import only modules of a lower layer.
LAYERS: dict[str, int] = {
    "metrics": 0,
    "features": 0,
    "data": 0,
    "familiarity": 0,
    "generic": 0,
    "chathead": 0,
    "model": 1,
    "fit": 2,
    "install": 2,
    "evaluate": 3,
    "promote": 3,
    "train": 4,
    "cli": 5,
    "__init__": 2,
}


def classifier_imports(path: Path) -> set[str]:
    """Names of the classifier modules ``path`` imports (anywhere in the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "classifier" and len(parts) > 1 and (PACKAGE / f"{parts[1]}.py").is_file():
                found.add(parts[1])
            elif name == "classifier":
                found.add("__init__")
    return found - {path.stem}


def import_graph() -> dict[str, set[str]]:
    return {p.stem: classifier_imports(p) for p in sorted(PACKAGE.glob("*.py"))}


def test_every_module_has_a_layer() -> None:
    assert set(import_graph()) == set(LAYERS)


def test_no_import_cycle() -> None:
    graph = import_graph()
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:  # pragma: no cover - the failure message names the cycle
        pytest.fail(f"import cycle in classifier/: {' -> '.join(exc.args[1])}")
    assert order.index("data") < order.index("fit") < order.index("evaluate") < order.index("train") < order.index("cli")


def test_imports_go_down_the_layers() -> None:
    wrong = sorted(
        f"{mod} (layer {LAYERS[mod]}) imports {dep} (layer {LAYERS[dep]})"
        for mod, deps in import_graph().items()
        for dep in deps
        if LAYERS[dep] >= LAYERS[mod]
    )
    assert wrong == []
    # the old cycle's edges are gone
    assert "train" not in import_graph()["evaluate"]
    assert "evaluate" in import_graph()["train"]


def test_detector_sees_function_level_imports(tmp_path: Path) -> None:
    mod = tmp_path / "x.py"
    mod.write_text("def f():\n    from classifier.train import train\n    import classifier.fit\n")
    assert classifier_imports(mod) == {"train", "fit"}


def test_no_private_router_attributes_used_outside_model() -> None:
    """fit/train read the router through its public API (``families``), not ``_heads``."""
    users = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "model.py" and "._heads" in p.read_text())
    assert users == []
