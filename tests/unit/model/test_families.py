"""The model-family support matrix, on a tiny random model of each family (``mechref.testing.FAMILIES``).

Every family: the bridge's logits equal plain Hugging Face's, the chat template's post-instruction
tokens are found, residual capture reads the stream Hugging Face computes, and direct feature
attribution sums to the projection (through the post-norms of Gemma-2, Gemma-3 and OLMo-2 too, their
scales frozen per token). Families in ``ORTHOGONALIZABLE``: the orthogonalized weights leave
nothing along the direction in the stream, and give the hook ablation's logits (exactly for the
families without post-norms; through the post-norms, the logits of the hooks that stand for that
edit). The others: the export refuses, before anything is written.
"""

from __future__ import annotations

import pytest
import torch

from mechref.attribution import direct_feature_attribution
from mechref.capture import capture_residual
from mechref.edits.orthogonalize import ORTHOGONALIZABLE, export_orthogonalized, orthogonalize_weights, writer_module_names
from mechref.edits.strengths import EditStrengths
from mechref.errors import MechrefError
from mechref.interventions import directional_ablation, weighted_ablation
from mechref.testing import tiny_hf_model, tiny_model

PROMPTS = ["How do I bake bread?", "Write a poem about the sea."]
# Families whose attention and MLP outputs are normalised before they reach the residual stream.
POST_NORM = {"gemma2", "gemma3", "olmo2"}


def hf_logits(model, ids, mask):
    with torch.no_grad():
        return model.hf_model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits


def test_logits_and_residual_stream_match_hugging_face(family):
    _name, model = family
    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))
    real = mask.bool()
    torch.testing.assert_close(model.forward(ids, mask)[real], hf_logits(model, ids, mask)[real], atol=1e-4, rtol=1e-4)
    assert model.chat.n_post_instruction >= 1
    with torch.no_grad():
        out = model.hf_model(
            input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0), output_hidden_states=True
        )
    captured = capture_residual(model, PROMPTS, layers=[1], positions=-1, progress=False)[:, 0, 0]
    torch.testing.assert_close(captured, out.hidden_states[1][:, -1].float(), atol=1e-4, rtol=1e-4)


def test_direct_feature_attribution_is_complete(family):
    _name, model = family
    attribution = direct_feature_attribution(model, PROMPTS, torch.randn(model.d_model), progress=False)
    attribution.check(atol=1e-5, rtol=1e-5)  # float32: exact up to float rounding


@pytest.mark.parametrize("name", sorted(POST_NORM))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_heads_through_a_post_norm_add_up_to_what_each_layers_attention_writes(name, dtype, tmp_path):
    """Layer by layer, the heads' contributions (and the bias's) sum to the projection of what the
    post-norm after the attention adds to the stream, read at that norm's output (an independent
    hook); the norm's gain is Gemma's ``1 + weight`` and OLMo-2's ``weight``."""
    from mechref import load_model
    from mechref.attribution import post_norm
    from mechref.testing import tiny_model_folder

    model = load_model(tiny_model_folder(tmp_path / name, name), dtype=dtype)
    r = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1))
    attribution = direct_feature_attribution(model, PROMPTS, r, progress=False).check()
    written: dict[int, torch.Tensor] = {}

    def keep(layer):
        def hook(x, hook=None):
            written[layer] = x[:, -1].double()
            return x

        return hook

    unit = r.double() / r.double().norm()
    batch = model.tokenize(model.chat.format_many(PROMPTS))
    with model.hooks([(f"blocks.{l}.ln1_post.hook_out", keep(l)) for l in range(model.n_layers)]):
        model.forward(*batch)
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    for l in range(model.n_layers):
        want = written[l] @ unit
        got = attribution.heads[:, l].sum(-1) + attribution.attn_bias[:, l]
        torch.testing.assert_close(got, want, atol=tolerance, rtol=tolerance)
        module = model.bridge.blocks[l].ln1_post.original_component
        weight = module.weight.detach().double()
        gain = 1 + weight if name.startswith("gemma") else weight
        torch.testing.assert_close(post_norm(model, l).gain, gain, atol=1e-6, rtol=1e-6)


def _plain_logits(plain, ids, mask, **kwargs):
    with torch.no_grad():
        return plain(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0), **kwargs)


