"""Sphinx directives that write parts of mechref's documentation from the code, so they cannot drift.

```{mechref-commands}``` (in a MyST page) writes one section per command (``mechref`` and every
``python -m mechref.analyses.<name>``), each with every option of its parser: the flag, its value,
its default and its help text, grouped as ``--help`` groups them. The parsers are the ones the
commands run (an analysis's options come from its settings class), so an option added to a
settings class appears here at the next build; ``tests/unit/test_docs.py`` checks that none is
left out.

``.. mechref-json-table:: PATH`` reads a committed results JSON and writes a table of the rows the
options name (see :class:`JsonTable`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

ROOT = Path(__file__).resolve().parents[2]


def command_names() -> list[str]:
    """``mechref`` and every analysis command, in the order ``mechref --help`` lists them."""
    from mechref.cli import ANALYSES

    return ["mechref", *ANALYSES]


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser the command ``name`` runs (``mechref`` for the top-level command line)."""
    if name == "mechref":
        from mechref.cli import build_parser

        return build_parser()
    module = importlib.import_module(f"mechref.analyses.{name}.command")
    if hasattr(module, "COMMAND"):
        return module.COMMAND.parser()
    return module.build_parser()


def _flag(action: argparse.Action) -> str:
    flags = ", ".join(action.option_strings) if action.option_strings else (action.metavar or action.dest)
    if action.nargs == 0:
        return f"`{flags}`"
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        value = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        value = str(action.metavar or action.dest.upper())
    if action.nargs in ("*", "+") or (isinstance(action.nargs, int) and action.nargs > 1):
        value += " …"
    return f"`{flags} {value}`" if action.option_strings else f"`{flags}`"


def _default(action: argparse.Action) -> str:
    if action.default in (None, argparse.SUPPRESS) or (action.nargs == 0 and action.default is False):
        return ""
    if isinstance(action.default, (list, tuple)):
        return "`" + " ".join(str(v) for v in action.default) + "`" if action.default else "(none)"
    return f"`{action.default}`"


def _cell(text: str) -> str:
    # One line per cell; `|` would end a table cell and `*` start emphasis.
    return " ".join(text.split()).replace("|", "\\|").replace("*", "\\*")


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if text == argparse.SUPPRESS:
        return ""
    return _cell(text % {"default": action.default, "prog": ""} if "%(" in text else text)


def options_markdown(parser: argparse.ArgumentParser) -> list[str]:
    """Markdown tables of every option of ``parser``, one table per argument group, as ``--help`` groups them."""
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        title = {"options": "general", "optional arguments": "general", "positional arguments": "arguments"}.get(
            group.title or "", group.title or ""
        )
        lines += [f"**{title}**", "", "| option | default | what it sets |", "| --- | --- | --- |"]
        for action in actions:
            if isinstance(action, argparse._SubParsersAction):
                lines += [f"| `{choice.dest}` |  | {_cell(choice.help or '')} |" for choice in action._choices_actions]
                continue
            lines.append(f"| {_flag(action)} | {_default(action)} | {_help(action)} |")
        lines.append("")
    return lines


def command_markdown(name: str) -> list[str]:
    """A section for one command: how to run it, what it does, every option."""
    parser = command_parser(name)
    run = "mechref" if name == "mechref" else f"python -m mechref.analyses.{name}"
    lines = [f"## `{run}`", ""]
    description = (parser.description or "").strip().split("\n\n")[0]
    if description:
        lines += [_cell(description), ""]
    if name != "mechref":
        lines += [f"Also `mechref {name} …`. In Python: {{mod}}`mechref.analyses.{name}`.", ""]
    return lines + options_markdown(parser)


class Commands(SphinxDirective):
    """``{mechref-commands}``: every command with every option (Markdown, for a MyST page)."""

    def run(self) -> list[nodes.Node]:
        lines: list[str] = []
        for name in command_names():
            lines += command_markdown(name)
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source="mechref-commands"), node)
        return node.children


