"""Refusal per harm category (beyond one direction):

1. a difference-in-means direction per harm category at the refusal direction's layer and
   position (each category's prompts halved: one half makes the direction, the other measures it;
   categories below --min-prompts merged into "other");
2. the cosine matrix of the category directions and the global one, in clustering order;
3. cross-category transfer: ablate category A's direction, measure refusal of category B's held-out
   prompts, by the logit score for the whole matrix and by greedy replies for a sample;
4. per-category refusal at baseline and with the global direction ablated: which categories the
   single direction misses;
5. the refusal subspace: explained variance of the category directions, and refusal and KL as its
   top-k subspace is ablated (k = 1 ... --n-components) against the single direction.

    python -m mechref.analyses.categories                                 # bundled English set
    python -m mechref.analyses.categories --data ../shared/data/refusal_direction --out runs/categories_rd

In Python: mechref.analyses.categories.run_categories.
"""

from __future__ import annotations

from typing import Sequence

from mechref.analyses.categories import CategoriesSettings, check_categories, report_categories, run_categories
from mechref.analyses.command import AnalysisCommand

COMMAND = AnalysisCommand(
    "python -m mechref.analyses.categories",
    __doc__,
    CategoriesSettings,
    run_categories,
    report_categories,
    default_out="runs/categories",
    check=check_categories,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command on ``argv`` (default: the process's arguments); the exit code (0, 1 on a crash, 2 on bad
    input)."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