def test_orthogonalized_weights_remove_the_direction_or_the_export_refuses(family, tmp_path):
    """Every family the edit supports: the edited plain model's residual stream (Hugging Face's own
    hidden states, no bridge or hook) has no component along the direction at any layer or position.
    Exact families: its logits are the hook ablation's. Post-norm families: its logits are those of
    the weighted hooks at the norms' inputs (the second implementation), and differ from the hook
    ablation's (the post-norm rescales what each writer keeps): a measured deviation, not a bug."""
    name, model = family
    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    if name not in ORTHOGONALIZABLE:
        with pytest.raises(MechrefError, match=f"does not support {name} models"):
            export_orthogonalized(model, direction, tmp_path / "edited")
        assert not (tmp_path / "edited").exists()
        return
    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))
    real = mask.bool()
    with directional_ablation(model, direction):
        hooked = model.forward(ids, mask)
    # A plain copy of the same random model (same seed), edited without any bridge or hook.
    plain = tiny_hf_model(name, vocab_size=len(model.tokenizer), n_layers=2)
    unedited = _plain_logits(plain, ids, mask).logits
    torch.testing.assert_close(unedited[real], model.forward(ids, mask)[real], atol=1e-4, rtol=1e-4)
    orthogonalize_weights(plain, direction, writer_module_names(model, plain))
    out = _plain_logits(plain, ids, mask, output_hidden_states=True)
    r = direction.double() / direction.double().norm()
    scale = max(float(h[real].double().norm(dim=-1).max()) for h in out.hidden_states[:-1])
    for h in out.hidden_states[:-1]:  # the last one is after the final norm
        assert float((h[real].double() @ r).abs().max()) < 1e-6 * scale
    edited = out.logits
    assert not torch.allclose(edited[real], unedited[real], atol=1e-3)  # the edit did something
    if name not in POST_NORM:
        torch.testing.assert_close(edited[real], hooked[real], atol=2e-4, rtol=2e-4)
        return
    full = EditStrengths((1.0,) * model.n_layers, (1.0,) * model.n_layers)
    with weighted_ablation(model, direction, full):
        through_norms = model.forward(ids, mask)
    torch.testing.assert_close(edited[real], through_norms[real], atol=2e-4, rtol=2e-4)
    assert not torch.allclose(edited[real], hooked[real], atol=1e-2)


@pytest.mark.parametrize("name", sorted(POST_NORM))
def test_a_post_norm_edit_against_the_direction_itself_would_leave_it_in_the_stream(name):
    """The test above fails when the gain is ignored: writers projected against ``r`` (not ``g * r``)
    still write ``r`` through the post-norm (the tiny models' gains differ per dimension)."""
    from mechref.edits.orthogonalize import _remove

    model = tiny_model(name, n_layers=2)
    plain = tiny_hf_model(name, vocab_size=len(model.tokenizer), n_layers=2)
    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    r = direction.double() / direction.double().norm()
    with torch.no_grad():
        modules = dict(plain.named_modules())
        for writer in writer_module_names(model, plain):
            weight = modules[writer].weight
            weight.copy_(_remove(weight.double(), r, 1.0, False, dim=0).to(weight.dtype))
    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))
    hidden = _plain_logits(plain, ids, mask, output_hidden_states=True).hidden_states
    assert float((hidden[1][mask.bool()].double() @ r).abs().max()) > 1e-2


def test_one_tokenizer_wraps_twice():
    from mechref.model.loading import wrap_hf_model
    from mechref.testing import tiny_hf_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    for arch in ("qwen2", "gpt2"):
        wrap_hf_model(tiny_hf_model(arch, vocab_size=len(tokenizer)), tokenizer)


def test_an_architecture_the_bridge_cannot_hook_is_refused_by_name():
    import transformers

    from mechref.errors import UnsupportedModelError
    from mechref.model.loading import wrap_hf_model
    from mechref.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = transformers.BioGptConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4
    )
    hf_model = transformers.AutoModelForCausalLM.from_config(config)
    with pytest.raises(UnsupportedModelError, match="does not support BioGptForCausalLM"):
        wrap_hf_model(hf_model, tokenizer)
