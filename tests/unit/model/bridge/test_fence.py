"""The fence around mechref's bridge forwards (mechref.model.bridge.fence): installed only on the
TransformerLens they were verified on; on a changed source or version the bridge's own forwards run,
with one warning, and the numbers stay the same. And the guard behind the fence: a hook on every
hook point of a model fires the same number of times with the same values under the bridge's
forwards and mechref's."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from mechref.model.bridge import fence
from mechref.model.bridge.attention import bridge_attention, uses_grouped_attention
from mechref.model.bridge.direct import bridge_blocks, uses_direct_block
from mechref.model.bridge.norms import bridge_forwards, uses_lean_norm
from mechref.testing import tiny_model

PROMPTS = ["How do I bake bread?", "Hi", "Write a poem about the sea, please."]
_FENCED = fence._NORM + "._hf_autograd_forward_with_hooks"


def replaced(model) -> int:
    return sum(uses_grouped_attention(m) or uses_lean_norm(m) or uses_direct_block(m) for m in model.bridge.modules())


@pytest.fixture(autouse=True)
def _fresh_warning():
    fence._warn_once.cache_clear()
    yield
    fence._warn_once.cache_clear()


def test_the_verified_transformer_lens_gets_the_replacements():
    assert fence.fence_problems() == []
    assert fence.transformer_lens_version() in fence.VERIFIED_VERSIONS
    assert replaced(tiny_model("qwen2", n_layers=2)) > 0


def test_every_fenced_member_exists_and_hashes_as_recorded():
    # A member renamed or removed upstream reads "missing", which is a mismatch too.
    assert {name: fence.source_hash(name) for name in fence.VERIFIED_SOURCES} == fence.VERIFIED_SOURCES
    assert fence.source_hash(fence._NORM + ".no_such_member") == "missing"


def _one_byte_changed(monkeypatch, qualified: str) -> None:
    path, _, member = qualified.rpartition(".")
    module, _, cls = path.rpartition(".")
    target = inspect.getattr_static(getattr(__import__(module, fromlist=[cls]), cls), member)
    real = inspect.getsource

    def getsource(obj):
        text = real(obj)
        if obj is target:  # flip one byte: the last character of the source
            text = text[:-1] + ("x" if text[-1] != "x" else "y")
        return text

    monkeypatch.setattr(fence.inspect, "getsource", getsource)


def test_one_changed_byte_falls_back_to_the_bridge_forwards_with_one_warning(monkeypatch):
    reference = tiny_model("qwen2", n_layers=2)
    ids, mask = reference.tokenize(reference.chat.format_many(PROMPTS))
    with torch.no_grad():
        expected = reference.forward(ids, mask)
    _one_byte_changed(monkeypatch, _FENCED)
    assert fence.fence_problems() == ["the source of NormalizationBridge._hf_autograd_forward_with_hooks changed"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fenced = tiny_model("qwen2", n_layers=2)
        tiny_model("llama", n_layers=2)  # a second model in the same process: no second warning
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "_hf_autograd_forward_with_hooks changed" in messages[0]
    assert "pip install 'transformer-lens==" in messages[0]
    assert replaced(fenced) == 0
    with torch.no_grad():  # the bridge's own attention arithmetic: the same logits to float32 rounding
        torch.testing.assert_close(fenced.forward(ids, mask), expected, rtol=1e-5, atol=1e-5)


def test_an_unverified_version_falls_back(monkeypatch):
    monkeypatch.setattr(fence, "transformer_lens_version", lambda: "4.99.0")
    with pytest.warns(RuntimeWarning, match=r"TransformerLens 4\.99\.0 is not one they were verified on"):
        model = tiny_model("qwen2", n_layers=2)
    assert replaced(model) == 0


def test_the_bridge_forwards_can_be_chosen_without_a_warning(monkeypatch):
    monkeypatch.setenv("MECHREF_BRIDGE_FORWARDS", "bridge")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model = tiny_model("qwen2", n_layers=2)
    assert replaced(model) == 0


def _record_every_hook_point(model, ids, mask, tensors_only: bool = False):
    """{hook name: [values]} with a hook on every hook point of the model, one forward pass (a
    value that is no tensor is recorded as NaN, or left out with ``tensors_only``)."""
    seen: dict[str, list[torch.Tensor]] = {}

    def make(name):
        def hook(value, hook=None):
            if isinstance(value, torch.Tensor):
                seen.setdefault(name, []).append(value.detach().clone())
            elif not tensors_only:
                seen.setdefault(name, []).append(torch.tensor(float("nan")))
            return value

        return hook

    # Straight on the hook points (past the bridge's gate on points it switches off, such as
    # hook_attn_in): a gated point that one forward fires and the other does not is caught too.
    points = dict(sorted(model.bridge.hook_dict.items()))
    for name, point in points.items():
        point.add_hook(make(name), dir="fwd")
    try:
        with torch.no_grad():
            logits = model.forward(ids, mask)
    finally:
        for point in points.values():
            point.remove_hooks("fwd")
    return list(points), seen, logits


def test_every_hook_point_fires_alike_under_both_forwards(family):
    _, model = family
    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))
    names, ours, logits = _record_every_hook_point(model, ids, mask)
    with bridge_attention(model), bridge_forwards(model), bridge_blocks(model):
        assert replaced(model) == 0
        reference_names, reference, reference_logits = _record_every_hook_point(model, ids, mask)
    assert names == reference_names
    # The same points fire, as often, with the same values (a point the copies skipped would be missing).
    assert sorted(ours) == sorted(reference)
    assert len(reference) > 10 * model.n_layers
    for name in reference:
        assert len(ours[name]) == len(reference[name]), name
        for a, b in zip(ours[name], reference[name]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, equal_nan=True, msg=name)
    torch.testing.assert_close(logits, reference_logits, rtol=1e-5, atol=1e-6)


def test_each_hook_point_alone_fires_alike_under_both_forwards(family):
    _, model = family
    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))
    ours = _record_each_point_alone_in_its_layer(model, ids, mask)
    # The bridge's own forwards take one path whatever is hooked, so one pass with every point
    # hooked is their reference; only mechref's replacements choose a path by what is hooked.
    with bridge_attention(model), bridge_forwards(model), bridge_blocks(model):
        _, reference, _ = _record_every_hook_point(model, ids, mask, tensors_only=True)
    assert sorted(ours) == sorted(reference)
    for name in reference:
        assert len(ours[name]) == len(reference[name]), name
        for a, b in zip(ours[name], reference[name]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_layers_are_told_apart_by_their_block_index():
    assert _layer_of("blocks.3.attn.hook_pattern") == "blocks.3"
    assert _layer_of("blocks.12.ln1.hook_scale") == "blocks.12"
    assert _layer_of("embed.hook_out") == "" and _layer_of("ln_final.hook_normalized") == ""


def _layer_of(name: str) -> str:
    """``blocks.N`` for a point inside layer N, ``""`` for the points outside the blocks."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "blocks" else ""


def _record_each_point_alone_in_its_layer(model, ids, mask):
    """{hook name: [values]} where every point is watched as the only hooked point of its layer: a
    replacement may take another path when some points of its layer have no hook (the lean norm
    does). Pass k hooks the k-th point of every layer at once (a layer's path never depends on
    another layer's hooks), so a model needs as many passes as its busiest layer has points."""
    by_layer: dict[str, list[str]] = {}
    for name in sorted(model.bridge.hook_dict):
        by_layer.setdefault(_layer_of(name), []).append(name)
    seen: dict[str, list[torch.Tensor]] = {}
    for k in range(max(len(names) for names in by_layer.values())):
        points = [(names[k], model.bridge.hook_dict[names[k]]) for names in by_layer.values() if k < len(names)]
        for name, point in points:

            def hook(value, hook=None, name=name):
                if isinstance(value, torch.Tensor):
                    seen.setdefault(name, []).append(value.detach().clone())
                return value

            point.add_hook(hook, dir="fwd")
        try:
            with torch.no_grad():
                model.forward(ids, mask)
        finally:
            for _, point in points:
                point.remove_hooks("fwd")
    return seen
