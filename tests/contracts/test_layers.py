"""The layers of mechref, enforced: a module may import its own layer and the layers below it,
never a layer above (a change to an analysis must never be a change to the library under it).

Every ``import`` statement counts, also those inside functions (a deferred import is still a
dependency) and under ``TYPE_CHECKING``. The layers, bottom to top, are also the table of docs/explanations/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "mechref"

# Bottom to top. A module belongs to the layer of the longest name listed that prefixes it.
LAYERS: list[tuple[str, ...]] = [
    ("mechref.errors", "mechref.version"),
    ("mechref.framework", "mechref.rates"),
    ("mechref.model", "mechref.generation", "mechref.data"),
    (
        "mechref.capture",
        "mechref.interventions",
        "mechref.row_interventions",
        "mechref.attribution",
        "mechref.judges",
        "mechref.scoring",
        "mechref.edits",
    ),
    ("mechref.directions", "mechref.attacks"),
    ("mechref.report",),
    ("mechref.analyses",),
    ("mechref", "mechref.cli", "mechref.testing", "mechref.__main__"),
]


def layer_of(module: str) -> int:
    best, level = "", -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, level = name, index
    if level < 0:
        raise KeyError(f"{module} is in no layer: add it to LAYERS (and to the layer table of docs/explanations/architecture.md)")
    return level


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every mechref import in ``source`` (relative ones resolved)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "mechref"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "mechref":
                found.append((node.lineno, target))
    return found


def upward_imports(root: Path) -> list[str]:
    """Every import of a higher layer, as ``file:line: a (layer i) imports b (layer j)``."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        for line, target in imports_of(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
            if layer_of(target) > layer_of(module):
                problems.append(
                    f"{path.relative_to(root.parent)}:{line}: {module} (layer {layer_of(module)}) imports "
                    f"{target} (layer {layer_of(target)})"
                )
    return problems


def test_no_module_imports_a_higher_layer():
    assert upward_imports(ROOT) == []


def test_every_module_has_a_layer():
    for path in ROOT.rglob("*.py"):
        layer_of(module_name(path, ROOT))


def test_an_upward_import_is_caught(tmp_path):
    package = tmp_path / "mechref"
    (package / "framework").mkdir(parents=True)
    (package / "framework" / "io.py").write_text("import json\nfrom mechref.errors import MechrefError\n")
    assert upward_imports(package) == []
    # A deferred import inside a function counts too.
    (package / "framework" / "io.py").write_text("def f():\n    from mechref.analyses.damage import run_damage\n")
    assert upward_imports(package) == [
        "mechref/framework/io.py:2: mechref.framework.io (layer 1) imports mechref.analyses.damage (layer 6)"
    ]
    # The same layer, and a relative import downwards, pass.
    (package / "framework" / "io.py").write_text("from .settings import option\nfrom mechref.rates import Rate\n")
    assert upward_imports(package) == []


@pytest.mark.parametrize(("module", "layer"), [("mechref.model", 2), ("mechref.model.bridge.fence", 2), ("mechref", 7)])
def test_layer_of_takes_the_longest_prefix(module, layer):
    assert layer_of(module) == layer


def test_every_exception_class_lives_in_errors():
    """One place to find what mechref raises."""
    elsewhere = []
    for path in ROOT.rglob("*.py"):
        if path.name == "errors.py" and path.parent == ROOT:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            # Private control-flow exceptions that never leave their module are exempt.
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = [ast.unparse(b) for b in node.bases]
                if node.name.endswith(("Error", "Exception")) or any(b.endswith(("Error", "Exception")) for b in bases):
                    elsewhere.append(f"{path.relative_to(ROOT.parent)}: {node.name}")
    assert elsewhere == []


def test_version_is_defined_once_in_its_own_module():
    defined = [
        str(path.relative_to(ROOT.parent))
        for path in ROOT.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets)
    ]
    assert defined == ["mechref/version.py"]


def test_at_most_a_dozen_flat_modules():
    flat = sorted(p.name for p in ROOT.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(flat) <= 12, flat