def benchmark_tables() -> Any:
    """``benchmarks/tables.py``: one function per results table, each drawing it from its JSON."""
    spec = importlib.util.spec_from_file_location("benchmark_tables", ROOT / "benchmarks" / "tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Table(SphinxDirective):
    """``{mechref-table} NAME``: the results table ``NAME`` of ``benchmarks/tables.py``, drawn from
    its committed JSON when the site is built (so no number on a results page is typed by hand)."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        tables = benchmark_tables()
        name = self.arguments[0]
        if name not in tables.RENDERERS:
            raise self.error(f"no results table {name!r} in benchmarks/tables.py")
        # Rebuilt when any committed result changes (a table reads one or more of these files).
        for path in sorted((ROOT / "benchmarks" / "results").rglob("*.json")):
            self.env.note_dependency(str(path))
        try:
            markdown = tables.RENDERERS[name]()
        except FileNotFoundError as missing:
            raise self.error(f"results table {name!r}: {missing.filename} is missing (its benchmark writes it)") from None
        node = nodes.section()
        node.document = self.state.document
        lines = StringList(markdown.split("\n"), source=f"benchmarks/tables.py:{name}")
        self.state.nested_parse(lines, self.content_offset, node)
        return node.children


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


class JsonTable(SphinxDirective):
    """``.. mechref-json-table:: benchmarks/results/X.json`` with ``:rows: a.b`` (a dict or list in
    the JSON whose entries become rows) and ``:columns: header=key, …`` (keys read in each entry,
    dotted for nested ones). The page names the file; the numbers are read at build time."""

    required_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {"rows": directives.unchanged_required, "columns": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        path = ROOT / self.arguments[0]
        self.env.note_dependency(str(path))
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = _dig(data, self.options["rows"])
        items = rows.items() if isinstance(rows, dict) else enumerate(rows)
        columns = [c.strip().split("=", 1) for c in self.options["columns"].split(",")]
        lines = [f".. list-table:: from ``{self.arguments[0]}``", "   :header-rows: 1", ""]
        lines.append("   * - " + "\n     - ".join(header for header, _ in columns))
        for key, row in items:
            cells = [str(key) if field == "@key" else str(_dig(row, field)) for _, field in columns]
            lines.append("   * - " + "\n     - ".join(_cell(c) for c in cells))
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(lines, source=str(path)), self.content_offset, node)
        return node.children


def resolve_short_name(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve a Python reference by its short name when exactly one documented mechref object has it.

    Docstrings say :func:`run_refusal_direction` where the name is imported, not defined; Sphinx
    looks only in the current module and at the top level. A name that fits two objects stays
    unresolved (and fails the nitpicky build), so no reference silently points at the wrong one.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    objects = env.get_domain("py").objects
    # A façade name (mechref.load_model) is documented where it lives (mechref.model.loading.load_model).
    import mechref

    if target.startswith("mechref.") and target.count(".") == 1:
        name = target.split(".", 1)[1]
        home = mechref._FACADE.get(name)
        if home is not None:
            target = f"{home}.{mechref._RENAMED.get(name, name)}"
    suffix = "." + target
    matches = sorted(name for name in objects if name == target or (name.startswith("mechref.") and name.endswith(suffix)))
    if len(matches) != 1:
        return None
    found = env.get_domain("py").resolve_any_xref(env, node["refdoc"], app.builder, matches[0], node, contnode)
    return found[0][1] if found else None


_SHELL = ("python ", "mechref ", "pip ", "bash ", "sphinx-build ", "OMP_NUM_THREADS=")


def shell_examples_as_literal(lines: list[str]) -> None:
    """Mark an indented block of shell commands after a paragraph as a literal block, in place.

    Command docstrings are also their ``--help`` text, where a ``::`` would show; they list
    example command lines indented under a paragraph, which reStructuredText would read as a
    quotation (and fail on a continuation line indented further).
    """
    i = 1
    while i < len(lines):
        line = lines[i]
        previous = next((lines[j] for j in range(i - 2, -1, -1) if lines[j].strip()), "")
        if (
            not lines[i - 1].strip()
            and line.startswith("    ")
            and line.strip().startswith(_SHELL)
            and not previous.startswith(" ")
            and not previous.rstrip().endswith("::")
        ):
            lines[i:i] = ["::", ""]
            i += 2
        i += 1


def process_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Shell examples become literal blocks; ``Args:`` sections of functions become field lists.

    Google-style sections are read only in functions, methods and classes: in a property or
    attribute, Napoleon would take the text before a colon for a type ("Rows of the unembedding: …").
    """
    shell_examples_as_literal(lines)
    if what in ("function", "method", "class") and any(line.strip() in ("Args:", "Returns:", "Raises:") for line in lines):
        from sphinx.ext.napoleon import Config
        from sphinx.ext.napoleon.docstring import GoogleDocstring

        config = Config(napoleon_use_param=True, napoleon_use_rtype=True)
        lines[:] = GoogleDocstring(lines, config, app, what, name, obj, options).lines()


def setup(app: Any) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", process_docstring)
    app.add_directive("mechref-commands", Commands)
    app.add_directive("mechref-json-table", JsonTable)
    app.add_directive("mechref-table", Table)
    app.connect("missing-reference", resolve_short_name)
    return {"version": "1", "parallel_read_safe": True}
