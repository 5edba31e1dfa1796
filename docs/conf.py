"""Sphinx configuration of mechref's documentation site (``docs/``).

Build: ``pip install -e ".[docs]" && sphinx-build -W --keep-going -n -b html docs docs/_build/html``.

Sphinx rather than mkdocs: mechref's docstrings already use Sphinx's roles (``:func:``,
``:class:``) and reStructuredText, which autodoc renders as written and, in nitpicky mode, checks
(a reference to a name that does not exist fails the build). Pages are Markdown (MyST); the
workshop notebooks are rendered by MyST-NB from their executed copies (``docs/tutorials``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).with_name("_ext")))

from mechref.version import __version__  # noqa: E402

project = "mechref"
author = "mechref contributors"
copyright = "mechref contributors"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "myst_nb",
    "mechref_docs",
]

# Markdown pages with MyST; notebooks are rendered with the outputs they hold (never executed at
# build time: the documented command `python docs/execute_notebooks.py` writes executed copies).
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3
nb_execution_mode = "off"
# Warnings and progress bars a kernel wrote to stderr say nothing to a reader of the site.
nb_output_stderr = "remove"
exclude_patterns = ["_build", "_executed", "Thumbs.db", ".DS_Store", "**/.ipynb_checkpoints"]

# The API reference: one page per module, generated from the docstrings at build time.
autosummary_generate = True
autosummary_imported_members = False
# A package's page documents what the package defines; what it re-exports is documented where it
# lives (the façade, `mechref`, lists its names with links).
autodoc_default_options = {"members": True, "show-inheritance": True, "member-order": "bysource", "ignore-module-all": True}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True

# Every cross-reference must resolve (nitpicky, with -W in CI). References into other projects
# cannot: the build runs offline, without their inventories, so those are listed here by package.
nitpicky = True
_OTHER_PACKAGES = "|".join(
    [
        *("torch", "transformers", "transformer_lens", "jaxtyping", "numpy", "np", "plotly", "go", "pandas"),
        *("safetensors", "optuna", "peft", "gguf", "tqdm", "nbformat", "circuitsvis", "accelerate", "huggingface_hub"),
        *("sklearn", "scipy", "argparse", "pathlib", "collections", "typing", "typing_extensions", "contextlib"),
        *("dataclasses", "enum", "json", "re", "os", "io", "abc", "types", "functools", "datetime", "concurrent"),
        *("multiprocessing", "threading", "subprocess", "tempfile", "logging"),
    ]
)
_OTHER_CLASSES = "|".join(
    [
        *("Tensor", "Float", "Int", "Bool", "Path", "Any", "Callable", "Iterator", "Iterable", "Sequence", "Mapping"),
        *("Literal", "Self", "TypeVar", "PreTrainedModel", "PreTrainedTokenizerBase", "TransformerBridge", "HookPoint"),
        *("Figure", "ndarray"),
    ]
)
nitpick_ignore_regex = [
    (r"py:.*", rf"({_OTHER_PACKAGES})(\..*)?"),
    (r"py:class", rf"({_OTHER_CLASSES})"),
    # Type variables of generic helpers.
    (r"py:(obj|class)", r"(mechref\..*\.)?(S|T|_T|ModuleT)"),
    # jaxtyping shapes, e.g. Float[Tensor, "batch seq"]: the quoted axis names are not classes; and
    # the pieces Sphinx makes of an annotation it cannot parse whole (dict[str, Float[Tensor, "n d"]]).
    (r"py:class", r".*['\"\[\]].*"),
    (r"py:class", r"string"),
]

# The tutorials are the workshop notebooks: the copies executed on the embedded model at reduced
# sizes (the integration tier writes them to docs/_executed/ when MECHREF_EXECUTED_NOTEBOOKS points
# there, as .ci/run does) or, where none was executed (or the source is newer), the sources without
# outputs. Plotly figures are kept as their JSON in a notebook; here each becomes a div drawn by the
# site's own copy of plotly.js (no network: the site opens from file://).
EXECUTED = Path(__file__).with_name("_executed")
TUTORIALS = Path(__file__).with_name("tutorials") / "notebooks"
STATIC = Path(__file__).with_name("_static")
STATIC.mkdir(exist_ok=True)
PLOTLY_JSON = "application/vnd.plotly.v1+json"


def _plotly_as_html(notebook: dict, name: str) -> dict:
    import json

    for i, cell in enumerate(notebook.get("cells", [])):
        for j, output in enumerate(cell.get("outputs", [])):
            data = output.get("data", {})
            if PLOTLY_JSON not in data:
                continue
            figure = data.pop(PLOTLY_JSON)
            div = f"plotly-{name}-{i}-{j}"
            height = figure.get("layout", {}).get("height", 450)
            data["text/html"] = (
                f'<div id="{div}" class="plotly-graph-div" style="height:{height}px; width:100%;"></div>'
                # The theme loads its scripts (plotly.js among them) after the page's body: draw on load.
                f'<script>window.addEventListener("load", function () {{ Plotly.newPlot("{div}", '
                f"{json.dumps(figure.get('data', []))}, {json.dumps(figure.get('layout', {}))}, "
                f'{{"responsive": true}}); }});</script>'
            )
    return notebook


def _copy_notebooks(app: object) -> None:
    import json
    import shutil

    import plotly

    shutil.copyfile(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", STATIC / "plotly.min.js")
    TUTORIALS.mkdir(parents=True, exist_ok=True)
    for source in sorted((ROOT / "notebooks").glob("*.ipynb")):
        executed = EXECUTED / source.name
        chosen = executed if executed.is_file() and executed.stat().st_mtime >= source.stat().st_mtime else source
        text = json.dumps(_plotly_as_html(json.loads(chosen.read_text(encoding="utf-8")), source.stem), indent=1)
        target = TUTORIALS / source.name
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")


def _plotly_on_tutorials(app: object, pagename: str, templatename: str, context: dict, doctree: object) -> None:
    # plotly.js (4.8 MB) only on the pages that draw with it.
    if pagename.startswith("tutorials/notebooks/"):
        app.add_js_file("plotly.min.js")  # type: ignore[attr-defined]


def setup(app: object) -> None:
    app.connect("builder-inited", _copy_notebooks)  # type: ignore[attr-defined]
    app.connect("html-page-context", _plotly_on_tutorials)  # type: ignore[attr-defined]


html_static_path = ["_static"]
html_theme = "furo"
html_title = f"mechref {release}"
html_copy_source = False
# Offline: the site opens from file:// with no request leaving the machine.
html_use_opensearch = ""
