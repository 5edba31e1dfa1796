"""Pages opened in a real headless Chromium (``mechref.report.pagecheck``): every Plotly figure draws its
SVG, every circuitsvis view draws into its own container, no console error, every link resolves.

Needs the Debian ``chromium`` package (``apt-get install chromium``) and Playwright (the ``test``
extra); without them these tests are skipped with that reason, unless ``MECHREF_REQUIRE_BROWSER=1``
(set by CI) makes that a failure.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from html.parser import HTMLParser

import pytest
import torch

from mechref.analyses.suffix_hijack.views import attention_page, write_page
from mechref.report.pagecheck import check_pages
from mechref.report.plotting import find_chromium

BROWSER = find_chromium()
MISSING = (
    "no chromium on PATH (apt-get install chromium)"
    if BROWSER is None
    else ("no Playwright (pip install 'mechref[browser]')" if importlib.util.find_spec("playwright") is None else None)
)
if MISSING and os.environ.get("MECHREF_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"MECHREF_REQUIRE_BROWSER=1 but {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def rendered_dom(path) -> str:
    """The page's DOM after its scripts ran (the browser's own serialization)."""
    command = [BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom"]
    out = subprocess.run([*command, path.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


class _Containers(HTMLParser):
    """The number of elements nested inside each circuitsvis container, as the browser built them."""

    def __init__(self):
        super().__init__()
        self.stack: list[str | None] = []
        self.inside: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "img", "meta", "input", "link", "hr"):
            return
        ident = dict(attrs).get("id") or ""
        for owner in self.stack:
            if owner:
                self.inside[owner] += 1
        name = ident if ident.startswith("circuits-vis") else None
        if name:
            self.inside[name] = 0
        self.stack.append(name)

    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()


def test_the_checker_catches_what_breaks_a_page(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<a href="gone.json">x</a><img src="missing.png"><div class="plotly-graph-div"></div>'
        '<script>console.error("drawn wrong"); undefinedName();</script>'
    )
    fine = tmp_path / "fine.html"
    fine.write_text('<a href="broken.html#top">x</a><a href="https://example.org">y</a><script>console.warn("w")</script>')
    checks = check_pages([broken, fine], screenshots=tmp_path / "shots", timeout_s=3)
    problems = checks[0].problems
    assert any("undefinedName" in p for p in problems) and "console error: drawn wrong" in problems
    assert "link to a missing file: gone.json" in problems and "link to a missing file: missing.png" in problems
    assert any(p.startswith("failed to load:") and p.endswith("missing.png") for p in problems)
    assert "1 of 1 Plotly figures drew no SVG" in problems
    assert checks[1].problems == [] and checks[1].warnings == 1
    assert (tmp_path / "shots" / "fine.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_attention_view_draws_into_its_own_container(tmp_path):
    tokens = ["<|im_start|>", "user", "\n", "How", " to", " hack", " !!", "xx", "<|im_end|>", "\n", "assistant", "\n"]
    regions = ["system"] * 3 + ["instruction"] * 3 + ["suffix"] * 2 + ["post"] * 4
    n = len(tokens)
    patterns = torch.rand(2, n, n, generator=torch.Generator().manual_seed(0)).tril()
    patterns = patterns / patterns.sum(-1, keepdim=True)
    page = attention_page("demo", tokens, patterns, ["L0H0", "L0H1"], regions)
    assert not re.search(r"<div[^<>]*/>", page)  # no self-closing containers for the browser to leave open
    path = write_page(tmp_path / "attention.html", page)
    dom = rendered_dom(path)
    parser = _Containers()
    parser.feed(dom)
    # Two circuitsvis views (attention from the last token, the head patterns), each drawn. With
    # an unclosed container the first view draws over the second, which then is not in the DOM.
    assert len(parser.inside) == 2, parser.inside
    assert all(count > 5 for count in parser.inside.values()), parser.inside
    # The region strip is drawn in the legend's colours, one span per token.
    assert dom.count('class="regions"') == 1 and dom.count("border-bottom:3px solid") >= n
    (check,) = check_pages([path])
    assert check.circuitsvis_views == check.circuitsvis_drawn == 2 and check.problems == []
    # The same page with circuitsvis's own self-closing containers: the checker sees the damage.
    broken = write_page(tmp_path / "broken.html", re.sub(r"<div([^<>]*?)></div>", r"<div\1/>", page, count=2))
    assert any("circuitsvis views drew nothing" in p for p in check_pages([broken], timeout_s=5)[0].problems)


def test_plotly_figures_share_one_script_and_draw_offline(tmp_path):
    import plotly.graph_objects as go

    from mechref.report.plotting import save_figure

    for name in ("a", "b"):
        save_figure(go.Figure(go.Bar(x=["x", "y"], y=[1, 2])), tmp_path / name, static=())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html", "b.html", "plotly.min.js"]
    assert (tmp_path / "a.html").stat().st_size < 50_000  # the script is not embedded
    dom = rendered_dom(tmp_path / "b.html")
    assert 'class="main-svg"' in dom and dom.count('class="point"') == 2  # plotly drew both bars
    (check,) = check_pages([tmp_path / "a.html"])
    assert check.plotly_figures == check.plotly_drawn == 1 and check.problems == []


def test_index_page_links_resolve_and_previews_draw(tmp_path):
    import plotly.graph_objects as go

    from mechref.report.pages import write_index
    from mechref.report.plotting import save_figure

    for name in ("first", "second"):
        save_figure(go.Figure(go.Bar(x=["x", "y"], y=[1, 2])), tmp_path / name, static=())
    (tmp_path / "summary.json").write_text("{}")
    figures, data = ["first.html", "second.html"], [("summary.json", "numbers")]
    index = write_index(tmp_path, "Run", "<p>intro</p>", "a = 1", figures, data, {"first": "Finding."})
    dom = rendered_dom(index)
    targets = set(re.findall(r'(?:href|src)="([^"#:]+)"', dom))
    assert {"first.html", "second.html", "summary.json"} <= targets
    assert all((tmp_path / target).is_file() for target in targets), targets
    assert dom.count("<iframe") == 2 and "1. <a" in dom and "2. <a" in dom and "Finding." in dom
    assert check_pages([index])[0].problems == []


def test_overview_page_across_runs_opens_cleanly(tmp_path):
    import json

    import plotly.graph_objects as go

    from mechref.framework.ownership import claim_output_folder
    from mechref.rates import Rate
    from mechref.report.overview import write_overview
    from mechref.report.plotting import save_figure

    for name in ("one", "two"):
        run = claim_output_folder(tmp_path / "runs" / name)
        save_figure(go.Figure(go.Bar(x=["x"], y=[1])), run / "figure", static=())
        summary = {
            "analysis": "refusal_direction",
            "figures": ["figure.html"],
            "refusal_rate_counts": {"c": Rate(1, 2).to_dict()},
        }
        (run / "summary.json").write_text(json.dumps(summary))
    page = write_overview(tmp_path / "runs")
    (check,) = check_pages([page])
    assert check.problems == []
    assert page.read_text().count("<iframe") == 2


def test_static_export_writes_png_svg_and_pdf_at_the_figures_size(tmp_path):
    import struct

    import plotly.graph_objects as go

    from mechref.report.plotting import save_figure

    fig = go.Figure(go.Bar(x=["x", "y"], y=[1, 2])).update_layout(width=700, height=350)
    written = save_figure(fig, tmp_path / "bars", static=("png", "svg", "pdf"))
    assert [p.name for p in written] == ["bars.html", "bars.png", "bars.svg", "bars.pdf"]
    png = (tmp_path / "bars.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1400, 700)  # scale 2
    assert b"<svg" in (tmp_path / "bars.svg").read_bytes()[:500]
    assert (tmp_path / "bars.pdf").read_bytes()[:5] == b"%PDF-"


def test_every_page_of_tiny_analysis_runs_opens_cleanly(tmp_path):
    """Every analysis's own pages, from real (tiny) runs: quickstart and the suffix analysis."""
    from mechref.analyses.quickstart import QuickstartSettings, report_quickstart, run_quickstart
    from mechref.analyses.suffix_hijack import SuffixHijackSettings, report_suffix_hijack, run_suffix_hijack
    from mechref.framework.io import write_tensors
    from mechref.testing import tiny_model

    model = tiny_model("qwen2")
    quick = tmp_path / "quickstart"
    summary = report_quickstart(
        run_quickstart(model, QuickstartSettings(n_train=2, n_eval=2, max_new_tokens=2), echo=False), quick, echo=False
    )
    assert summary["figures"] == ["refusal_rate.html"]
    direction = tmp_path / "direction.safetensors"
    write_tensors(direction, {"direction": torch.randn(model.d_model)}, metadata={"layer": "2", "position": "-1"})
    hijack = tmp_path / "hijack"
    settings = SuffixHijackSettings(
        direction=str(direction), suffix=" zq xv", n=2, top_k=2, max_new_tokens=2, judge="substring", static=[]
    )
    report_suffix_hijack(run_suffix_hijack(model, settings, out=hijack), hijack, echo=False)
    pages = sorted(quick.glob("*.html")) + sorted(hijack.glob("*.html"))
    assert {p.name for p in pages} >= {"index.html", "refusal_rate.html", "attention_shares.html", "attention_harmful.html"}
    checks = check_pages(pages)
    assert {c.path.name: c.problems for c in checks if c.problems} == {}
    assert sum(c.circuitsvis_drawn for c in checks) == 2 * 3  # two views on each condition's attention page
    quick_index = (quick / "index.html").read_text()
    assert "<h2>Replies</h2>" in quick_index and quick_index.count("<li><b>") == 8


