"""One visual language for every figure: a fixed, colour-blind-safe colour (and line dash) per
condition, and a separate palette for token regions.

Conditions use the Okabe–Ito palette: harmful vermillion, harmless blue, harmful with the
adversarial suffix reddish purple, with a random suffix black. Every pair stays distinguishable
under simulated protanopia, deuteranopia and tritanopia (``tests/test_palette.py`` checks it with
the Machado et al. 2009 simulation and CIELAB distances). Lines also differ by dash, a second cue
that survives greyscale printing. Token regions use muted tones of another family (Paul Tol's
"muted"), so that a region colour is never read as a condition.

>>> condition_color("harmful+adv_suffix"), condition_dash("harmless")
('#CC79A7', 'solid')
"""

from __future__ import annotations

HARMFUL = "#D55E00"  # vermillion
HARMLESS = "#0072B2"  # blue
ADVERSARIAL = "#CC79A7"  # reddish purple
RANDOM = "#000000"  # black
OTHER = "#009E73"  # bluish green, for anything else

CONDITION_COLORS = {
    "harmful": HARMFUL,
    "harmless": HARMLESS,
    "harmful+adv_suffix": ADVERSARIAL,
    "harmful+random_suffix": RANDOM,
}
# The damage analysis's conditions (the unedited model and its edits), which share a figure only
# with each other: distinguishable among themselves, like the conditions above.
EDIT_COLORS = {"original": "#999999", "ablation": "#E69F00", "actadd": "#56B4E9", "exported": "#000000"}
CONDITION_DASHES = {"harmful": "solid", "harmless": "solid", "harmful+adv_suffix": "dash", "harmful+random_suffix": "dot"}

REGION_COLORS = {"system": "#BBBBBB", "instruction": "#88CCEE", "suffix": "#DDCC77", "post": "#44AA99"}


def condition_color(name: str) -> str:
    """The colour of a condition; a refusal-direction condition (``harmful_ablation``, …) takes the
    colour of its prompt set."""
    if name in CONDITION_COLORS:
        return CONDITION_COLORS[name]
    if name in EDIT_COLORS:
        return EDIT_COLORS[name]
    if name.startswith("harmful"):
        return HARMFUL
    if name.startswith("harmless"):
        return HARMLESS
    return OTHER


def condition_dash(name: str) -> str:
    """The line dash of a condition (solid unless it has its own)."""
    return CONDITION_DASHES.get(name, "solid")
