"""Adversarial-suffix analysis (Arditi et al. 2024, section on suffixes): how a GCG suffix
suppresses the refusal direction by moving the attention of the heads that write it.

* :mod:`~mechref.analyses.suffix_hijack.regions` labels every token of a prompt (system / instruction /
  suffix / post) and measures how much attention each region receives;
* :mod:`~mechref.analyses.suffix_hijack.conditions` builds the conditions compared (instruction alone, with the
  adversarial suffix, with a random suffix of the same token length, harmless baseline);
* :mod:`~mechref.analyses.suffix_hijack.measure` gathers, per condition, the cosine with the refusal direction at
  every layer, the direct feature attribution of every head and MLP, and attention shares;
* :mod:`~mechref.analyses.suffix_hijack.figures` and :mod:`~mechref.analyses.suffix_hijack.views` draw them;
* :mod:`~mechref.analyses.suffix_hijack.settings`, :mod:`~mechref.analyses.suffix_hijack.pipeline` (:func:`run_suffix_hijack`) and
  :mod:`~mechref.analyses.suffix_hijack.report` (:func:`report_suffix_hijack`) make them one analysis.

The command line is ``mechref suffix_hijack``.
"""

from mechref.analyses.suffix_hijack.pipeline import SuffixHijackResult, run_suffix_hijack
from mechref.analyses.suffix_hijack.report import report_suffix_hijack
from mechref.analyses.suffix_hijack.settings import SuffixHijackSettings

__all__ = [
    "COMMAND",
    "SuffixHijackResult",
    "SuffixHijackSettings",
    "main",
    "report_suffix_hijack",
    "run_suffix_hijack",
]

from mechref.analyses.suffix_hijack.command import COMMAND, main