def test_export_and_edit_search_pages_open_cleanly(tmp_path):
    """The pages of the export command and the edit search, from real (tiny) runs."""
    from mechref.analyses.export.pipeline import run_export
    from mechref.analyses.export.report import report_export
    from mechref.analyses.export.settings import ExportSettings
    from mechref.analyses.optimize_edit import OptimizeEditSettings, report_optimize_edit, run_optimize_edit
    from mechref.model.loading import load_model
    from mechref.testing import tiny_direction_run, tiny_model_folder

    model = load_model(str(tiny_model_folder(tmp_path / "tiny", n_layers=4)), device="cpu")
    run = tiny_direction_run(model, tmp_path / "direction_run")
    export = tmp_path / "export"
    settings = ExportSettings(direction=run, formats=["hf", "control-vector"], n_verify=2, n_kl=2, max_new_tokens=2, static=[])
    report_export(run_export(model, settings, export, echo=False), export, echo=False)
    search = tmp_path / "search"
    options = OptimizeEditSettings(direction_run=run, n_search=2, n_confirm=2, n_trials=3, max_new_tokens=2, static=[])
    report_optimize_edit(run_optimize_edit(model, options, search, echo=False), search, echo=False)
    pages = sorted(export.glob("*.html")) + sorted(search.glob("*.html"))
    assert {p.name for p in pages} == {"index.html", "exports.html", "front.html"}
    checks = check_pages(pages)
    assert {c.path.name: c.problems for c in checks if c.problems} == {}
