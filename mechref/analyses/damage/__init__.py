"""What an edit breaks: over-refusal of safe prompts, divergence from the unedited model on its own
replies, and task capability, for directional ablation, activation addition and exported models."""

from mechref.analyses.damage.pipeline import DamageResult, check_damage, run_damage
from mechref.analyses.damage.report import report_damage
from mechref.analyses.damage.settings import DamageSettings

__all__ = [
    "COMMAND",
    "DamageResult",
    "DamageSettings",
    "check_damage",
    "main",
    "report_damage",
    "run_damage",
]

from mechref.analyses.damage.command import COMMAND, main
