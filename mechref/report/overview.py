"""One page across many runs: ``mechref report RUNS_DIR``.

Finds every run folder mechref wrote under ``RUNS_DIR`` (a folder with mechref's marker and a
``summary.json``), and writes one HTML page with, per run, what it is (analysis, model, dtype,
mechref version, date), its key numbers with their counts and 95% intervals, a preview of its
first figure and links to its report and every file it wrote. The page links the runs' own files
(it copies nothing), so it stays valid as long as it sits beside them.

>>> import json, tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> run = root / "direction"; run.mkdir()
>>> _ = (run / "mechref-run.json").write_text("{}")
>>> summary = {"analysis": "refusal_direction", "model": "m", "layer": 3,
...            "refusal_rate_counts": {"harmful_baseline": {"rate": 0.75, "k": 3, "n": 4, "ci95": [0.3, 0.95]}}}
>>> _ = (run / "summary.json").write_text(json.dumps(summary))
>>> [r.kind for r in find_runs(root)]
['refusal_direction']
>>> page = write_overview(root)
>>> page.name, "3/4 [0.30, 0.95]" in page.read_text()
('mechref-report.html', True)
"""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from mechref.errors import NoRunsError
from mechref.framework.io import atomic_path
from mechref.framework.ownership import OutputTargetError, is_mechref_folder
from mechref.version import __version__

REPORT_NAME = "mechref-report.html"
# The page's own mark: an existing file without it was not written here and is never replaced.
GENERATOR = '<meta name="generator" content="mechref report">'
# How deep under RUNS_DIR run folders are looked for (runs/<project>/<analysis> is depth 2).
MAX_DEPTH = 4
# Files of a run folder the page does not list: bookkeeping, not results.
_HIDDEN = ("mechref-run.json", "plotly.min.js")


@dataclass
class Run:
    """One run folder and what its ``summary.json`` says."""

    folder: Path
    summary: dict
    kind: str
    files: list[str] = field(default_factory=list)

    @property
    def modified(self) -> float:
        """When the run's ``summary.json`` was last written (seconds since the epoch)."""
        return (self.folder / "summary.json").stat().st_mtime


def analysis_of(summary: dict) -> str:
    """The analysis that wrote ``summary``: its ``analysis`` key, or recognised by its keys for runs
    written before that key existed.

    >>> analysis_of({"late_layers": {}}), analysis_of({"bypass_score": 1}), analysis_of({"x": 1})
    ('suffix_hijack', 'refusal_direction', 'unknown')
    """
    if isinstance(summary.get("analysis"), str):
        return summary["analysis"]
    signatures = (
        ("late_layers", "suffix_hijack"),
        ("bypass_score", "refusal_direction"),
        ("languages", "multilingual"),
        ("direction_norm", "quickstart"),
    )
    return next((kind for key, kind in signatures if key in summary), "unknown")


def find_runs(root: str | Path, max_depth: int = MAX_DEPTH) -> list[Run]:
    """Every run folder at or under ``root`` (up to ``max_depth`` levels), oldest first."""
    root = Path(root)
    if not root.is_dir():
        raise NoRunsError(f"{root} is not a folder; give the folder that holds your runs (e.g. runs/)")
    runs = []
    for folder, subfolders, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        subfolders[:] = sorted(s for s in subfolders if not s.startswith(".")) if depth < max_depth else []
        if "summary.json" not in files or not is_mechref_folder(folder):
            continue
        try:
            summary = json.loads((Path(folder) / "summary.json").read_text(encoding="utf-8"))
        except ValueError as error:
            raise NoRunsError(f"{Path(folder) / 'summary.json'} is not valid JSON ({error}); rerun that analysis") from error
        if not isinstance(summary, dict):
            raise NoRunsError(f"{Path(folder) / 'summary.json'} is not a JSON object; rerun that analysis")
        listed = sorted(f for f in files if f not in _HIDDEN and not f.startswith("."))
        runs.append(Run(Path(folder), summary, analysis_of(summary), listed))
    if not runs:
        raise NoRunsError(
            f"no mechref run under {root} (a run folder holds mechref-run.json and summary.json); "
            f"run an analysis with --out {root}/NAME first"
        )
    return sorted(runs, key=lambda run: (run.modified, str(run.folder)))


def _rate_text(counts: dict) -> str:
    low, high = counts["ci95"]
    return f"{counts['rate']:.2f} = {counts['k']}/{counts['n']} [{low:.2f}, {high:.2f}]"


