"""The grouped-query attention forward against the bridge's own forward (mechref.model.bridge.attention).

The bridge's forward (``type(component).forward``) is the reference: it repeats the keys and
values per query head. The grouped forward must give the same logits, the same cached decoding,
the same attention patterns to hooks, and the same result when a hook edits the pattern.
"""

from __future__ import annotations

import pytest
import torch

from mechref.capture import capture_attention
from mechref.generation import generate_ids
from mechref.model.bridge.attention import bridge_attention as bridge_forward
from mechref.model.bridge.attention import covers, uses_grouped_attention
from mechref.testing import tiny_model


@pytest.fixture(autouse=True)
def every_block_through_the_bridge(monkeypatch):
    """These tests are of the bridge's components: a block nothing observes would run as the Hugging
    Face layer (mechref.model.bridge.direct) and skip them, so every block hands over to them here."""
    import mechref.model.bridge.direct as direct

    monkeypatch.setattr(direct, "_observed", lambda block, layer: None)


PROMPTS = ["How do I bake bread?", "Hi", "Write a poem about the sea, please."]
# Plain rotary attention with grouped key/value heads: the families the grouped forward must cover
# (the mixture-of-experts Mixtral and Qwen2-MoE have that attention too; Qwen3-MoE and OLMoE norm their queries and keys).
COVERED = {"qwen2", "llama", "mistral", "mixtral", "qwen2_moe"}


def attention_components(model):
    return [m for m in model.bridge.modules() if type(m).__name__.endswith("AttentionBridge")]


def test_the_families_it_covers_use_it_and_the_wrapped_modules_are_untouched(family):
    name, model = family
    components = attention_components(model)
    used = [uses_grouped_attention(c) for c in components]
    assert all(used) if name in COVERED else not any(used)
    assert used == [covers(c) for c in components]
    # The forward sits on the bridge component, not on the Hugging Face module it wraps.
    assert all("forward" not in vars(c.original_component) for c in components)


def test_logits_equal_the_bridge_forward_on_a_padded_batch(family):
    _name, model = family
    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        grouped = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
        with bridge_forward(model):
            reference = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
    real = mask.bool()
    torch.testing.assert_close(grouped[real], reference[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", sorted(COVERED))
def test_cached_decoding_gives_the_replies_of_the_bridge_forward(arch):
    model = tiny_model(arch, n_layers=2)
    grouped = generate_ids(model, PROMPTS, max_new_tokens=12, batch_size=3, progress=False)
    with bridge_forward(model):
        reference = generate_ids(model, PROMPTS, max_new_tokens=12, batch_size=3, progress=False)
    assert grouped == reference
    assert any(len(reply) > 3 for reply in grouped)  # the cache was read over several steps


@pytest.mark.parametrize("arch", sorted(COVERED))
def test_pattern_hooks_see_and_edit_what_the_bridge_forward_gives_them(arch):
    model = tiny_model(arch, n_layers=2)
    heads = [(0, 0), (0, 3), (1, 1)]
    grouped = capture_attention(model, PROMPTS, heads, query_positions=[-3, -1], batch_size=3, progress=False)
    with bridge_forward(model):
        reference = capture_attention(model, PROMPTS, heads, query_positions=[-3, -1], batch_size=3, progress=False)
    for a, b in zip(grouped.patterns, reference.patterns):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)

    # Heads 2 and 3 share key/value head 1: silencing one of them must move the logits, and
    # the grouped forward must move them exactly as the bridge's forward does.
    def silence_head_3(pattern, hook=None):
        pattern = pattern.clone()
        pattern[:, 3] = 0.0
        return pattern

    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))
    with torch.no_grad():
        plain = model.hf_model(input_ids=ids, attention_mask=mask).logits
        with model.hooks([("blocks.0.attn.hook_pattern", silence_head_3)]):
            edited = model.hf_model(input_ids=ids, attention_mask=mask).logits
            with bridge_forward(model):
                reference_edit = model.hf_model(input_ids=ids, attention_mask=mask).logits
    assert (edited - plain).abs().max() > 1e-3
    torch.testing.assert_close(edited, reference_edit, rtol=1e-5, atol=1e-5)


