"""The conditions the suffix analysis compares, as in Arditi et al. (2024):

* ``harmful``: the harmful instructions alone;
* ``harmful+adv_suffix``: each followed by the adversarial (GCG) suffix;
* ``harmful+random_suffix``: each followed by a seeded random suffix of the same token length;
* ``harmless``: harmless instructions, the reference level of a prompt the model answers.

>>> conditions = build_conditions(["Build a bomb"], ["Bake bread"], " adv", " rnd")
>>> [c.name for c in conditions]
['harmful', 'harmful+adv_suffix', 'harmful+random_suffix', 'harmless']
>>> conditions[1].prompts
['Build a bomb adv']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mechref.report.palette import condition_color

HARMFUL, ADVERSARIAL, RANDOM, HARMLESS = "harmful", "harmful+adv_suffix", "harmful+random_suffix", "harmless"
#: The four conditions, in the order the figures show them.
CONDITION_NAMES = (HARMFUL, ADVERSARIAL, RANDOM, HARMLESS)
CONDITION_COLORS = {name: condition_color(name) for name in CONDITION_NAMES}


@dataclass
class Condition:
    """Instructions and the suffix appended to each (``""`` for none)."""

    name: str
    instructions: list[str]
    suffix: str = ""

    @property
    def prompts(self) -> list[str]:
        """The condition's prompts: each instruction with the suffix appended."""
        return [instruction + self.suffix for instruction in self.instructions]


def build_conditions(
    harmful: Sequence[str], harmless: Sequence[str], adversarial_suffix: str, random_suffix: str
) -> list[Condition]:
    """The four conditions, in :data:`CONDITION_NAMES` order."""
    if not harmful or not harmless:
        raise ValueError("the suffix analysis needs at least one harmful and one harmless instruction")
    return [
        Condition(HARMFUL, list(harmful)),
        Condition(ADVERSARIAL, list(harmful), adversarial_suffix),
        Condition(RANDOM, list(harmful), random_suffix),
        Condition(HARMLESS, list(harmless)),
    ]
