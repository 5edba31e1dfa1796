"""Selection without generation (COSMIC-style): each candidate's cosines against a direct
computation with mechref's one-direction interventions and plain captures, and the selection
mode end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechref.analyses.refusal_direction.cosmic import cosmic_scores, reference_layers
from mechref.analyses.refusal_direction.selection import SelectionSettings, select_direction
from mechref.capture import capture_residual
from mechref.directions.candidates import extract_candidates
from mechref.interventions import activation_addition, directional_ablation
from tests.reference import HARMFUL, HARMLESS, balanced_tokens

VAL_HARMFUL = ["Poison a river", "Forge a passport", "Rob a small shop"]
VAL_HARMLESS = ["Paint a fence", "Write a short poem", "Fold a paper plane"]


def _mean_cos(acts: torch.Tensor, target: torch.Tensor) -> float:
    a, t = acts.double().numpy(), target.double().numpy()
    cos = (a * t).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(t, axis=-1))
    return float(cos.mean())


def test_cosines_of_each_candidate_match_a_direct_computation(tiny_qwen):
    model = tiny_qwen
    cands = extract_candidates(model, HARMFUL, HARMLESS, progress=False)
    found = cosmic_scores(model, cands, VAL_HARMFUL, VAL_HARMLESS, layer_fraction=0.34, prune_layer_fraction=0.0, progress=False)
    refs = found.reference_layers
    # Reference layers: least alike by cosine of the means (numpy), never layer 0.
    cos = [
        _mean_cos(cands.mean_harmful[:, layer], cands.mean_harmless[:, layer]) if layer else np.inf
        for layer in range(cands.n_layers)
    ]
    assert refs == sorted(np.argsort(cos)[: len(refs)].tolist()) and len(refs) == 1
    harmless_ref, harmful_ref = cands.mean_harmless[:, refs], cands.mean_harmful[:, refs]
    assert len(found.scores) == len(cands.positions) * (cands.n_layers - 1)  # layer 0's template positions: no direction
    for key in [(cands.positions[0], 1), (cands.positions[-1], 2)]:
        direction = cands.get(*key)
        with directional_ablation(model, direction):
            ablated = capture_residual(model, VAL_HARMFUL, layers=refs, positions="post_instruction", progress=False)
        with activation_addition(model, direction, key[1]):
            added = capture_residual(model, VAL_HARMLESS, layers=refs, positions="post_instruction", progress=False)
        expected = (_mean_cos(ablated.float().mean(0), harmless_ref), _mean_cos(added.float().mean(0), harmful_ref))
        np.testing.assert_allclose(found.scores[key], expected, atol=1e-4)
    assert found.best() == max(found.scores, key=lambda k: sum(found.scores[k]))
    # The reference layers are those the model separates most: a doctored pair of means moves them.
    doctored_h, doctored_b = cands.mean_harmful.clone(), cands.mean_harmless.clone()
    doctored_b[:, 2] = -doctored_h[:, 2]
    assert reference_layers(doctored_h, doctored_b, 0.34) == [2]


def test_cosmic_selection_chooses_the_best_cosine_and_scores_it_like_the_paper(tiny_qwen, tmp_path):
    model = tiny_qwen
    tokens = balanced_tokens(model)
    cands = extract_candidates(model, HARMFUL, HARMLESS, progress=False)
    settings = SelectionSettings(mode="cosmic", prune_layer_fraction=0.2, cosmic_layer_fraction=0.34)
    result = select_direction(model, cands, VAL_HARMFUL, VAL_HARMLESS, tokens, settings, progress=False)
    scored = [s for s in result.scores if s.cosmic is not None]
    assert scored and all(s.layer < 2 for s in scored)  # the last 20% of 3 layers is pruned
    best = max(scored, key=lambda s: s.cosmic)
    # COSMIC's score is the sum of its two cosine terms (ablation and addition).
    assert all(s.cosmic == pytest.approx(s.cosmic_ablation + s.cosmic_addition, abs=2e-6) for s in scored)
    assert any(abs(s.cosmic_addition) > 1e-3 for s in scored)  # so a difference would show
    assert (result.position, result.layer) == (best.position, best.layer)
    assert all(s.bypass is None for s in result.scores if s is not result.chosen)  # only the chosen gets the paper's scores
    assert result.chosen.bypass is not None and result.chosen.kl is not None and result.reference_layers
    result.save(tmp_path, model.name)
    again = type(result).load(tmp_path)
    assert again.reference_layers == result.reference_layers and again.chosen.cosmic == best.cosmic
