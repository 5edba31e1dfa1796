"""Figures: Plotly figures saved as HTML that opens offline, and as static images when a
Chromium for kaleido is present.

Every figure of a folder loads one shared copy of plotly.js (``plotly.min.js``, written next to
them), instead of embedding its own 4.8 MB copy.
"""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from mechref.framework.io import atomic_path

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from mechref.rates import Rate

logger = logging.getLogger(__name__)

_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
PLOTLY_JS = "plotly.min.js"
_warned: set[str] = set()
_written: set[Path] = set()  # folders whose plotly.min.js this process wrote or checked


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable for kaleido's static export, if one is installed."""
    for name in _CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def write_plotly_js(folder: str | Path) -> Path:
    """Write the installed plotly.js as ``folder/plotly.min.js`` unless that exact file is there."""
    from plotly.offline import get_plotlyjs

    target = Path(folder) / PLOTLY_JS
    if target.resolve() in _written and target.is_file():
        return target  # checked once already: not 4.8 MB to read again for every figure
    source = get_plotlyjs()
    if not target.is_file() or target.read_text(encoding="utf-8") != source:
        with atomic_path(target) as tmp:
            Path(tmp).write_text(source, encoding="utf-8")
    _written.add(target.resolve())
    return target


def save_figure(fig, path: str | Path, static: Iterable[str] = ("png",)) -> list[Path]:
    """Write ``fig`` as ``<path>.html`` (loading the folder's shared ``plotly.min.js``, so it opens
    offline) and, when kaleido and a Chromium are available, as each of the ``static`` formats
    (png, svg, pdf).

    Returns the paths written. Missing static-export support is reported once per process in
    the log with how to get it, never raised: the HTML is always there.
    """
    path = Path(path)
    import plotly.graph_objects as go
    import plotly.io as pio

    write_plotly_js(path.parent)  # not listed: it is the figures' shared script, not a figure
    # One plain white theme everywhere; in the browser the figure fills the page's width (a
    # laptop screen or a phone) instead of its fixed export width. Done on the figure's plain
    # JSON (already validated when it was built): copying a plotly Figure re-validates every
    # property, which took most of the time a report spends drawing.
    static_width = fig.layout.width or 900
    spec = fig.to_plotly_json()
    layout = {**spec.get("layout", {}), "template": _white_template()}
    page_layout = {key: value for key, value in layout.items() if key != "width"} | {"autosize": True}
    written = []
    html = path.with_suffix(".html")
    with atomic_path(html) as tmp:
        pio.write_html(
            {"data": spec.get("data", []), "layout": page_layout},
            str(tmp),
            include_plotlyjs=PLOTLY_JS,
            full_html=True,
            default_width="100%",
            config={"responsive": True},
            validate=False,
        )
    written.append(html)
    formats = list(static)
    if not formats:
        return written
    reason = _static_export_unavailable()
    if reason:
        if reason not in _warned:
            _warned.add(reason)
            logger.warning("static figure export skipped (%s); the HTML figures are complete", reason)
        return written
    fig = go.Figure({"data": spec.get("data", []), "layout": layout})
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        with atomic_path(target) as tmp:
            fig.write_image(str(tmp), format=fmt, width=static_width, height=fig.layout.height or 600, scale=2)
        written.append(target)
    return written


@functools.cache
def _white_template() -> dict:
    """plotly's ``plotly_white`` template as plain JSON, built once per process."""
    import plotly.io as pio

    return pio.templates["plotly_white"].to_plotly_json()


def _static_export_unavailable() -> str | None:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return 'kaleido is not installed: pip install "mechref[export]"'
    if find_chromium() is None:
        return "no Chromium found for kaleido: install one (Debian: apt-get install chromium)"
    return None


def interval_error_bars(counts: Sequence[dict | None]) -> dict:
    """Plotly ``error_y`` for bars of rates: each rate's 95% interval (``Rate.to_dict()``'s ``ci95``),
    asymmetric; none for a bar without counts.

    >>> interval_error_bars([{"rate": 0.5, "ci95": [0.2, 0.9]}, None])["array"]
    [0.4, 0]
    """
    return dict(
        type="data",
        symmetric=False,
        array=[round(c["ci95"][1] - c["rate"], 6) if c else 0 for c in counts],
        arrayminus=[round(c["rate"] - c["ci95"][0], 6) if c else 0 for c in counts],
        color="#444444",
    )


def rate_bars(rates: Mapping[str, Rate]) -> go.Figure:
    """Refusal rate of the greedy replies per condition: k/n under each bar, the 95% Wilson interval as its error bar.

    >>> from mechref.rates import Rate
    >>> fig = rate_bars({"harmful": Rate(3, 4), "harmless": Rate(0, 4)})
    >>> list(fig.data[0].x), [round(x, 3) for x in fig.data[0].error_y.array]
    (['harmful<br>3/4', 'harmless<br>0/4'], [0.204, 0.49])
    """

    import plotly.graph_objects as go

    from mechref.report.palette import condition_color

    names = list(rates)
    values = [rates[k].value for k in names]
    fig = go.Figure(
        go.Bar(
            # k/n under each bar's name: above the bar the error bar would cross it.
            x=[f"{k}<br>{rates[k].k}/{rates[k].n}" for k in names],
            y=values,
            marker_color=[condition_color(k) for k in names],
            error_y=interval_error_bars([rates[k].to_dict() for k in names]),
            hovertemplate="%{x}<br>refusal rate %{y:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Refusal rate of the greedy replies<br><sup>k/n under each condition; error bars: 95% Wilson interval</sup>",
        yaxis_range=[0, 1.05],
        yaxis_title="share of replies judged refusals",
        xaxis_title="condition",
        height=420,
        width=800,
    )
    return fig
