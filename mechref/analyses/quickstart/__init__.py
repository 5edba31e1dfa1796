"""The quickstart: the whole stack in one short run (capture a difference-in-means direction at
one layer, ablate it from harmful prompts, add it to harmless ones)."""

from mechref.analyses.quickstart.pipeline import QuickstartResult, check_quickstart, run_quickstart
from mechref.analyses.quickstart.report import report_quickstart
from mechref.analyses.quickstart.settings import QuickstartSettings

__all__ = [
    "COMMAND",
    "QuickstartResult",
    "QuickstartSettings",
    "check_quickstart",
    "main",
    "report_quickstart",
    "run_quickstart",
]

from mechref.analyses.quickstart.command import COMMAND, main
