"""The condition colours stay distinguishable for colour-blind readers.

Check: each colour is converted to linear RGB, passed through the Machado, Oliveira & Fernandes
(2009) simulation matrices at full severity (protanopia, deuteranopia, tritanopia) and normal
vision, and compared in CIELAB (CIE76 distance). Every pair of conditions a figure compares must
stay at least 20 apart; the palette this replaced put the adversarial-suffix purple 5.4 from the
harmless blue under deuteranopia.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mechref.analyses.suffix_hijack.conditions import CONDITION_COLORS as HIJACK_COLORS
from mechref.report.palette import CONDITION_COLORS, CONDITION_DASHES, EDIT_COLORS, REGION_COLORS, condition_color

SIMULATIONS = {
    "normal": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]]),
}


def _linear(hex_color: str) -> np.ndarray:
    c = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _lab(linear_rgb: np.ndarray) -> np.ndarray:
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ np.clip(linear_rgb, 0, 1)
    x = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(x > 0.008856, np.cbrt(x), 7.787 * x + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def distance(a: str, b: str, vision: str) -> float:
    m = SIMULATIONS[vision]
    return float(np.linalg.norm(_lab(m @ _linear(a)) - _lab(m @ _linear(b))))


@pytest.mark.parametrize("vision", SIMULATIONS)
def test_every_pair_of_conditions_stays_distinguishable(vision):
    for group in (CONDITION_COLORS, EDIT_COLORS):  # the conditions that share figures
        for (a, ca), (b, cb) in itertools.combinations(group.items(), 2):
            assert distance(ca, cb, vision) >= 20, (a, b, vision)


def test_the_old_palette_fails_the_same_check():
    # The check itself can fail: the previous adversarial purple and harmless blue.
    assert distance("#8e44ad", "#2980b9", "deuteranopia") < 10


def test_one_colour_per_condition_everywhere():
    assert {name: CONDITION_COLORS[name] for name in HIJACK_COLORS} == HIJACK_COLORS
    assert condition_color("harmful_ablation") == CONDITION_COLORS["harmful"]
    assert condition_color("harmless_actadd") == CONDITION_COLORS["harmless"]
    assert set(REGION_COLORS.values()).isdisjoint(CONDITION_COLORS.values())
    assert len(set(CONDITION_DASHES[n] for n in ("harmful+adv_suffix", "harmful+random_suffix", "harmful"))) == 3
