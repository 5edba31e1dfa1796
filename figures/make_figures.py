"""Regenerate the figures of both papers that mechref reproduces on the embedded model, into
``figures/<analysis>/`` (self-contained HTML, plus PNG where kaleido and Chromium are present).

    python figures/make_figures.py                          # refusal direction, suffix hijack, multilingual
    python figures/make_figures.py --only refusal_direction --dtype float32

Each analysis runs through the library with its default settings and writes its stages into its
folder, so a second run only redraws. The first run takes about 25 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mechref.hijack import SuffixHijackSettings, report_suffix_hijack, run_suffix_hijack
from mechref.multilingual import MultilingualSettings, report_multilingual, run_multilingual
from mechref.refusal import RefusalDirectionSettings, report_refusal_direction, run_refusal_direction
from mechref.settings import ModelSettings, add_arguments, resolve

HERE = Path(__file__).resolve().parent
ANALYSES = ("refusal_direction", "suffix_hijack", "multilingual")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=ANALYSES, default=list(ANALYSES), help="analyses to draw (default: all)")
    parser.add_argument("--out", type=Path, default=HERE, help="folder of the figure folders (default: figures/)")
    add_arguments(parser, ModelSettings, ModelSettings(), "model")
    args = parser.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