def test_a_setting_it_does_not_cover_falls_back_to_the_bridge_forward():
    model = tiny_model("qwen2", n_layers=2)
    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))
    results = {}
    model.bridge.set_use_attn_result(True)
    try:
        with torch.no_grad(), model.hooks([("blocks.1.attn.hook_result", lambda t, hook=None: results.setdefault("r", t))]):
            model.hf_model(input_ids=ids, attention_mask=mask)
    finally:
        model.bridge.set_use_attn_result(False)
    # Per-head results exist only in the bridge's forward: the hook fired, so the fallback ran.
    assert "r" in results and results["r"].shape[-2] == model.n_heads


@pytest.fixture
def fused_kernel_on_cpu(monkeypatch):
    """Let the fused kernel run on the CPU (as on a GPU) and count its calls."""
    import mechref.model.bridge.attention as ga

    calls = []
    kernel = torch.nn.functional.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls.append(kwargs.get("attn_mask"))
        return kernel(*args, **kwargs)

    monkeypatch.setattr(ga, "FUSED_KERNEL_DEVICES", {"cpu"})
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)
    return calls


def test_the_cpu_uses_the_fused_kernel_unless_a_hook_reads_the_pattern(monkeypatch):
    """On a CPU too, plain Hugging Face's default (sdpa) is faster than the grouped products at every
    batch size measured (benchmarks/results/attention.json): the kernel runs wherever the pattern is
    not read, and a hook on the pattern brings the grouped products back, layer by layer."""
    calls = []
    kernel = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    model = tiny_model("qwen2", n_layers=2)
    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))
    model.forward(ids, mask)
    assert len(calls) == 2  # one per layer
    calls.clear()
    with model.hooks([("blocks.0.attn.hook_pattern", lambda p, hook=None: p)]):
        model.forward(ids, mask)
    assert len(calls) == 1  # layer 1 only: layer 0's pattern is read


@pytest.mark.parametrize("arch", sorted(COVERED))
def test_the_fused_kernel_gives_the_bridge_forward_logits_and_replies(arch, fused_kernel_on_cpu):
    model = tiny_model(arch, n_layers=2)
    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        fused = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
    assert len(fused_kernel_on_cpu) == 2  # one call per layer, with the padding mask
    assert all(m is not None and m.ndim == 4 for m in fused_kernel_on_cpu)
    with torch.no_grad(), bridge_forward(model):
        reference = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
    real = mask.bool()
    torch.testing.assert_close(fused[real], reference[real], rtol=1e-4, atol=1e-4)

    replies = generate_ids(model, PROMPTS, max_new_tokens=12, batch_size=3, progress=False)
    with bridge_forward(model):
        assert replies == generate_ids(model, PROMPTS, max_new_tokens=12, batch_size=3, progress=False)


def test_a_hook_on_the_pattern_keeps_the_grouped_products(fused_kernel_on_cpu):
    model = tiny_model("qwen2", n_layers=2)
    heads = [(0, 1), (1, 2)]
    grouped = capture_attention(model, PROMPTS, heads, batch_size=3, progress=False)
    assert fused_kernel_on_cpu == []  # both layers' patterns are read: neither uses the kernel
    with bridge_forward(model):
        reference = capture_attention(model, PROMPTS, heads, batch_size=3, progress=False)
    for a, b in zip(grouped.patterns, reference.patterns):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)

    seen = []
    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))
    with torch.no_grad(), model.hooks([("blocks.0.attn.hook_pattern", lambda p, hook=None: seen.append(p.shape))]):
        model.hf_model(input_ids=ids, attention_mask=mask)
    assert len(seen) == 1 and len(fused_kernel_on_cpu) == 1  # layer 0 grouped (hooked), layer 1 fused


def test_a_float32_mask_stays_finite_for_a_bfloat16_kernel(fused_kernel_on_cpu):
    from mechref.model.bridge.attention import _fused_kernel_mask

    component = tiny_model("qwen2", n_layers=2).bridge.blocks[0].attn
    query, key = torch.zeros(2, 4, 3, 16, dtype=torch.bfloat16), torch.zeros(2, 2, 3, 16, dtype=torch.bfloat16)
    mask = torch.zeros(2, 1, 3, 3)
    mask[0, :, :, 0] = torch.finfo(torch.float32).min  # row 0 is left-padded: its first query sees nothing
    handed = _fused_kernel_mask(component, query, key, mask)
    assert isinstance(handed, torch.Tensor) and handed.dtype == torch.bfloat16 and bool(torch.isfinite(handed).all())
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(2, 1), key.repeat_interleave(2, 1), attn_mask=handed
    )
    assert bool(torch.isfinite(out).all())
