"""What an edit breaks: over-refusal of safe prompts, divergence from the unedited model on its own
replies, and task capability, for directional ablation, activation addition and exported models."""

from mechref.damage.pipeline import DamageResult, check_damage, run_damage
from mechref.damage.report import report_damage
from mechref.damage.settings import DamageSettings

__all__ = ["DamageResult", "DamageSettings", "check_damage", "report_damage", "run_damage"]
