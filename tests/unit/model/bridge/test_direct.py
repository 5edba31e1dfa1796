"""Blocks nothing observes run as plain Hugging Face layers (mechref.model.bridge.direct).

The guard is arithmetic: a block run directly, the same block run through the bridge, and plain
``transformers`` as ``from_pretrained`` loads it give the same numbers bit for bit, so that no result
depends on which layers are hooked. And a block anything observes (a hook point, a PyTorch hook on
one of its modules, a global hook, ``stop_at_layer``, training mode) goes through the bridge.
"""

from __future__ import annotations

import pytest
import torch

from mechref.model.bridge.direct import bridge_blocks, uses_direct_block
from mechref.model.plain import plain_view
from mechref.testing import tiny_model

PROMPTS = ["How do I bake bread?", "Hi", "Write a poem about the sea, please."]
# The families whose attention mechref computes with grouped heads: their blocks run directly.
DIRECT = ("qwen2", "llama", "mistral", "mixtral", "qwen2_moe")


def inputs(model):
    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))  # left-padded rows of unequal length
    return ids, mask, (mask.cumsum(-1) - 1).clamp_min(0)


def test_the_covered_families_run_directly_and_the_others_through_the_bridge(family):
    name, model = family
    expected = name in DIRECT
    assert [uses_direct_block(b) for b in model.bridge.blocks] == [expected] * model.n_layers
    assert uses_direct_block(model.hf_model) == expected


@pytest.mark.parametrize("arch", DIRECT)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_direct_bridged_and_partly_hooked_blocks_give_the_same_numbers(arch, dtype):
    model = tiny_model(arch, n_layers=3)
    model.hf_model.to(dtype)
    ids, mask, _ = inputs(model)
    direct = model.forward(ids, mask)
    with bridge_blocks(model):
        bridged = model.forward(ids, mask)
    seen = []
    with model.hooks([("blocks.1.hook_resid_pre", lambda x, hook: seen.append(1) or x)]):
        partly = model.forward(ids, mask)  # blocks 0 and 2 direct, block 1 through the bridge
    assert seen == [1]
    assert torch.equal(direct, bridged) and torch.equal(direct, partly)


@pytest.mark.parametrize("arch", DIRECT)
def test_unhooked_logits_are_plain_transformers(arch):
    """Against plain transformers as from_pretrained loads it (sdpa): bit for bit on a row without
    padding; with padding, its mask reaches the kernel in another form, so to float32 rounding."""
    model = tiny_model(arch, n_layers=2)
    plain = plain_view(model)
    ids, mask, positions = inputs(model)
    with torch.no_grad():
        ours = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        theirs = plain(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], rtol=1e-5, atol=1e-5)
        row = ids[2:, mask[2].bool()]  # the longest prompt: no padding
        assert torch.equal(model.hf_model(input_ids=row).logits, plain(input_ids=row).logits)


def count_bridge_calls(monkeypatch, model) -> list:
    """Record every call of a LinearBridge's forward (the bridge's q/k/v/o and MLP projections)."""
    linear = type(model.bridge.blocks[0].attn.q)
    calls: list = []
    forward = linear.forward
    owner = {id(m): f"blocks.{i}" for i, block in enumerate(model.bridge.blocks) for m in block.modules()}
    monkeypatch.setattr(linear, "forward", lambda self, *a, **k: calls.append(owner.get(id(self), "")) or forward(self, *a, **k))
    return calls


def test_an_unobserved_forward_makes_no_bridge_call_and_an_observed_block_makes_them(monkeypatch):
    model = tiny_model("qwen2", n_layers=2)
    ids, mask, _ = inputs(model)
    calls = count_bridge_calls(monkeypatch, model)
    model.forward(ids, mask)
    assert calls == []
    with model.hooks([("blocks.1.mlp.hook_out", lambda x, hook: x)]):
        model.forward(ids, mask)
    assert calls and set(calls) == {"blocks.1"}


@pytest.mark.parametrize(
    "observe",
    ["torch hook on a bridge module", "global hook", "training mode", "stop_at_layer"],
)
def test_each_way_of_observing_a_block_sends_it_through_the_bridge(monkeypatch, observe):
    model = tiny_model("qwen2", n_layers=2)
    ids, mask, _ = inputs(model)
    calls = count_bridge_calls(monkeypatch, model)
    if observe == "torch hook on a bridge module":
        handle = model.bridge.blocks[0].attn.register_forward_hook(lambda module, args, out: None)
    elif observe == "global hook":
        handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: None)
    try:
        if observe == "training mode":
            model.hf_model.train()
            try:
                with torch.no_grad():
                    model.hf_model(input_ids=ids, attention_mask=mask)
            finally:
                model.hf_model.eval()
        elif observe == "stop_at_layer":
            stream = model.forward(ids, mask, stop_at_layer=1)
            with bridge_blocks(model):
                assert torch.equal(stream, model.forward(ids, mask, stop_at_layer=1))
        else:
            model.forward(ids, mask)
    finally:
        if observe in ("torch hook on a bridge module", "global hook"):
            handle.remove()
    assert "blocks.0" in calls


def test_a_module_swapped_in_after_the_first_call_is_the_one_that_runs():
    """The direct copy holds the Hugging Face modules the bridge wrapped when it was made; one
    swapped in since (an adapter, a replaced projection) makes it stale, and it is made again."""
    model = tiny_model("qwen2", n_layers=2)
    ids, mask, _ = inputs(model)
    before = model.forward(ids, mask)
    down = model.bridge.blocks[1].mlp.out  # the LinearBridge around the MLP's output projection
    old = down._modules["_original_component"]
    new = torch.nn.Linear(old.in_features, old.out_features, bias=old.bias is not None)
    torch.nn.init.zeros_(new.weight)
    down._modules["_original_component"] = new
    try:
        after = model.forward(ids, mask)
        with bridge_blocks(model):
            reference = model.forward(ids, mask)
    finally:
        down._modules["_original_component"] = old
    assert torch.equal(after, reference) and not torch.equal(after, before)
    assert torch.equal(model.forward(ids, mask), before)  # swapped back: made again, the old numbers


def test_an_edit_of_the_weights_in_place_reaches_the_direct_copy():
    model = tiny_model("llama", n_layers=2)
    ids, mask, _ = inputs(model)
    before = model.forward(ids, mask)
    weight = model.hf_model.model.layers[0].original_component.self_attn.original_component.o_proj.original_component.weight
    with torch.no_grad():
        weight.mul_(0.5)
    try:
        after = model.forward(ids, mask)
        with bridge_blocks(model):
            assert torch.equal(after, model.forward(ids, mask))
        assert not torch.equal(after, before)
    finally:
        with torch.no_grad():
            weight.mul_(2.0)


@pytest.mark.parametrize("point", ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"])
def test_an_edit_on_a_blocks_boundary_acts_as_through_the_bridge(point):
    """Hooks only on the stream entering or leaving a block fire around its direct layer: an edit there
    must change the output exactly as the bridge's forward applies it (a hook fired on the wrong
    tensor, or not at all, would differ)."""
    model = tiny_model("qwen2", n_layers=2)
    ids, mask, _ = inputs(model)
    plain = model.forward(ids, mask)
    edit = [(point, lambda x, hook: x * 1.5)]
    with model.hooks(edit):
        edited = model.forward(ids, mask)
    with bridge_blocks(model), model.hooks(edit):
        reference = model.forward(ids, mask)
    assert torch.equal(edited, reference) and not torch.equal(edited, plain)
