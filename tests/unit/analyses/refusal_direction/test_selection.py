"""Fast-mode selection, the cost counters, the saved result and the filters' boundaries, each
checked against a direct computation (``tests/reference.py``) or a closed form."""

from __future__ import annotations

import math

import pytest
import reference
import torch

from mechref.analyses.refusal_direction import CandidateDirections, extract_candidates, select_direction
from mechref.analyses.refusal_direction.selection import (
    AllCandidatesFilteredError,
    CandidateScores,
    SelectionResult,
    SelectionSettings,
    _filters,
)
from mechref.testing import tiny_model
from tests.reference import HARMFUL, HARMLESS, hf_ablation, last_logits, refusal_scores


@pytest.fixture(scope="module")
def model():
    return tiny_model("qwen2", n_layers=5)


@pytest.fixture(scope="module")
def tokens(model):
    return reference.balanced_tokens(model)


@pytest.fixture(scope="module")
def candidates(model):
    return extract_candidates(model, HARMFUL, HARMLESS, progress=False)


@pytest.fixture(scope="module")
def fast(model, candidates, tokens):
    settings = SelectionSettings(mode="fast", top_k=2, proxy_prompts=2, batch_size=4, induce_threshold=-1e9, kl_threshold=1e9)
    return select_direction(model, candidates, HARMFUL, HARMLESS, tokens, settings, progress=False)


def test_fast_mode_proxy_scores_are_the_ablated_refusal_score_of_the_first_prompts(model, candidates, tokens, fast):
    cutoff = int(model.n_layers * 0.8)
    proxied = [s for s in fast.scores if s.proxy_bypass is not None]
    assert proxied and {s.layer for s in proxied} == set(range(1, cutoff))  # layer 0 holds zero vectors at the template
    for s in proxied:
        with hf_ablation(model.hf_model, candidates.get(s.position, s.layer)):
            want = float(refusal_scores(last_logits(model, HARMFUL[:2]), tokens).mean())
        assert s.proxy_bypass == pytest.approx(want, abs=2e-4), (s.position, s.layer)


def test_fast_mode_scores_only_the_best_top_k_by_proxy_and_skips_the_last_layers(model, fast):
    cutoff = int(model.n_layers * 0.8)
    proxied = sorted((s for s in fast.scores if s.proxy_bypass is not None), key=lambda s: s.proxy_bypass)
    # With every threshold open, the first top_k already holds a kept candidate: nothing more is scored.
    assert {(s.position, s.layer) for s in fast.scores if s.evaluated} == {(s.position, s.layer) for s in proxied[:2]}
    for s in fast.scores:
        if s.layer >= cutoff:
            assert s.filtered_by == ["last layers (not scored)"] and s.proxy_bypass is None and not s.evaluated
    assert (fast.position, fast.layer) == min((s.bypass, s.position, s.layer) for s in proxied[:2])[1:]


def test_fast_mode_widens_to_the_next_top_k_when_the_first_are_all_filtered(model, candidates, tokens):
    settings = SelectionSettings(mode="fast", top_k=1, proxy_prompts=2, kl_threshold=1e9, induce_threshold=-1e9)
    ranked = select_direction(model, candidates, HARMFUL, HARMLESS, tokens, settings, progress=False)
    order = sorted((s for s in ranked.scores if s.proxy_bypass is not None), key=lambda s: s.proxy_bypass)
    # Make the best-by-proxy candidate fail the induce filter only: its induce score is the threshold.
    first = order[0]
    settings = SelectionSettings(mode="fast", top_k=1, proxy_prompts=2, kl_threshold=1e9, induce_threshold=first.induce)
    widened = select_direction(model, candidates, HARMFUL, HARMLESS, tokens, settings, progress=False)
    evaluated = [(s.position, s.layer) for s in widened.scores if s.evaluated]
    assert (first.position, first.layer) in evaluated and len(evaluated) >= 2
    assert (widened.position, widened.layer) != (first.position, first.layer)


def test_cost_counters_match_a_closed_form(model, candidates, tokens, fast):
    n_val, proxy, k, batch = len(HARMFUL), 2, 2, 4
    eligible = sum(1 for s in fast.scores if s.proxy_bypass is not None)
    # Baselines (harmful, harmless) and, per fully scored candidate, ablated harmful, ablated
    # harmless and induced harmless: each a pass of ceil(3 / 4) = 1 batch over 3 prompts.
    full = 2 + 3 * k
    group = batch // proxy  # candidates packed into one proxy pass
    proxy_passes = math.ceil(eligible / group) * 2  # a shared-prefix pass and a suffix pass each
    assert fast.n_prompt_passes == full * n_val + eligible * proxy
    assert fast.n_forward_passes == full * math.ceil(n_val / batch) + proxy_passes


