import pytest
import torch

from mechref.attribution import direct_feature_attribution
from mechref.hooks import capture_residual


@pytest.mark.parametrize("layer", [1, 3])
def test_attribution_sums_to_projection(tiny, prompts, layer):
    direction = torch.randn(tiny.d_model)
    attr = direct_feature_attribution(tiny, prompts, direction, layer=layer, progress=False)
    assert attr.heads.shape == (len(prompts), layer, tiny.n_heads)
    assert attr.residual_error.abs().max() < 1e-4
    attr.check()
    # The projection is that of the captured residual stream, independently measured.
    kind, at = ("resid_pre", layer) if layer < tiny.n_layers else ("resid_post", tiny.n_layers - 1)
    resid = capture_residual(tiny, prompts, layers=[at], positions=-1, kind=kind, progress=False)[:, 0, 0]
    torch.testing.assert_close(attr.projection, (resid.double() @ (direction / direction.norm()).double()), atol=1e-4, rtol=1e-4)


def test_heads_sum_to_attention_output(tiny_qwen, prompts):
    direction = torch.randn(tiny_qwen.d_model)
    unit = direction / direction.norm()
    attr = direct_feature_attribution(tiny_qwen, prompts, direction, layer=2, progress=False)
    mid = capture_residual(tiny_qwen, prompts, layers=[1], positions=-1, kind="resid_mid", progress=False)[:, 0, 0]
    pre = capture_residual(tiny_qwen, prompts, layers=[1], positions=-1, kind="resid_pre", progress=False)[:, 0, 0]
    attn_out = (mid - pre).double() @ unit.double()
    torch.testing.assert_close(attr.heads[:, 1].sum(-1) + attr.attn_bias[:, 1], attn_out, atol=1e-4, rtol=1e-4)


def test_zeroing_a_head_removes_its_attribution(tiny_qwen, prompts):
    direction = torch.randn(tiny_qwen.d_model)
    attr = direct_feature_attribution(tiny_qwen, prompts, direction, layer=3, progress=False)
    layer, head, _ = attr.top_heads(1)[0]

    def zero_head(z, hook=None):
        z = z.clone()
        z[:, :, head] = 0
        return z

    with tiny_qwen.hooks([(f"blocks.{layer}.attn.o.hook_in", zero_head)]):
        ablated = direct_feature_attribution(tiny_qwen, prompts, direction, layer=layer + 1, progress=False)
    assert ablated.heads[:, layer, head].abs().max() < 1e-6
    # Removing a head's write changes the stream by its direct contribution plus the change it
    # causes in the same layer's MLP (which reads the stream after attention).
    before = direct_feature_attribution(tiny_qwen, prompts, direction, layer=layer + 1, progress=False)
    expected = before.heads[:, layer, head] + before.mlp[:, layer] - ablated.mlp[:, layer]
    torch.testing.assert_close(before.projection - ablated.projection, expected, atol=1e-4, rtol=1e-4)


def test_top_heads_are_sorted(tiny_qwen, prompts):
    attr = direct_feature_attribution(tiny_qwen, prompts, torch.randn(64), layer=3, progress=False)
    top = attr.top_heads(5)
    values = [v for _, _, v in top]
    assert values == sorted(values, reverse=True)
    assert top[0][2] == pytest.approx(float(attr.heads.mean(0).max()))


def test_head_outputs_sum_to_attention_output(tiny, prompts):
    from mechref.attribution import head_outputs

    per_head = head_outputs(tiny, prompts, layer=1, progress=False)
    assert per_head.shape == (len(prompts), tiny.n_heads, tiny.d_model)
    mid = capture_residual(tiny, prompts, layers=[1], positions=-1, kind="resid_mid", progress=False)[:, 0, 0]
    pre = capture_residual(tiny, prompts, layers=[1], positions=-1, kind="resid_pre", progress=False)[:, 0, 0]
    torch.testing.assert_close(per_head.sum(1), (mid - pre).float(), atol=1e-4, rtol=1e-4)
