"""The pages every analysis's report shares: the summary header and the ``index.html`` page that
links a run folder's figures (the stage clock is :mod:`mechref.framework.clock`)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Mapping, Sequence

from mechref.framework.io import atomic_path


def summary_header(analysis: str, model: Mapping[str, str]) -> dict:
    """The first keys of every ``summary.json``: which analysis, which mechref, which model
    (``model`` is :meth:`MechrefModel.identity`).

    >>> summary_header("quickstart", {"model": "m", "source": "s", "dtype": "float32"})["analysis"]
    'quickstart'
    """
    from mechref.version import __version__

    return {
        "analysis": analysis,
        "mechref_version": __version__,
        "model": model["model"],
        "source": model["source"],
        "dtype": model["dtype"],
    }


GLOSSARY = (
    (
        "refusal score",
        "log-odds of the model's refusal tokens (e.g. 'I', 'Sorry') at the first reply position; "
        "above 0 the model leans to refusing",
    ),
    (
        "refusal direction",
        "the difference of the mean residual-stream activations of harmful and harmless prompts at one layer and position",
    ),
    ("directional ablation", "projecting the direction out of every residual-stream write, at every layer and position"),
    ("activation addition", "adding the direction (times a coefficient) to the residual stream at its layer, at every position"),
    (
        "bypass score",
        "the harmful prompts' mean refusal score with the direction ablated; lower means ablation removes refusal better",
    ),
    ("induce score", "the harmless prompts' mean refusal score with the direction added; above 0 means it induces refusal"),
    (
        "KL",
        "the KL divergence of the harmless prompts' next-token distribution with the direction ablated; "
        "small means a small side effect",
    ),
    (
        "DFA",
        "direct feature attribution: how much each attention head, MLP and the embedding writes along the direction; "
        "the parts sum to the stream's projection",
    ),
    ("rate k/n [lo, hi]", "k of n replies judged refusals, with a 95% Wilson interval"),
)


def write_index(
    out: str | Path,
    title: str,
    intro_html: str,
    summary_text: str,
    links: Sequence[str],
    extra_links: Sequence[tuple[str, str]] = (),
    captions: Mapping[str, str] | None = None,
    glossary: Sequence[tuple[str, str]] = GLOSSARY,
    more_html: str = "",
) -> Path:
    """Write ``out/index.html``: a title, an introduction (HTML), the text summary, every figure
    (``links``: file names in ``out``) in reading order with its caption and a live preview, the
    other artifacts (``(file, description)``) and a glossary of the terms the figures use;
    ``more_html`` goes between the figures and the artifacts.

    >>> import tempfile
    >>> page = write_index(tempfile.mkdtemp(), "T", "<p>x</p>", "a 1", ["f.html"], [("s.json", "numbers")], {"f": "A finding."})
    >>> text = page.read_text()
    >>> "f.html" in text and "numbers" in text and "A finding." in text and "<dt>DFA</dt>" in text
    True
    """
    out = Path(out)
    captions = captions or {}
    cards = []
    for number, name in enumerate((f for f in links if f.endswith(".html")), start=1):
        stem = name[: -len(".html")]
        png = f"{stem}.png"
        preview = (
            f'<img src="{html.escape(png)}" alt="{html.escape(stem)}" loading="lazy">'
            if (out / png).is_file()
            else f'<iframe src="{html.escape(name)}" loading="lazy" tabindex="-1" title="{html.escape(stem)}"></iframe>'
        )
        caption = html.escape(captions.get(stem, ""))
        cards.append(
            f'<li class="card"><div class="preview">{preview}<a class="cover" href="{html.escape(name)}" '
            f'aria-label="open {html.escape(stem)}"></a></div><div><b>{number}. <a href="{html.escape(name)}">'
            f"{html.escape(stem.replace('_', ' '))}</a></b><p>{caption}</p></div></li>"
        )
    other_items = "".join(
        f'<li><a href="{html.escape(f)}">{html.escape(f)}</a>: {html.escape(what)}</li>' for f, what in extra_links
    )
    terms = "".join(f"<dt>{html.escape(term)}</dt><dd>{html.escape(meaning)}</dd>" for term, meaning in glossary)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#222}}
pre{{background:#f6f6f6;padding:12px;white-space:pre-wrap;word-break:break-word}}
ol.figures{{list-style:none;padding:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:16px}}
.card{{border:1px solid #ddd;border-radius:6px;padding:8px}} .card p{{margin:4px 0;font-size:14px}}
.preview{{position:relative;height:200px;overflow:hidden;background:#fafafa}}
.preview iframe{{width:300%;height:300%;border:0;transform:scale(.3333);transform-origin:0 0;pointer-events:none}}
.preview img{{width:100%;height:100%;object-fit:contain}} .cover{{position:absolute;inset:0}}
dt{{font-weight:bold;margin-top:6px}} dd{{margin-left:16px}}</style></head><body>
<h1>{html.escape(title)}</h1>
{intro_html}
<pre>{html.escape(summary_text)}</pre>
<h2>Figures, in reading order</h2><ol class="figures">{"".join(cards)}</ol>
{more_html}
<h2>Data</h2><ul>{other_items}</ul>
<h2>Glossary</h2><dl>{terms}</dl>
</body></html>"""
    path = out / "index.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
