"""save_figure (mechref.report.plotting) writes, from the figure's plain JSON, the page plotly's own
route writes: the figure copied, its template set to plotly_white, its width freed to fill the page."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest

from mechref.report.plotting import save_figure


def plotted(html: str) -> list:
    """The data, layout and config handed to ``Plotly.newPlot`` in a page."""
    start = html.index("Plotly.newPlot(") + len("Plotly.newPlot(")
    decoder, values, i = json.JSONDecoder(), [], start
    while len(values) < 4:
        while html[i] in " \n,":
            i += 1
        value, i = decoder.raw_decode(html, i)
        values.append(value)
    return values[1:]


FIGURES = {
    "heatmap with a width": lambda: go.Figure(go.Heatmap(z=[[1, 2], [3, 4]])).update_layout(title="t", width=700, height=400),
    "bars with their own template": lambda: go.Figure(go.Bar(x=["a", "b"], y=[0.2, 0.5])).update_layout(template="simple_white"),
    "lines": lambda: go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], mode="lines+markers")),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_the_page_is_plotlys_own_with_the_white_template_at_the_pages_width(tmp_path, name):
    fig = FIGURES[name]()
    before = fig.to_plotly_json()
    (html,) = save_figure(fig, tmp_path / "figure", static=[])
    expected = go.Figure(fig).update_layout(template="plotly_white").update_layout(width=None, autosize=True)
    data, layout, config = plotted(html.read_text())
    assert data == json.loads(expected.to_json())["data"]
    assert layout == json.loads(expected.to_json())["layout"]
    assert "width" not in layout and layout["autosize"] is True
    assert config["responsive"] is True
    assert fig.to_plotly_json() == before  # the caller's figure is left as it was
