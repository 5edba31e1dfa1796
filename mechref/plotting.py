"""Figures: Plotly figures saved as self-contained HTML (works offline), and as static images
when a Chromium for kaleido is present."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Iterable

from mechref.io import atomic_path

logger = logging.getLogger(__name__)

_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable for kaleido's static export, if one is installed."""
    for name in _CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def save_figure(fig, path: str | Path, static: Iterable[str] = ("png",)) -> list[Path]:
    """Write ``fig`` as ``<path>.html`` (plotly.js embedded, so it opens offline) and, when
    kaleido and a Chromium are available, as each of the ``static`` formats (png, svg, pdf).

    Returns the paths written. Missing static-export support is reported once in the log with
    how to get it, never raised: the HTML is always there.
    """
    path = Path(path)
    written = []
    html = path.with_suffix(".html")
    with atomic_path(html) as tmp:
        fig.write_html(str(tmp), include_plotlyjs=True, full_html=True)
    written.append(html)
    formats = list(static)
    if not formats:
        return written
    reason = _static_export_unavailable()
    if reason:
        logger.warning("static figure export skipped (%s); the HTML figures are complete", reason)
        return written
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        with atomic_path(target) as tmp:
            fig.write_image(str(tmp), format=fmt, width=900, height=600, scale=2)
        written.append(target)
    return written


def _static_export_unavailable() -> str | None:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return 'kaleido is not installed: pip install "mechref[export]"'
    if find_chromium() is None:
        return "no Chromium found for kaleido: install one (Debian: apt-get install chromium)"
    return None
