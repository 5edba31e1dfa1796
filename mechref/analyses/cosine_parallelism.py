"""Cosine parallelism of refusal vectors across languages (Wang et al. 2025).

One difference-in-means refusal vector per language, at the layer and position of the
refusal-direction analysis, and the cosine similarity of every pair, at that layer and across
layers. Reads (or computes) the activations shared with the other multilingual commands.

    python -m mechref.analyses.cosine_parallelism                       # bundled set, 8 languages
    python -m mechref.analyses.cosine_parallelism --data ../shared/data/polyrefuse \\
        --languages en de es fr ja zh --n-train 32 --out runs/multilingual_polyrefuse
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

from mechref.cli import AnalysisCommand
from mechref.multilingual import MultilingualSettings, report_multilingual, run_multilingual
from mechref.multilingual.pipeline import check_multilingual

COMMAND = AnalysisCommand(
    "python -m mechref.analyses.cosine_parallelism",
    __doc__,
    MultilingualSettings,
    partial(run_multilingual, parts=("cosine",)),
    partial(report_multilingual, command="cosine_parallelism"),
    default_out="runs/multilingual",
    check=check_multilingual,
)


def main(argv: Sequence[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
