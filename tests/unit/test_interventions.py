import pytest
import torch

from mechref.capture import capture_residual
from mechref.errors import NonFiniteError, ShapeError
from mechref.generation import generate_ids
from mechref.interventions import activation_addition, directional_ablation, intervene
from mechref.model.logits import last_token_logits
from tests.helpers import greedy_without_cache


def all_points(model, prompts):
    return torch.cat(
        [
            capture_residual(model, prompts, positions="post_instruction", kind=kind, progress=False)
            for kind in ("resid_pre", "resid_mid", "resid_post")
        ],
        dim=2,
    )


def test_ablation_removes_projection_at_every_layer(tiny, prompts):
    direction = torch.randn(tiny.d_model)
    unit = direction / direction.norm()
    before = all_points(tiny, prompts)
    assert (before @ unit).abs().max() > 0.1  # there is something to remove
    with directional_ablation(tiny, direction):
        after = all_points(tiny, prompts)
    assert (after @ unit).abs().max() <= 1e-5
    # The hooks are gone afterwards.
    torch.testing.assert_close(all_points(tiny, prompts), before)


def test_addition_moves_projection_by_coefficient(tiny, prompts):
    vector = torch.randn(tiny.d_model)
    unit = vector / vector.norm()
    layer = 1
    base = capture_residual(tiny, prompts, layers=[layer], positions="post_instruction", progress=False)
    for coefficient in (1.0, -2.5):
        with activation_addition(tiny, vector, layer, coefficient):
            moved = capture_residual(tiny, prompts, layers=[layer], positions="post_instruction", progress=False)
        shift = (moved - base) @ unit
        torch.testing.assert_close(shift, torch.full_like(shift, coefficient * float(vector.norm())), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(moved - base, (coefficient * vector).expand_as(moved), atol=1e-4, rtol=1e-4)


def test_interventions_act_during_generation(tiny_qwen):
    prompt = "Write a poem"
    direction = torch.randn(tiny_qwen.d_model) * 20
    with activation_addition(tiny_qwen, direction, layer=1):
        expected = greedy_without_cache(tiny_qwen, prompt, 5)
        got = generate_ids(tiny_qwen, [prompt], max_new_tokens=5, progress=False)[0]
    plain = generate_ids(tiny_qwen, [prompt], max_new_tokens=5, progress=False)[0]
    assert got == expected[: len(got)]
    assert got != plain  # a large steering vector changes the greedy reply


def test_bad_directions_are_rejected(tiny_qwen):
    with pytest.raises(ShapeError, match="width 64"), directional_ablation(tiny_qwen, torch.randn(65)):
        pass
    with pytest.raises(NonFiniteError), activation_addition(tiny_qwen, torch.full((64,), float("nan")), layer=0):
        pass
    with pytest.raises(ShapeError, match="zero"), directional_ablation(tiny_qwen, torch.zeros(64)):
        pass


def test_interventions_in_bfloat16_match_float32():
    # The hooks cast the direction to the activations' dtype: in bfloat16 they must still run and
    # agree with float32 to bfloat16 precision.
    from mechref.testing import tiny_model

    model = tiny_model("qwen2", seed=3)
    r = torch.randn(model.d_model, generator=torch.Generator().manual_seed(5))
    prompts = ["Write a poem", "Hack a bank"]
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        with directional_ablation(model, r):
            ablated = last_token_logits(model, prompts, progress=False)
        with activation_addition(model, r, 1):
            added = last_token_logits(model, prompts, progress=False)
        results[dtype] = (ablated, added)
    for a, b in zip(results[torch.float32], results[torch.bfloat16]):
        torch.testing.assert_close(a, b, atol=0.15, rtol=0.05)


def test_defaults_and_errors_of_intervene(tiny_qwen):
    r = torch.randn(tiny_qwen.d_model)
    prompts = ["Write a poem"]
    with intervene(tiny_qwen, "baseline") as model:
        assert model is tiny_qwen
    with intervene(tiny_qwen, "addition", r, layer=1):  # coefficient 1 by default
        default = last_token_logits(tiny_qwen, prompts, progress=False)
    with activation_addition(tiny_qwen, r, 1, 1.0):
        explicit = last_token_logits(tiny_qwen, prompts, progress=False)
    with activation_addition(tiny_qwen, r, 1):
        plain_default = last_token_logits(tiny_qwen, prompts, progress=False)
    torch.testing.assert_close(default, explicit)
    torch.testing.assert_close(plain_default, explicit)
    with pytest.raises(ValueError, match="the ablation intervention needs a direction"):
        intervene(tiny_qwen, "ablation")
    with pytest.raises(ValueError, match="activation addition needs the layer"):
        intervene(tiny_qwen, "addition", r)
    with pytest.raises(ValueError, match="unknown intervention 'steer'; choose baseline, ablation or addition"):
        intervene(tiny_qwen, "steer", r, layer=1)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="steering vector"):
        activation_addition(tiny_qwen, torch.ones(3), 1).__enter__()


def test_addition_hook_adds_the_vector_itself_by_default(tiny_qwen):
    from mechref.interventions import addition_hooks

    vector = torch.randn(tiny_qwen.d_model)
    ((name, add),) = addition_hooks(tiny_qwen, vector, 1)
    x = torch.randn(2, 3, tiny_qwen.d_model, dtype=torch.float64)
    assert name.startswith("blocks.1.")
    torch.testing.assert_close(add(x), x + vector.double())
    with pytest.raises(ValueError, match="needs the layer"):
        intervene(tiny_qwen, "addition", vector)
