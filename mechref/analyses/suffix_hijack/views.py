"""circuitsvis attention views that open offline.

circuitsvis renders into HTML that either loads its JavaScript from a CDN (``str(view)``, blank
without internet) or inlines it (``view.local_src``). mechref always writes the inline form.

>>> import torch
>>> page = attention_page("demo", ["a", "b"], torch.tensor([[[1.0, 0.0], [0.5, 0.5]]]), ["L0H0"],
...                       ["instruction", "suffix"], note="a note")
>>> "<script" in page and "cdn" not in page.lower()
True
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Sequence

from jaxtyping import Float
from torch import Tensor

from mechref.analyses.suffix_hijack.regions import REGIONS
from mechref.framework.io import atomic_path
from mechref.report.palette import REGION_COLORS


def closed_containers(src: str) -> str:
    """circuitsvis writes its mount point as ``<div id=… />``; HTML has no self-closing ``div``, so a
    browser leaves it open and every later view ends up inside the first, which replaces them
    when it draws. Write each as an explicit ``<div …></div>``.

    >>> closed_containers('<div id="a" style="x"/><script>1</script>')
    '<div id="a" style="x"></div><script>1</script>'
    """
    return re.sub(r"<div([^<>]*?)\s*/>", r"<div\1></div>", src)


def region_strip(tokens: Sequence[str], regions: Sequence[str]) -> str:
    """The prompt's tokens, each on the background colour of its region in the legend."""
    spans = []
    for token, region in zip(tokens, regions):
        text = html.escape(token).replace("\n", "↵").replace(" ", "&nbsp;") or "∅"
        spans.append(
            f'<span title="{region}" style="background:{REGION_COLORS[region]}33;border-bottom:3px solid '
            f'{REGION_COLORS[region]};padding:1px 1px;margin:0 1px;font-family:monospace">{text}</span>'
        )
    return f'<div class="regions" style="line-height:2">{"".join(spans)}</div>'


def attention_page(
    title: str,
    tokens: Sequence[str],
    patterns: Float[Tensor, "n_head seq seq"],
    head_names: Sequence[str],
    regions: Sequence[str],
    note: str = "",
) -> str:
    """A self-contained HTML page: the token regions, then circuitsvis views of each head's attention."""
    import circuitsvis as cv

    if len(tokens) != patterns.shape[-1] or len(regions) != len(tokens):
        raise ValueError(
            f"{len(tokens)} tokens, {len(regions)} region labels and patterns over {patterns.shape[-1]} tokens must agree"
        )
    unknown = sorted(set(regions) - set(REGION_COLORS))
    if unknown:
        raise ValueError(f"unknown token regions {unknown}; expected some of {', '.join(REGION_COLORS)}")
    strip = region_strip(tokens, regions)
    last = patterns[:, -1, :].mean(0)
    from_last = closed_containers(
        cv.tokens.colored_tokens(
            tokens=list(tokens), values=last.tolist(), min_value=0, max_value=float(last.max()), positive_color="#27ae60"
        ).local_src
    )
    view = closed_containers(
        cv.attention.attention_heads(
            attention=patterns.float(), tokens=list(tokens), attention_head_names=list(head_names)
        ).local_src
    )
    legend = " ".join(
        f'<span style="background:{REGION_COLORS[r]};padding:2px 6px;border-radius:3px">{r}</span>' for r in REGIONS
    )
    counts = ", ".join(f"{r}: {list(regions).count(r)} tokens" for r in REGIONS)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1200px}} h2{{margin-top:28px}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{html.escape(note)}</p>
<h2>Token regions</h2><p>{legend} ({counts}).
Each token below is underlined in the colour of its region (↵ is a line break).</p>{strip}
<h2>Attention from the last token (mean over the heads below)</h2>{from_last}
<h2>Attention patterns</h2><p>Pick a head; hover a token to see where it attends (rows: queries, columns: keys).</p>{view}
</body></html>"""


def write_page(path: str | Path, page: str) -> Path:
    """Write an HTML page atomically; its path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return path
