"""Silhouette clustering of harmful vs harmless activations per language and layer, and PCA
(Wang et al. 2025).

How well harmful and harmless prompts separate in each language (scikit-learn silhouette score
at every layer), and a PCA at the direction's layer, fitted jointly on every language, with the
harmful test prompts the model answered instead of refusing ("jailbroken") highlighted. Finding
those needs the baseline replies, so this command also runs (or reuses) the baseline audit.

    python -m mechref.analyses.silhouette
    python -m mechref.analyses.silhouette --data ../shared/data/polyrefuse --languages en de ja th yo zh \\
        --n-train 32 --out runs/multilingual_polyrefuse
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

from mechref.cli import AnalysisCommand
from mechref.multilingual import MultilingualSettings, report_multilingual, run_multilingual
from mechref.multilingual.pipeline import check_multilingual

COMMAND = AnalysisCommand(
    "python -m mechref.analyses.silhouette",
    __doc__,
    MultilingualSettings,
    partial(run_multilingual, parts=("audit", "silhouette")),
    partial(report_multilingual, command="silhouette"),
    default_out="runs/multilingual",
    check=check_multilingual,
)


def main(argv: Sequence[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
