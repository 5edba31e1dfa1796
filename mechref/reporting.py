"""What every analysis's run and report share: a clock that times and announces stages, and the
``index.html`` page that links a run folder's figures.

>>> clock = StageClock(total=2, echo=False)
>>> clock.stage("first")
>>> clock.stage("second")
>>> sorted(clock.timings), clock.step
(['first'], 2)
"""

from __future__ import annotations

import contextlib
import contextvars
import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from mechref.io import atomic_path

# What a clock created now prints before its stage numbers: empty at the top level, an indented
# label inside a sub-run (e.g. the refusal direction computed on first use by another analysis).
_PREFIX: contextvars.ContextVar[str] = contextvars.ContextVar("mechref_stage_prefix", default="")


@contextlib.contextmanager
def sub_run(label: str):
    """Number the stages of a run started inside a stage as its own indented sequence.

    >>> with sub_run("direction"):
    ...     StageClock(total=1).stage("select", "selecting")
          ↳ direction [1/1] selecting …
    """
    token = _PREFIX.set(f"{_PREFIX.get() or '      '}↳ {label} ")
    try:
        yield
    finally:
        _PREFIX.reset(token)


@dataclass
class StageClock:
    """Numbers and times the stages of a run: ``stage(name)`` closes the previous stage and opens the next.

    Prints ``[i/total] description`` as each stage starts (``echo``); ``timings`` holds seconds per
    finished stage; ``finish()`` closes the last one and returns the total.
    """

    total: int
    echo: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    step: int = 0
    prefix: str = field(default_factory=_PREFIX.get)
    _current: str | None = None
    _since: float = field(default_factory=time.perf_counter)
    _start: float = field(default_factory=time.perf_counter)

    def stage(self, name: str, description: str | None = None) -> None:
        self._close()
        self.step += 1
        self._current = name
        if self.echo:
            print(f"{self.prefix}[{self.step}/{self.total}] {description or name} …", flush=True)

    def note(self, text: str) -> None:
        """A detail of the current stage, printed indented."""
        if self.echo:
            print(f"      {text}", flush=True)

    def _close(self) -> None:
        now = time.perf_counter()
        if self._current is not None:
            self.timings[self._current] = round(self.timings.get(self._current, 0.0) + now - self._since, 2)
        self._current, self._since = None, now

    def finish(self) -> float:
        """Close the last stage; the seconds since the clock started."""
        self._close()
        return round(time.perf_counter() - self._start, 2)


def summary_header(analysis: str, model: Mapping[str, str]) -> dict:
    """The first keys of every ``summary.json``: which analysis, which mechref, which model
    (``model`` is :meth:`MechrefModel.identity`).

    >>> summary_header("quickstart", {"model": "m", "source": "s", "dtype": "float32"})["analysis"]
    'quickstart'
    """
    from mechref import __version__

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
