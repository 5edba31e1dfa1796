"""The quickstart: the whole stack in one short run (capture a difference-in-means direction at
one layer, ablate it from harmful prompts, add it to harmless ones)."""

from mechref.quickstart.pipeline import QuickstartResult, check_quickstart, run_quickstart
from mechref.quickstart.report import report_quickstart
from mechref.quickstart.settings import QuickstartSettings

__all__ = ["QuickstartResult", "QuickstartSettings", "check_quickstart", "report_quickstart", "run_quickstart"]
