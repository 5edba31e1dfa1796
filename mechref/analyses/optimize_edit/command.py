"""Search edits for the best trade-off between refusal removed and side effect:

1. a multi-objective Optuna search (TPE, seeded, resumable from its own storage in --out) over the
   direction's layer (between candidate layers) and per-layer strengths of the attention and MLP
   output edits (a kernel over layers for each), scoring each trial by cheap proxies on val
   prompts: the harmful prompts' mean refusal score and the harmless prompts' first-token KL;
2. the Pareto front as an interactive figure, today's edit (full strength at the analysis's
   layer) as the reference;
3. the reference and the chosen points confirmed by generation on held-out test prompts
   (refusal k/n with intervals, McNemar against the reference, KL with intervals);
4. on request (--export-model) the chosen trade-off written as an edited transformers folder
   (then: python -m mechref.analyses.damage --edited DIR).

    python -m mechref.analyses.optimize_edit
    python -m mechref.analyses.optimize_edit --direction-run runs/sel_fast --splits ../shared/data/refusal_direction/splits

In Python: mechref.analyses.optimize_edit.run_optimize_edit.
"""

from __future__ import annotations

from typing import Sequence

from mechref.analyses.command import AnalysisCommand
from mechref.analyses.optimize_edit import OptimizeEditSettings, report_optimize_edit, run_optimize_edit
from mechref.analyses.optimize_edit.pipeline import check_optimize_edit

COMMAND = AnalysisCommand(
    "python -m mechref.analyses.optimize_edit",
    __doc__,
    OptimizeEditSettings,
    run_optimize_edit,
    report_optimize_edit,
    default_out="runs/optimize_edit",
    check=check_optimize_edit,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command on ``argv`` (default: the process's arguments); the exit code (0, 1 on a crash, 2 on bad
    input)."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