def test_baselines_are_the_unintervened_refusal_scores(model, tokens, fast):
    assert fast.baseline_harmful == pytest.approx(float(refusal_scores(last_logits(model, HARMFUL), tokens).mean()), abs=1e-4)
    assert fast.baseline_harmless == pytest.approx(float(refusal_scores(last_logits(model, HARMLESS), tokens).mean()), abs=1e-4)


def test_a_saved_direction_records_what_it_was_computed_with(fast, tmp_path):
    from safetensors import safe_open

    from mechref.framework.io import fingerprint
    from mechref.framework.runs import code_version

    identity = {"model": "tiny-qwen2", "dtype": "float32", "system_prompt": "Be brief.", "chat_template": "T"}
    fast.save(tmp_path, identity)
    with safe_open(str(tmp_path / "direction.safetensors"), "pt") as f:
        meta = f.metadata()
    # What tells a later run that the direction came from another system prompt, template or code.
    assert meta["system_prompt"] == fingerprint("Be brief.") != fingerprint(None)
    assert meta["chat_template"] == "T" and meta["dtype"] == "float32" and meta["code_version"] == code_version()


def test_a_saved_result_loads_back_equal(fast, tmp_path):
    from safetensors import safe_open

    fast.save(tmp_path, "tiny-qwen2")
    back = SelectionResult.load(tmp_path)
    assert back.to_dict() == fast.to_dict()
    assert back.baseline_harmless == fast.baseline_harmless and back.n_forward_passes == fast.n_forward_passes
    torch.testing.assert_close(back.direction, fast.direction)
    with safe_open(str(tmp_path / "direction.safetensors"), "pt") as f:
        assert f.metadata() == {"layer": str(fast.layer), "position": str(fast.position), "model": "tiny-qwen2"}


def test_near_zero_candidates_are_filtered_relative_to_the_largest_norm(model, tokens):
    d_model = model.d_model
    directions = torch.zeros(1, 3, d_model)
    directions[0, 1, 0] = 1e3  # the largest
    directions[0, 2, 1] = 1e-4  # 1e-7 of the largest: numerically zero
    mean = torch.zeros(1, 3, d_model)
    candidates = CandidateDirections(directions, mean, mean, [-1])
    settings = SelectionSettings(mode="exhaustive", prune_layer_fraction=0.0, kl_threshold=1e9, induce_threshold=-1e9)
    result = select_direction(model, candidates, HARMFUL, HARMLESS, tokens, settings, progress=False)
    by_layer = {s.layer: s for s in result.scores}
    assert by_layer[0].filtered_by == ["zero vector"] and by_layer[2].filtered_by == ["zero vector"]
    assert by_layer[1].kept and result.layer == 1


@pytest.mark.parametrize(
    "scores,expected",
    [
        (dict(bypass=0.1, induce=0.0, kl=0.05), ["induce <= 0.0"]),  # induce must be strictly above
        (dict(bypass=0.1, induce=0.01, kl=0.1), []),  # KL equal to the threshold is kept
        (dict(bypass=0.1, induce=0.01, kl=0.1000001), ["KL > 0.1"]),
        (dict(bypass=float("nan"), induce=0.01, kl=0.0), ["non-finite bypass"]),
        (dict(bypass=float("inf"), induce=0.01, kl=0.0), ["non-finite bypass"]),
        (dict(bypass=None, induce=None, kl=None), []),
    ],
)
def test_filter_boundaries(scores, expected):
    entry = CandidateScores(position=-1, layer=1, **scores)
    assert _filters(entry, SelectionSettings(), cutoff=4) == expected
    assert _filters(CandidateScores(position=-1, layer=4, **scores), SelectionSettings(), cutoff=4)[0] == "layer >= 4 (last 20%)"


def test_all_filtered_error_prints_every_candidates_scores():
    scores = [
        CandidateScores(-1, 1, bypass=0.25, induce=-0.5, kl=0.0625, filtered_by=["induce <= 0.0"]),
        CandidateScores(-2, 3, filtered_by=["last layers (not scored)"]),
    ]
    error = AllCandidatesFilteredError(scores, SelectionSettings())
    lines = str(error).splitlines()
    assert error.scores is scores
    assert "  -1     1    0.250   -0.500    0.062  induce <= 0.0" in lines
    assert "  -2     3        -        -        -  last layers (not scored)" in lines


def test_the_filter_error_names_the_selection_that_needs_no_refusal():
    error = AllCandidatesFilteredError([CandidateScores(-1, 1, filtered_by=["induce <= 0.0"])], SelectionSettings())
    assert "--selection cosmic" in str(error) and "--selection auto" in str(error)


