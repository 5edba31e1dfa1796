"""Regenerate the figures of both papers that mechref reproduces on the embedded model, into
``figures/<analysis>/`` (HTML that opens offline, plus PNG where kaleido and Chromium are
present), then the gallery: a browser screenshot of each key figure in ``figures/gallery/`` and
``figures/README.md`` showing them.

    python figures/make_figures.py                          # refusal direction, suffix hijack, multilingual
    python figures/make_figures.py --only refusal_direction --dtype float32
    python figures/make_figures.py --gallery-only           # redraw the gallery from the existing runs

Each analysis runs through the library with its default settings and writes its stages into its
folder, so a second run only redraws. The first run takes about 25 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from mechref.analyses.multilingual import MultilingualSettings, report_multilingual, run_multilingual
from mechref.analyses.refusal_direction import RefusalDirectionSettings, report_refusal_direction, run_refusal_direction
from mechref.analyses.suffix_hijack import SuffixHijackSettings, report_suffix_hijack, run_suffix_hijack
from mechref.framework.settings import add_arguments, resolve
from mechref.model.settings import ModelSettings
from mechref.report.pagecheck import check_pages

HERE = Path(__file__).resolve().parent
ANALYSES = ("refusal_direction", "suffix_hijack", "multilingual")
# (analysis, figure, paper, what it shows): the gallery, in reading order.
GALLERY = (
    (
        "refusal_direction",
        "candidate_scores",
        "Arditi et al. 2024",
        "Bypass, induce and KL scores of every candidate direction over (position, layer); the chosen one starred.",
    ),
    (
        "refusal_direction",
        "refusal_by_condition",
        "Arditi et al. 2024",
        "Refusal with the direction ablated (harmful prompts) and added (harmless prompts), with counts and 95% intervals.",
    ),
    (
        "suffix_hijack",
        "cosine_by_layer",
        "Arditi et al. 2024",
        "Alignment of the last token with the refusal direction per layer, with and without the adversarial and a random suffix.",
    ),
    (
        "suffix_hijack",
        "attention_shares",
        "Arditi et al. 2024",
        "Where the heads that write the refusal direction look: instruction, suffix or template.",
    ),
    (
        "suffix_hijack",
        "head_attribution",
        "Arditi et al. 2024",
        "Direct feature attribution of every head per condition; below, adversarial minus plain and the random-suffix control.",
    ),
    (
        "suffix_hijack",
        "top_head_attribution",
        "Arditi et al. 2024",
        "Direct feature attribution of the top refusal-writing heads in each condition.",
    ),
    (
        "multilingual",
        "baseline_refusal",
        "Wang et al. 2025",
        "Baseline refusal per language with k/n and 95% intervals; over-refusing and unvalidated languages marked.",
    ),
    ("multilingual", "cosine_matrix", "Wang et al. 2025", "Cosine similarity of the per-language refusal vectors."),
    (
        "multilingual",
        "transfer_ablation",
        "Wang et al. 2025",
        "Refusal left in each language with another language's vector ablated.",
    ),
    (
        "multilingual",
        "silhouette_by_layer",
        "Wang et al. 2025",
        "Separation of harmful and harmless prompts per language and layer.",
    ),
    (
        "multilingual",
        "pca",
        "Wang et al. 2025",
        "Harmful and harmless prompts of every language on two principal components.",
    ),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=ANALYSES, default=list(ANALYSES), help="analyses to draw (default: all)")
    parser.add_argument("--out", type=Path, default=HERE, help="folder of the figure folders (default: figures/)")
    add_arguments(parser, ModelSettings, ModelSettings(), "model")
    parser.add_argument("--gallery-only", action="store_true", help="only redraw the gallery from the existing runs")
    args = parser.parse_args(argv)
    if args.gallery_only:
        return gallery(args.out)
    model = resolve(ModelSettings, args, None, ModelSettings()).load()
    direction_run = args.out / "refusal_direction"
    if "refusal_direction" in args.only:
        result = run_refusal_direction(model, RefusalDirectionSettings(), out=direction_run)
        report_refusal_direction(result, direction_run)
    if "suffix_hijack" in args.only:
        out = args.out / "suffix_hijack"
        report_suffix_hijack(run_suffix_hijack(model, SuffixHijackSettings(direction_run=direction_run), out=out), out)
    if "multilingual" in args.only:
        out = args.out / "multilingual"
        report_multilingual(run_multilingual(model, MultilingualSettings(direction_run=direction_run), out=out), out)
    return gallery(args.out)


def gallery(out: Path) -> int:
    """Open every page of the three runs in headless Chromium (``mechref.report.pagecheck``): each must
    draw all its figures and views with no error and no broken link. Save a screenshot of each
    gallery figure into ``figures/gallery/`` and write ``figures/README.md``. Exit 1 on a problem."""
    if not out.is_dir():
        raise SystemExit(f"make_figures: error: --out {out} is not a folder (create it, or run without --gallery-only first)")
    pages = sorted(p for analysis in ANALYSES for p in (out / analysis).glob("*.html"))
    if not pages:
        raise SystemExit(f"make_figures: error: no pages under {out} (run without --gallery-only first)")
    with tempfile.TemporaryDirectory() as scratch:
        checks = {check.path: check for check in check_pages(pages, screenshots=scratch)}
        broken = {path: check.problems for path, check in checks.items() if check.problems}
        for path, problems in broken.items():
            print(f"{path.relative_to(out.resolve())}: " + "; ".join(problems))
        print(f"{len(pages) - len(broken)} of {len(pages)} pages open cleanly in Chromium")
        shots = out / "gallery"
        shots.mkdir(exist_ok=True)
        rows, missing = [], []
        for analysis, name, paper, caption in GALLERY:
            page = (out / analysis / f"{name}.html").resolve()
            if page not in checks:
                print(f"skipped {analysis}/{name}: no {page} (run without --gallery-only first)")
                missing.append(f"`{analysis}/{name}`")
                continue
            png = shots / f"{analysis}__{name}.png"
            shutil.copyfile(str(checks[page].screenshot), png)
            rows.append(f"## {name.replace('_', ' ')} ({analysis.replace('_', ' ')})\n\n{caption} *{paper}.*\n\n")
            rows[-1] += f"![{name}](gallery/{png.name})\n\n`figures/{analysis}/{name}.html`\n"
    tail = f"\n**Not in this gallery yet** (their runs were not drawn): {', '.join(missing)}.\n" if missing else ""
    (out / "README.md").write_text(README_HEAD + "\n".join(rows) + tail, encoding="utf-8")
    print(f"gallery of {len(rows)} figures in {out / 'README.md'}")
    return 1 if broken else 0


README_HEAD = """# figures

`python figures/make_figures.py` regenerates the figures of both papers that mechref reproduces on
the embedded model into `figures/refusal_direction/`, `figures/suffix_hijack/` and
`figures/multilingual/`, each with its `index.html` (about 25 minutes on a 2-core CPU; a second
run only redraws). It calls the same library functions as the commands, with default settings;
`--only NAME ...` draws some of them, `--dtype`/`--model` choose the model. Then it opens each key
page in headless Chromium (`mechref.report.pagecheck`, `pip install "mechref[browser]"`: every figure and view must
draw, with no console error and no broken link; it exits 1 otherwise) and saves the screenshots below into
`figures/gallery/` (only these screenshots are committed); `--gallery-only` redoes just that.

Every figure is HTML that opens offline (the folder's one `plotly.min.js`), plus PNG/SVG/PDF
through kaleido when `pip install "mechref[export]"` and a Chromium (`apt-get install chromium`)
are present; the circuitsvis attention views are HTML too. The numbers behind each figure are in
the run folder's `summary.json`; the results pages of the documentation (docs/results/) give them with the commands.

"""


if __name__ == "__main__":
    raise SystemExit(main())
