"""Where modules and commands went when mechref's layout changed: importing an old module path
names the new one, and running an old command path (``python -m ...``) says in one line which
command replaced it (exit code 2), instead of a bare ``No module named ...``.

>>> import importlib
>>> try:
...     importlib.import_module("mechref.refusal.store")
... except ModuleNotFoundError as error:
...     print(error)
mechref.refusal.store moved to mechref.directions.store
>>> try:
...     from mechref.refusal import run_refusal_direction
... except ModuleNotFoundError as error:
...     print(error)
mechref.refusal moved to mechref.analyses.refusal_direction; import run_refusal_direction from there
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import CodeType, ModuleType

# Old command module -> the command that replaced it.
MOVED_COMMANDS = {
    "mechref.judge": "python -m mechref.analyses.judge",
    "mechref.analyses.cosine_parallelism": "python -m mechref.analyses.multilingual --parts cosine",
    "mechref.analyses.silhouette": "python -m mechref.analyses.multilingual --parts audit silhouette",
}

# Old module -> new module (packages: the old package name maps to the new package).
MOVED_MODULES = {
    "mechref.hooks": "mechref.capture",
    "mechref.io": "mechref.framework.io",
    "mechref.ownership": "mechref.framework.ownership",
    "mechref.settings": "mechref.framework.settings",
    "mechref.runs": "mechref.framework.runs",
    "mechref.preflight": "mechref.framework.checks",
    "mechref.cache": "mechref.framework.paths",
    "mechref.models": "mechref.model.loading",
    "mechref.embedded": "mechref.model.embedded",
    "mechref.gguf_convert": "mechref.model.gguf",
    "mechref.devices": "mechref.model.devices",
    "mechref.chat": "mechref.model.chat",
    "mechref.batching": "mechref.model.batching",
    "mechref.prefix": "mechref.model.prefix",
    "mechref.logits": "mechref.model.logits",
    "mechref.grouped_attention": "mechref.model.bridge.attention",
    "mechref.lean_bridge": "mechref.model.bridge.norms",
    "mechref.strengths": "mechref.edits.strengths",
    "mechref.probe_judge": "mechref.judges.probe",
    "mechref.mined": "mechref.judges.mined",
    "mechref.judge_validation": "mechref.judges.validation",
    "mechref.completions": "mechref.judges.completions",
    "mechref.degenerate": "mechref.judges.degenerate",
    "mechref.reporting": "mechref.report.pages",
    "mechref.plotting": "mechref.report.plotting",
    "mechref.palette": "mechref.report.palette",
    "mechref.overview": "mechref.report.overview",
    "mechref.pagecheck": "mechref.report.pagecheck",
    "mechref.refusal.candidates": "mechref.directions.candidates",
    "mechref.refusal.store": "mechref.directions.store",
    "mechref.refusal.orthogonalize": "mechref.edits.orthogonalize",
    "mechref.attacks.search": "mechref.analyses.gcg",
    "mechref.exports.lora": "mechref.edits.lora",
    "mechref.exports.gguf": "mechref.edits.gguf",
    "mechref.exports.control_vector": "mechref.edits.control_vector",
    "mechref.exports.llamacpp": "mechref.edits.llamacpp",
    "mechref.exports": "mechref.analyses.export (the command) and mechref.edits (the file formats)",
    "mechref.refusal": "mechref.analyses.refusal_direction",
    "mechref.hijack": "mechref.analyses.suffix_hijack",
    "mechref.multilingual": "mechref.analyses.multilingual",
    "mechref.categories": "mechref.analyses.categories",
    "mechref.damage": "mechref.analyses.damage",
    "mechref.quickstart": "mechref.analyses.quickstart",
    "mechref.optimize": "mechref.analyses.optimize_edit",
}

# The old names above that were packages.
OLD_PACKAGES = {
    f"mechref.{name}"
    for name in ("refusal", "hijack", "multilingual", "categories", "damage", "quickstart", "optimize", "exports")
}


def _where(fullname: str) -> str | None:
    if fullname in MOVED_MODULES:
        return f"{fullname} moved to {MOVED_MODULES[fullname]}"
    parent = fullname.rpartition(".")[0]
    if parent in MOVED_MODULES and "(" not in MOVED_MODULES[parent]:
        return (
            f"{fullname} moved to {MOVED_MODULES[parent]}.{fullname.rpartition('.')[2]} ({parent} is now {MOVED_MODULES[parent]})"
        )
    return None


class _MovedLoader(importlib.abc.InspectLoader):
    """Raises on import (naming the new module) and, run as ``python -m``, exits with one line."""

    def __init__(self, fullname: str):
        self.fullname = fullname

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        if self.fullname in OLD_PACKAGES:
            # Importable, so that `import mechref.refusal.store` names the new home of the submodule;
            # any name read from it says where the package went.
            where = _where(self.fullname)

            def __getattr__(name: str) -> None:
                if name.startswith("__"):
                    raise AttributeError(name)
                raise ModuleNotFoundError(f"{where}; import {name} from there")

            module.__getattr__ = __getattr__  # type: ignore[method-assign]
            return
        if self.fullname in MOVED_COMMANDS:
            raise ModuleNotFoundError(f"{self.fullname} is gone: the command is {MOVED_COMMANDS[self.fullname]}")
        raise ModuleNotFoundError(_where(self.fullname), name=self.fullname)

    def get_source(self, fullname: str) -> str:
        message = (
            f"the command is {MOVED_COMMANDS[fullname]}" if fullname in MOVED_COMMANDS else f"{_where(fullname)}: run that module"
        )
        line = f"mechref: error: python -m {fullname} moved; {message}"
        return f"import sys\nsys.stderr.write({line!r} + '\\n')\nraise SystemExit(2)\n"

    def get_code(self, fullname: str) -> CodeType:
        return compile(self.get_source(fullname), f"<moved {fullname}>", "exec")

    def is_package(self, fullname: str) -> bool:
        return fullname in OLD_PACKAGES


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname in MOVED_COMMANDS or _where(fullname) is not None:
            return importlib.machinery.ModuleSpec(fullname, _MovedLoader(fullname), is_package=fullname in OLD_PACKAGES)
        return None


def install() -> None:
    """Put the finder last on ``sys.meta_path`` (real modules are always found first); idempotent."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
