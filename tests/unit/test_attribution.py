import pytest
import torch

from mechref.attribution import direct_feature_attribution
from mechref.capture import capture_residual


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


def test_layer_none_negative_and_out_of_range(tiny_qwen, prompts):
    direction = torch.randn(tiny_qwen.d_model)
    n = tiny_qwen.n_layers
    final = direct_feature_attribution(tiny_qwen, prompts, direction, progress=False)
    assert final.layer == n and final.heads.shape[1] == n
    explicit = direct_feature_attribution(tiny_qwen, prompts, direction, layer=n, progress=False)
    torch.testing.assert_close(final.projection, explicit.projection)
    last = direct_feature_attribution(tiny_qwen, prompts, direction, layer=-1, progress=False)
    assert last.layer == n - 1
    before_last = direct_feature_attribution(tiny_qwen, prompts, direction, layer=n - 1, progress=False)
    torch.testing.assert_close(last.projection, before_last.projection)
    embed_only = direct_feature_attribution(tiny_qwen, prompts, direction, layer=0, progress=False)
    assert embed_only.layer == 0 and embed_only.heads.shape[1] == 0
    torch.testing.assert_close(embed_only.embed, embed_only.projection)  # the stream entering block 0 is the embedding
    assert (embed_only.embed != 0).all()
    for bad in (n + 1, -n - 1):
        with pytest.raises(ValueError, match=rf"layer must be in 0\.\.{n} .*got {bad + n if bad < 0 else bad}$"):
            direct_feature_attribution(tiny_qwen, prompts, direction, layer=bad, progress=False)


def test_unnormalized_direction_scales_the_projection(tiny_qwen, prompts):
    direction = torch.randn(tiny_qwen.d_model)
    unit = direct_feature_attribution(tiny_qwen, prompts, direction, layer=2, progress=False)
    raw = direct_feature_attribution(tiny_qwen, prompts, direction * 3, layer=2, normalize=False, progress=False)
    scale = 3 * float(direction.norm())
    torch.testing.assert_close(raw.projection, unit.projection * scale, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(raw.heads, unit.heads * scale, atol=1e-4, rtol=1e-4)


def test_raw_text_prompts_skip_the_chat_template(tiny_qwen, prompts):
    from mechref.attribution import head_outputs

    direction = torch.randn(tiny_qwen.d_model)
    formatted = tiny_qwen.chat.format_many(prompts)
    chat = direct_feature_attribution(tiny_qwen, prompts, direction, layer=2, progress=False)
    raw = direct_feature_attribution(tiny_qwen, formatted, direction, layer=2, chat=False, progress=False)
    torch.testing.assert_close(raw.heads, chat.heads)
    torch.testing.assert_close(
        head_outputs(tiny_qwen, formatted, 1, chat=False, progress=False), head_outputs(tiny_qwen, prompts, 1, progress=False)
    )


def test_attention_output_bias_is_attributed_separately(prompts):
    from mechref.testing import tiny_model

    model = tiny_model("qwen2")
    direction = torch.randn(model.d_model)
    o_proj = model.hf_model.model.layers[1].self_attn.o_proj
    bias = torch.randn(model.d_model)
    o_proj.bias = torch.nn.Parameter(bias)
    attr = direct_feature_attribution(model, prompts, direction, layer=3, progress=False)
    unit = direction.double() / direction.double().norm()
    want = torch.tensor([0.0, float(bias.double() @ unit), 0.0], dtype=torch.float64)
    torch.testing.assert_close(attr.attn_bias, want.expand(len(prompts), -1))
    attr.check(rtol=1e-5, atol=1e-5)


def test_check_tolerances():
    from mechref.attribution import Attribution

    def attribution(projection, error):
        n = len(projection)
        projection = torch.tensor(projection, dtype=torch.float64)
        return Attribution(
            layer=1,
            position=-1,
            embed=projection + torch.tensor(error, dtype=torch.float64),
            heads=torch.zeros(n, 1, 2, dtype=torch.float64),
            attn_bias=torch.zeros(n, 1, dtype=torch.float64),
            mlp=torch.zeros(n, 1, dtype=torch.float64),
            projection=projection,
        )

    attribution([0.5], [0.0019]).check()  # |projection| < 1 counts as 1: limit 1e-3 + 1e-3
    attribution([0.0], [0.002]).check()  # exactly at the limit passes
    with pytest.raises(AssertionError, match=r"prompt 0 sums to 0\.5025 but the residual stream's projection is 0\.5;"):
        attribution([0.5], [0.0025]).check()
    attribution([100.0], [0.1]).check()  # relative to the projection: limit 1e-3 + 0.1
    with pytest.raises(AssertionError, match="prompt 1 "):
        attribution([100.0, 1.0, 1.0], [0.0, 0.5, 0.5]).check()  # the first bad prompt is named
    attribution([1.0], [0.5]).check(rtol=0.5, atol=0.01)


def test_top_heads_default_and_subset(tiny_qwen, prompts):
    attr = direct_feature_attribution(tiny_qwen, prompts, torch.randn(64), layer=3, progress=False)
    assert len(attr.top_heads()) == 10 and len(attr.top_heads(100)) == 3 * tiny_qwen.n_heads
    first = attr.top_heads(1, prompts=slice(0, 1))[0]
    assert first[2] == pytest.approx(float(attr.heads[0].max()))


def test_completeness_holds_in_bfloat16_and_still_catches_a_missing_component(tiny_folder, prompts):
    """In bfloat16 the model's own additions round the stream: the default check allows that
    rounding (measured per prompt) and nothing more."""
    from mechref import load_model

    model = load_model(tiny_folder, dtype="bfloat16")
    direction = torch.randn(model.d_model)
    attr = direct_feature_attribution(model, prompts, direction, progress=False)
    error = attr.residual_error.abs()
    assert error.max() > 1e-3  # bfloat16 rounding is visible: the float32 tolerance alone would fail
    assert (error <= attr.allowed_error).all()
    attr.check()
    # The allowance is the closed form over the stream the model ended with.
    stream = capture_residual(model, prompts, layers=[model.n_layers - 1], positions=-1, kind="resid_post", progress=False)
    unit = (direction / direction.norm()).double()
    per_write = torch.finfo(torch.bfloat16).eps / (2 * 3**0.5) * (stream[:, 0, 0].double() * unit).pow(2).sum(-1).sqrt()
    torch.testing.assert_close(attr.rounding, 6.0 * (2 * model.n_layers + 1) ** 0.5 * per_write, rtol=1e-3, atol=1e-6)
    # A decomposition missing the largest MLP write fails.
    layer = int(attr.mlp.abs().mean(0).argmax())
    attr.mlp[:, layer] = 0
    assert (attr.residual_error.abs() > attr.allowed_error).any()
    with pytest.raises(AssertionError, match="sums to"):
        attr.check()
