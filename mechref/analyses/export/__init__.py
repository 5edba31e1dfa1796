"""The ``export`` analysis: the refusal-direction edit written for the tools people run models with
(transformers folder, LoRA adapter, GGUF, llama.cpp control vector), each file loaded back and
verified (``python -m mechref.analyses.export``)."""

from mechref.analyses.export.pipeline import ExportResult, check_export, run_export
from mechref.analyses.export.report import report_export
from mechref.analyses.export.settings import ExportSettings

__all__ = ["COMMAND", "ExportResult", "ExportSettings", "check_export", "main", "report_export", "run_export"]

from mechref.analyses.export.command import COMMAND, main