def key_numbers(run: Run) -> list[tuple[str, str]]:
    """(label, value) pairs of a run's headline numbers; rates with k/n and their 95% interval.

    >>> run = Run(Path("."), {"layer": 20, "kl": 0.063, "refusal_rate_counts": {
    ...     "harmful_ablation": {"rate": 0.0, "k": 0, "n": 22, "ci95": [0.0, 0.1487]}}}, "refusal_direction")
    >>> for label, value in key_numbers(run):
    ...     print(f"{label}: {value}")
    direction: layer 20, position ?
    KL of the chosen candidate: 0.063
    refusal, harmful_ablation: 0.00 = 0/22 [0.00, 0.15]
    """
    s = run.summary
    rows: list[tuple[str, str]] = []
    if run.kind == "refusal_direction":
        rows.append(("direction", f"layer {s.get('layer', '?')}, position {s.get('position', '?')}"))
        if isinstance(s.get("kl"), (int, float)):
            rows.append(("KL of the chosen candidate", f"{s['kl']:.3g}"))
    elif run.kind == "suffix_hijack":
        rows.append(("direction layer", str(s.get("direction_layer", "?"))))
        if isinstance(s.get("suffix"), dict):
            rows.append(("adversarial suffix", repr(s["suffix"].get("text", ""))))
        late = s.get("late_layers", {})
        if "adversarial_closer_to" in late:
            rows.append(("late-layer cosine, adversarial suffix closer to", late["adversarial_closer_to"]))
        moved = s.get("attention_shift", {}).get("heads_moved_by_the_adversarial_suffix")
        if moved is not None:
            rows.append(("top heads whose attention the suffix moves", ", ".join(moved) or "none"))
    elif run.kind == "multilingual":
        rows.append(("languages", " ".join(s.get("languages", []))))
        if s.get("not_safety_aligned"):
            rows.append(("not safety-aligned (audit)", " ".join(s["not_safety_aligned"])))
        if s.get("judged_with_english_phrases_only"):
            rows.append(("judged with English phrases only", " ".join(s["judged_with_english_phrases_only"])))
        if s.get("refuses_most_harmless_prompts"):
            rows.append(("over-refusing (not understood?)", " ".join(s["refuses_most_harmless_prompts"])))
        for language, rates in (s.get("baseline_refusal") or {}).items():
            if isinstance(rates, dict) and isinstance(rates.get("harmful_counts"), dict):
                rows.append((f"harmful refused, {language}", _rate_text(rates["harmful_counts"])))
    elif run.kind == "categories":
        direction = s.get("direction", {})
        rows.append(("directions at", f"layer {direction.get('layer', '?')}, position {direction.get('position', '?')}"))
        rows.append(("categories", " ".join(s.get("logit_transfer", {}).get("targets", []))))
        missed = s.get("generation", {}).get("missed_by_global_direction", {}).get("categories")
        if missed is not None:
            rows.append(("missed by the global direction", " ".join(missed) or "none"))
        for condition, rates in (s.get("generation", {}).get("refusal_rate") or {}).items():
            if isinstance(rates, dict) and isinstance(rates.get("all"), dict):
                rows.append((f"replies refused, {condition}", _rate_text(rates["all"])))
    for condition, counts in (s.get("refusal_rate_counts") or {}).items():
        if isinstance(counts, dict) and {"rate", "k", "n", "ci95"} <= set(counts):
            rows.append((f"refusal, {condition}", _rate_text(counts)))
    return rows


def _preview(run: Run, page_folder: Path) -> str:
    """The run's first figure, as its PNG where one exists, else the live HTML figure scaled down."""
    figures = [f for f in run.summary.get("figures", []) if isinstance(f, str) and f.endswith(".html")]
    figures = [f for f in figures if (run.folder / f).is_file()]
    if not figures:
        return '<div class="none">no figures</div>'
    stem = figures[0][: -len(".html")]
    png = run.folder / f"{stem}.png"
    link = html.escape(_relative(run.folder / figures[0], page_folder))
    if png.is_file():
        inner = f'<img src="{html.escape(_relative(png, page_folder))}" alt="{html.escape(stem)}" loading="lazy">'
    else:
        inner = f'<iframe src="{link}" loading="lazy" tabindex="-1" title="{html.escape(stem)}"></iframe>'
    return f'{inner}<a class="cover" href="{link}" aria-label="open {html.escape(stem)}"></a>'


