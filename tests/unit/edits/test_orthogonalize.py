"""Edit variants of the weight orthogonalization (per-layer strengths from a kernel, norm
preservation) and the rank-1 LoRA export, on tiny models of every orthogonalizable family.

Each is checked against what the edit must do, computed without its code: what each writer
writes along the direction and across it, the residual stream of the whole edited model, the
write vectors' norms, and the exported folder's logits for the adapter.
"""

from __future__ import annotations

import json

import pytest
import torch

from mechref.edits.orthogonalize import export_orthogonalized, orthogonalize_weights, writer_module_names
from mechref.edits.strengths import EditStrengths, LayerKernel
from mechref.errors import MechrefError
from mechref.framework.vectors import unit
from mechref.model.loading import load_model
from mechref.testing import tiny_model_folder, tiny_tokenizer
from tests.reference import plain_model

peft = pytest.importorskip("peft")
FAMILIES = ("qwen2", "llama", "qwen3", "mistral", "phi3")
IDS = torch.tensor([[3, 17, 42, 99, 5, 250, 7, 61]])


def _saved(tmp_path, family):
    return tiny_model_folder(tmp_path / family, family)


def _strengths(n_layers):
    return EditStrengths.from_kernels(
        n_layers, attention=LayerKernel(1.0, 1.5, 0.1, 0.9), mlp=LayerKernel(0.0, 2.0, 0.3, 1.0), embedding=0.5
    )


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_partial_strengths_remove_that_share_of_each_writers_component(tmp_path, family):
    folder = _saved(tmp_path, family)
    model = load_model(str(folder), device="cpu")
    original, edited = plain_model(folder), plain_model(folder)
    names = writer_module_names(model, original)  # located in the plain model (Phi-3's bridge renames o_proj)
    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1))
    r = unit(direction, model.d_model).double()
    strengths = _strengths(model.n_layers)
    orthogonalize_weights(edited, direction, names, strengths=strengths)
    shares = [*zip(names, strengths.per_writer()), ("model.embed_tokens", strengths.embedding)]
    assert len({w for _, w in shares}) > 3  # really different strengths
    x = torch.randn(5, 128, dtype=torch.float64)
    for name, w in shares:
        a, b = original.get_submodule(name), edited.get_submodule(name)
        if name.endswith("embed_tokens"):
            out_a, out_b = a.weight.double(), b.weight.double()  # each token's write vector
        else:
            d_in = a.weight.shape[1]
            out_a, out_b = x[:, :d_in] @ a.weight.double().T, x[:, :d_in] @ b.weight.double().T
        along_a, along_b = out_a @ r, out_b @ r
        torch.testing.assert_close(along_b, (1 - w) * along_a, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out_b - torch.outer(along_b, r), out_a - torch.outer(along_a, r), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_norm_preserving_edit_leaves_nothing_along_the_direction_and_keeps_every_write_norm(tmp_path, family):
    folder = _saved(tmp_path, family)
    model = load_model(str(folder), device="cpu")
    original, edited = plain_model(folder), plain_model(folder)
    names = writer_module_names(model, original)  # located in the plain model (Phi-3's bridge renames o_proj)
    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(2))
    orthogonalize_weights(edited, direction, names, norm_preserving=True)
    r = unit(direction, model.d_model)
    with torch.no_grad():
        hidden = edited(IDS, output_hidden_states=True).hidden_states[:-1]  # the last one is after the final norm
    scale = max(h.abs().max() for h in hidden)
    assert max((h @ r).abs().max() for h in hidden) < 1e-5 * scale
    for name in names:
        before, after = original.get_submodule(name).weight, edited.get_submodule(name).weight
        torch.testing.assert_close(after.norm(dim=0), before.norm(dim=0), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(after, before)
    emb_before, emb_after = original.get_input_embeddings().weight, edited.get_input_embeddings().weight
    torch.testing.assert_close(emb_after.norm(dim=1), emb_before.norm(dim=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("partial", [False, True])
def test_lora_adapter_on_the_unedited_model_gives_the_exported_model(tmp_path, family, partial):
    from peft import PeftModel

    from mechref.edits import export_lora

    folder = _saved(tmp_path, family)
    model = load_model(str(folder), device="cpu")
    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(3))
    strengths = _strengths(model.n_layers) if partial else None
    exported = export_orthogonalized(model, direction, tmp_path / "edited", strengths=strengths)
    adapter = export_lora(model, direction, tmp_path / "adapter", strengths=strengths)
    with_adapter = PeftModel.from_pretrained(plain_model(folder), str(adapter)).eval()
    with torch.no_grad():
        expected = plain_model(exported)(IDS).logits
        got = with_adapter(IDS).logits
        unedited = plain_model(folder)(IDS).logits
    assert (expected - unedited).abs().max() > 1e-2  # the edit changes the logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    info = json.loads((adapter / "mechref_edit.json").read_text())
    assert info["format"] == "peft-lora" and (info["edit"]["strengths"] == "full") != partial
    assert json.loads((exported / "mechref_edit.json").read_text())["edit"] == info["edit"]
    # Nothing but the rank-1 factors is saved (PEFT would add the whole embedding matrix by default).
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    assert all("lora" in k for k in saved), sorted(saved)
    assert all(1 in v.shape for v in saved.values())


def test_lora_refuses_a_writer_with_a_bias(tmp_path):
    from mechref.edits import export_lora

    tokenizer = tiny_tokenizer("llama3")
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, attention_bias=True,
    )  # fmt: skip
    folder = tmp_path / "biased"
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model = load_model(str(folder), device="cpu")
    with pytest.raises(MechrefError, match="has a bias"):
        export_lora(model, torch.randn(model.d_model), tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()


def test_kernel_and_strength_checks():
    with pytest.raises(ValueError, match="width"):
        LayerKernel(peak=1, width=0)
    with pytest.raises(ValueError, match="min_weight"):
        LayerKernel(peak=1, width=1, min_weight=0.8, max_weight=0.5)
    with pytest.raises(ValueError, match="one attention and one MLP"):
        EditStrengths(attention=(1.0,), mlp=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"\[0, 1.5\]"):
        EditStrengths(attention=(2.0,), mlp=(1.0,))
    assert LayerKernel(peak=0.5, width=1).weights(2) == [0.5, 0.5]
    assert EditStrengths(attention=(0.1, 0.2), mlp=(0.3, 0.4)).per_writer() == [0.1, 0.3, 0.2, 0.4]


@pytest.mark.parametrize("family", ["qwen2", "llama", "phi3"])
def test_weighted_ablation_hooks_equal_the_weight_edit_with_the_same_strengths(tmp_path, family):
    from mechref.interventions import directional_ablation, weighted_ablation

    folder = _saved(tmp_path, family)
    model = load_model(str(folder), device="cpu")
    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(6))
    edited = plain_model(folder)
    strengths = _strengths(model.n_layers)
    orthogonalize_weights(edited, direction, writer_module_names(model, edited), strengths=strengths)
    with torch.no_grad():
        expected = edited(IDS).logits
    with weighted_ablation(model, direction, strengths):
        got = model.forward(IDS)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got - model.forward(IDS)).abs().max() > 1e-2
    with weighted_ablation(model, direction, EditStrengths.full(model.n_layers)):
        full = model.forward(IDS)
    with directional_ablation(model, direction):
        torch.testing.assert_close(full, model.forward(IDS), rtol=1e-4, atol=1e-4)