def test_auto_is_the_papers_selection_where_a_candidate_is_kept(model, candidates, tokens, fast):
    settings = SelectionSettings(mode="auto", top_k=2, proxy_prompts=2, batch_size=4, induce_threshold=-1e9, kl_threshold=1e9)
    auto = select_direction(model, candidates, HARMFUL, HARMLESS, tokens, settings, progress=False)
    assert auto.fallback is None and auto.settings.mode == "auto"
    assert (auto.position, auto.layer) == (fast.position, fast.layer) and auto.scores == fast.scores
    assert auto.n_forward_passes == fast.n_forward_passes


def test_auto_falls_back_to_cosines_where_the_filters_keep_nothing_and_says_why(model, candidates, tokens):
    """induce > +inf filters out every candidate: the paper's selection raises; auto chooses what cosmic
    chooses, counts the passes of both, and names the filters that bound (saved and loaded back)."""
    closed = dict(top_k=2, proxy_prompts=2, batch_size=4, induce_threshold=float("inf"), kl_threshold=1e9, cosmic_prompts=4)
    with pytest.raises(AllCandidatesFilteredError) as failed:
        select_direction(model, candidates, HARMFUL, HARMLESS, tokens, SelectionSettings(mode="fast", **closed), progress=False)
    cosmic = select_direction(
        model, candidates, HARMFUL, HARMLESS, tokens, SelectionSettings(mode="cosmic", **closed), progress=False
    )
    auto = select_direction(
        model, candidates, HARMFUL, HARMLESS, tokens, SelectionSettings(mode="auto", **closed), progress=False
    )
    assert (auto.position, auto.layer) == (cosmic.position, cosmic.layer) and torch.equal(auto.direction, cosmic.direction)
    assert auto.n_forward_passes == cosmic.n_forward_passes + failed.value.n_forward_passes > cosmic.n_forward_passes
    assert auto.fallback is not None and "induce <= inf" in auto.fallback and "cosmic" in auto.fallback


def test_a_saved_fallback_is_loaded_back(tmp_path, fast):
    from dataclasses import replace

    replace(fast, fallback="because").save(tmp_path, "tiny")
    assert SelectionResult.load(tmp_path).fallback == "because"
    fast.save(tmp_path / "b", "tiny")
    assert SelectionResult.load(tmp_path / "b").fallback is None


def test_unknown_mode_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'fast', 'exhaustive', 'cosmic' or 'auto'"):
        SelectionSettings(mode="quick")  # type: ignore[arg-type]


def test_heatmaps_show_every_scored_candidate_in_its_panel(model, fast):
    import math

    from mechref.analyses.refusal_direction.figures import score_heatmaps

    fig = score_heatmaps(fast, model.n_layers)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    positions = sorted({s.position for s in fast.scores})
    for trace, key in zip(heatmaps, ["proxy_bypass", "bypass", "induce", "kl"], strict=True):
        cells = {
            (positions[i], layer): value
            for i, row in enumerate(trace.z)
            for layer, value in enumerate(row)
            if not math.isnan(value)
        }
        assert cells == {(s.position, s.layer): getattr(s, key) for s in fast.scores if getattr(s, key) is not None}, key
    cutoff = int(model.n_layers * 0.8)
    shaded = [shape for shape in fig.layout.shapes if shape.type == "rect"]
    assert len(shaded) == 4 and all(shape.x0 == cutoff - 0.5 for shape in shaded)
    assert sum("chosen" in (t.name or "") for t in fig.data if t.showlegend) == 1


def test_the_saved_selection_names_the_chosen_scores(fast):
    data = fast.to_dict()
    chosen = fast.chosen
    assert (data["bypass_score"], data["induce_score"], data["kl"]) == (chosen.bypass, chosen.induce, chosen.kl)
    assert (data["position"], data["layer"]) == (chosen.position, chosen.layer)


def test_fast_mode_proxy_scores_with_a_tokenizer_that_adds_bos():
    # The Llama-3 tokenizer prepends <|begin_of_text|> unless told not to; the template has it.
    llama = tiny_model("llama", n_layers=5)
    p = torch.softmax(last_logits(llama, HARMFUL + HARMLESS), -1).mean(0)
    tokens = p.argsort(descending=True)[:40].tolist()
    candidates = extract_candidates(llama, HARMFUL, HARMLESS, progress=False)
    settings = SelectionSettings(mode="fast", top_k=1, proxy_prompts=2, induce_threshold=-1e9, kl_threshold=1e9)
    result = select_direction(llama, candidates, HARMFUL, HARMLESS, tokens, settings, progress=False)
    for s in [s for s in result.scores if s.proxy_bypass is not None][:4]:
        with hf_ablation(llama.hf_model, candidates.get(s.position, s.layer)):
            want = float(refusal_scores(last_logits(llama, HARMFUL[:2]), tokens).mean())
        assert s.proxy_bypass == pytest.approx(want, abs=2e-4), (s.position, s.layer)
