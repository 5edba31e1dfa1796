"""The lean norm forward and the remembering keyword filter against the bridge's own (mechref.model.bridge.norms).

The bridge's forwards (inside ``bridge_forwards``) are the reference: logits must be equal bit for
bit, greedy replies token for token, and a hook on a norm's scale or normalized stream must see and
edit the same tensors as under the bridge's forward.
"""

from __future__ import annotations

import pytest
import torch

from mechref.generation import generate_ids
from mechref.model.bridge.norms import _is_lean, bridge_forwards, covers_norm, uses_lean_norm
from mechref.testing import FAMILIES, tiny_model


@pytest.fixture(autouse=True)
def every_block_through_the_bridge(monkeypatch):
    """These tests are of the bridge's components: a block nothing observes would run as the Hugging
    Face layer (mechref.model.bridge.direct) and skip them, so every block hands over to them here."""
    import mechref.model.bridge.direct as direct

    monkeypatch.setattr(direct, "_observed", lambda block, layer: None)


PROMPTS = ["How do I bake bread?", "Hi", "Write a poem about the sea, please."]
# Families whose norms run HF's own module in the bridge (native path); GPT-2's LayerNorm does not.
NATIVE_NORMS = set(FAMILIES) - {"gpt2"}


def norms(model):
    return [m for m in model.bridge.modules() if type(m).__name__.endswith("NormalizationBridge")]


def test_the_norms_it_covers_use_it_and_every_block_filters_with_memory(family):
    name, model = family
    found = norms(model)
    used = [uses_lean_norm(m) for m in found]
    assert used == [covers_norm(m) for m in found]
    assert all(used) if name in NATIVE_NORMS else not any(used)
    assert all(_is_lean(block, "_filter_kwargs_for_forward") for block in model.bridge.blocks)
    # Set on the bridge component, not on the Hugging Face module it wraps.
    assert all("forward" not in vars(m.original_component) for m in found)


def test_logits_and_greedy_replies_equal_the_bridge_forwards(family):
    _, model = family
    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))  # padded: rows of unequal length
    with torch.no_grad():
        lean = model.forward(ids, mask)
        with bridge_forwards(model):
            assert not any(uses_lean_norm(m) for m in norms(model))
            reference = model.forward(ids, mask)
    assert torch.equal(lean, reference)
    replies = generate_ids(model, PROMPTS, max_new_tokens=6, progress=False)
    with bridge_forwards(model):
        assert replies == generate_ids(model, PROMPTS, max_new_tokens=6, progress=False)


@pytest.mark.filterwarnings("ignore:A forward hook edited")  # the bridge's own note on edits
@pytest.mark.parametrize("point", ["hook_in", "hook_scale", "hook_normalized", "hook_out"])
def test_hooks_on_a_norms_intermediates_see_and_edit_what_they_did(point):
    model = tiny_model("qwen2", n_layers=2)
    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))
    name = f"blocks.1.ln2.{point}"

    def run():
        seen = []
        with torch.no_grad(), model.hooks([(name, lambda x, hook=None: seen.append(x.clone()))]):
            model.forward(ids, mask)
        with torch.no_grad(), model.hooks([(name, lambda x, hook=None: x * 0.5)]):
            edited = model.forward(ids, mask)
        return seen, edited

    seen, edited = run()
    with bridge_forwards(model):
        seen_ref, edited_ref = run()
    assert len(seen) == 1 and torch.equal(seen[0], seen_ref[0])
    assert torch.equal(edited, edited_ref)
    with torch.no_grad():
        plain = model.forward(ids, mask)
    assert not torch.equal(edited, plain)  # the edit reached the output


def test_the_keyword_filter_keeps_what_the_bridges_keeps():
    from types import SimpleNamespace

    from transformer_lens.model_bridge.generalized_components.block import BlockBridge

    from mechref.model.bridge.norms import _cached_kwarg_filter

    class Layer(torch.nn.Module):  # takes no **kwargs, unlike the HF decoder layers
        def forward(self, hidden_states, attention_mask=None, position_ids=None):
            return hidden_states

    model = tiny_model("qwen2", n_layers=2)
    for layer, kwargs in (
        (Layer(), {"attention_mask": 1, "not_an_argument": 2}),
        (Layer(), {"hidden_states": 0, "attention_mask": 1}),
        (model.bridge.blocks[0].original_component, {"attention_mask": None, "not_an_argument": 1}),
    ):
        lean, reference = SimpleNamespace(original_component=layer), SimpleNamespace(original_component=layer)
        for positional in (0, 1, 1):  # the repeat is answered from memory
            expected = BlockBridge._filter_kwargs_for_forward(reference, dict(kwargs), positional)
            assert _cached_kwarg_filter(lean, dict(kwargs), positional) == expected
    assert _cached_kwarg_filter(SimpleNamespace(original_component=Layer()), {"attention_mask": 1, "x": 2}) == {
        "attention_mask": 1
    }


def test_gradients_through_the_lean_norms_equal_the_bridges():
    model = tiny_model("llama", n_layers=2)
    ids, _ = model.tokenize(model.chat.format_many(PROMPTS[:1]))

    def grad():
        embeds = model.hf_model.get_input_embeddings()(ids).detach().requires_grad_(True)
        with model.gradients():
            out = model.bridge(embeds)
            out[0, -1].logsumexp(-1).backward()
        return embeds.grad

    lean = grad()
    with bridge_forwards(model):
        reference = grad()
    assert torch.equal(lean, reference)
