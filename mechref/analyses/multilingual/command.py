"""Refusal across languages (Wang et al. 2025), every analysis on shared activations:

1. baseline safety audit: refusal of harmful and harmless test prompts per language (languages
   whose harmful compliance exceeds 10% are flagged as not safety-aligned);
2. per-language refusal vectors and their cosine parallelism (at the direction's layer and across layers);
3. cross-lingual transfer: ablate (or add) each language's vector and measure refusal in every
   language (logit refusal score), plus greedy replies with the English vector ablated;
4. silhouette scores of harmful vs harmless activations per language and layer;
5. PCA per language with the prompts the model complied with highlighted;
6. repair (only when named: ``--parts audit repair``): the English refusal vector added in the languages
   that refuse least, at each coefficient, every prompt paired with its audit reply.

``--parts`` runs some of them on the same output folder (the cosine parallelism alone:
``--parts cosine``; silhouette and PCA with the prompts the model complied with: ``--parts audit silhouette``).

    python -m mechref.analyses.multilingual                            # bundled set, 8 languages
    python -m mechref.analyses.multilingual --data ../shared/data/polyrefuse \\
        --languages en de es fr ja zh th yo --n-train 32 --n-test 16 --out runs/multilingual_polyrefuse
    python -m mechref.analyses.multilingual --data my_prompts.csv --judge mined   # your own languages
"""

from __future__ import annotations

from typing import Sequence

from mechref.analyses.command import AnalysisCommand
from mechref.analyses.multilingual import MultilingualSettings, report_multilingual, run_multilingual
from mechref.analyses.multilingual.pipeline import check_multilingual

COMMAND = AnalysisCommand(
    "python -m mechref.analyses.multilingual",
    __doc__,
    MultilingualSettings,
    run_multilingual,
    report_multilingual,
    default_out="runs/multilingual",
    check=check_multilingual,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command on ``argv`` (default: the process's arguments); the exit code (0, 1 on a crash, 2 on bad
    input)."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