def _file_links(run: Run, page_folder: Path) -> str:
    """Links to a run's files: figures, then data; stage manifests folded away."""

    def links(names: list[str]) -> str:
        return " · ".join(f'<a href="{html.escape(_relative(run.folder / f, page_folder))}">{html.escape(f)}</a>' for f in names)

    manifests = [f for f in run.files if f.endswith(".manifest.json")]
    figures = [f for f in run.files if f.endswith(".html") and f != "index.html"]
    static = [f for f in run.files if f.rsplit(".", 1)[-1] in ("png", "svg", "pdf")]
    data = [f for f in run.files if f not in manifests + figures + static + ["index.html"]]
    rows = [("figures", figures), ("static figures", static), ("data", data)]
    out = "".join(f'<p class="files"><b>{label}:</b> {links(names)}</p>' for label, names in rows if names)
    if manifests:
        out += f'<details class="files"><summary>{len(manifests)} stage manifests</summary>{links(manifests)}</details>'
    return out


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def check_report_target(path: str | Path) -> Path:
    """Raise unless ``path`` is absent or an earlier page of ``mechref report``."""
    path = Path(path)
    if path.is_dir():
        raise OutputTargetError(f"report target {path} is a folder; give a file name such as {path / REPORT_NAME}")
    if path.exists():
        head = path.read_text(encoding="utf-8", errors="replace")[:2000]
        if GENERATOR not in head:
            raise OutputTargetError(f"{path} exists and was not written by mechref report; give another file with --out")
    if not path.parent.is_dir():
        raise OutputTargetError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


def write_overview(root: str | Path, out: str | Path | None = None) -> Path:
    """Write one HTML page across every run under ``root`` (default ``root/mechref-report.html``)."""
    root = Path(root)
    runs = find_runs(root)
    path = check_report_target(out if out is not None else root / REPORT_NAME)
    page_folder = path.parent
    sections = []
    for number, run in enumerate(runs, start=1):
        s = run.summary
        name = run.folder.relative_to(root).as_posix() if run.folder != root else root.name
        index = run.folder / "index.html"
        title_link = html.escape(_relative(index if index.is_file() else run.folder / "summary.json", page_folder))
        facts = ", ".join(
            str(x)
            for x in (
                s.get("model"),
                s.get("dtype"),
                f"mechref {s['mechref_version']}" if s.get("mechref_version") else None,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(run.modified)),
            )
            if x
        )
        numbers = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in key_numbers(run))
        files = _file_links(run, page_folder)
        sections.append(
            f'<section class="run"><div class="preview">{_preview(run, page_folder)}</div><div class="text">'
            f'<h2>{number}. <a href="{title_link}">{html.escape(run.kind.replace("_", " "))}</a>: '
            f"<code>{html.escape(name)}</code></h2><p>{html.escape(facts)}</p>"
            f"<table>{numbers}</table>{files}</div></section>"
        )
    kinds = sorted({run.kind for run in runs})
    page = f"""<!doctype html><html><head><meta charset="utf-8">{GENERATOR}
<meta name="viewport" content="width=device-width"><title>mechref runs in {html.escape(root.name or str(root))}</title>
<style>body{{font-family:sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#222}}
.run{{display:grid;grid-template-columns:minmax(240px,360px) 1fr;gap:16px;border:1px solid #ddd;border-radius:6px;
padding:10px;margin:14px 0}} @media (max-width:700px){{.run{{grid-template-columns:1fr}}}}
.run h2{{font-size:18px;margin:0 0 4px}} table{{border-collapse:collapse;font-size:14px}}
th{{text-align:left;font-weight:normal;color:#555;padding:2px 12px 2px 0;vertical-align:top}} td{{padding:2px 0}}
.files{{font-size:13px;color:#555;word-break:break-word}} .none{{color:#888;padding:40px;text-align:center}}
.preview{{position:relative;height:200px;overflow:hidden;background:#fafafa}}
.preview iframe{{width:300%;height:300%;border:0;transform:scale(.3333);transform-origin:0 0;pointer-events:none}}
.preview img{{width:100%;height:100%;object-fit:contain}} .cover{{position:absolute;inset:0}}</style></head><body>
<h1>mechref runs in <code>{html.escape(str(root))}</code></h1>
<p>{len(runs)} runs ({html.escape(", ".join(kinds))}), oldest first; written by mechref {__version__}. Rates are
k/n replies judged refusals with a 95% Wilson interval. Each title opens the run's own report.</p>
{"".join(sections)}
</body></html>"""
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
