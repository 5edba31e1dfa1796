"""Mixture-of-experts families (Qwen3-MoE, Mixtral, OLMoE, Qwen2-MoE with its shared expert) on tiny
random models: every expert's output projection edited, the export written tensor by tensor and
loaded by plain ``transformers`` equal to the hook ablation, activation addition and the refusals
of the formats that cannot hold an expert edit."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from mechref import load_model
from mechref.edits.orthogonalize import export_orthogonalized, orthogonalize_weights, writer_module_names, writer_tensors
from mechref.errors import MechrefError
from mechref.interventions import activation_addition, directional_ablation
from mechref.testing import MOE_FAMILIES, tiny_hf_model, tiny_model, tiny_model_folder

PROMPTS = ["How do I bake bread?", "Write a poem about the sea."]


def _direction(model, seed=0):
    return torch.randn(model.d_model, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", MOE_FAMILIES)
def test_every_expert_and_the_shared_expert_stop_writing_the_direction(arch):
    model = tiny_model(arch, n_layers=2)
    plain = tiny_hf_model(arch, vocab_size=len(model.tokenizer), n_layers=2)
    names = writer_module_names(model, plain)
    tensors = writer_tensors(plain, names)
    experts = [t for t in tensors if t.endswith("experts.down_proj")]
    assert len(experts) == 2  # one per layer
    assert any("shared_expert" in t for t in tensors) == (arch == "qwen2_moe")
    direction = _direction(model)
    r = direction.double() / direction.double().norm()
    before = {n: p.detach().double().clone() for n, p in plain.named_parameters()}
    orthogonalize_weights(plain, direction, names)
    after = dict(plain.named_parameters())
    for name, (_writer, dim) in tensors.items():
        written = after[name].detach().double().movedim(dim, -1) @ r  # each write vector's component along r
        assert float(written.abs().max()) < 1e-5, name
        assert float((before[name].movedim(dim, -1) @ r).abs().max()) > 1e-2  # it had one to remove
    # The routers and the experts' input projections are untouched.
    for name, value in before.items():
        if name not in tensors and "embed" not in name and "lm_head" not in name:
            assert torch.equal(after[name].detach().double(), value), name


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe"])
def test_the_export_loads_in_transformers_and_equals_the_hook_ablation(arch, tmp_path):
    folder = tiny_model_folder(tmp_path / arch, arch, n_layers=2)
    model = load_model(str(folder), dtype="float32")
    direction = _direction(model, 1)
    out = export_orthogonalized(model, direction, tmp_path / "edited")
    exported = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids, mask = model.tokenize(model.chat.format_many(PROMPTS))
    real = mask.bool()
    with directional_ablation(model, direction):
        hooked = model.forward(ids, mask)
    with torch.no_grad():
        logits = exported(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits
    torch.testing.assert_close(logits[real], hooked[real], atol=2e-4, rtol=2e-4)
    assert not torch.allclose(logits[real], model.forward(ids, mask)[real], atol=1e-3)


@pytest.mark.parametrize("arch", MOE_FAMILIES)
def test_activation_addition_shifts_the_stream_by_the_vector(arch):
    from mechref.capture import capture_residual

    model = tiny_model(arch, n_layers=2)
    vector = _direction(model, 2)
    base = capture_residual(model, PROMPTS, layers=[1], positions=-1, progress=False)
    with activation_addition(model, vector, layer=1, coefficient=2.0):
        shifted = capture_residual(model, PROMPTS, layers=[1], positions=-1, progress=False)
    torch.testing.assert_close(shifted - base, (2.0 * vector).expand_as(base), atol=1e-4, rtol=1e-4)


def test_a_lora_adapter_of_an_expert_edit_is_refused_by_name(tmp_path):
    from mechref.edits.lora import export_lora

    folder = tiny_model_folder(tmp_path / "m", "mixtral", n_layers=2)
    model = load_model(str(folder), dtype="float32")
    with pytest.raises(MechrefError, match=r"mixture-of-experts block.*--formats hf"):
        export_lora(model, _direction(model), tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()
