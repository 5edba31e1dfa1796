"""The weight orthogonalization as a rank-1 LoRA adapter (PEFT) on the unedited model.

Orthogonalizing a writer ``W`` (``[d_model, d_in]``) against the unit direction ``r`` with strength
``w`` changes it by ``-w r (r^T W)``: a rank-1 update, which is exactly a LoRA of rank 1 with
``B = -w r`` and ``A = r^T W`` (scaling ``lora_alpha / r = 1``); a writer followed by a post-norm
(Gemma-2, Gemma-3, OLMo-2) has ``g * r`` normalized in the place of ``r``, as the weight edit does. The token embedding ``E``
(``[vocab, d_model]``) changes by ``-w (E r) r^T``, PEFT's embedding LoRA with ``A = (E r)^T`` and
``B = -w r``. Loaded with ``peft`` on the unedited model, the adapter gives the exported
model's logits (to float32 rounding); it is a few MB where the edited model is GBs.

Norm-preserving orthogonalization rescales every write vector afterwards, which is no low-rank
update: it is refused here, as are writers with a bias (LoRA cannot change a bias).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mechref.edits.orthogonalize import (
    check_orthogonalizable,
    edit_description,
    post_norm_gains,
    through_post_norms,
    writer_module_names,
)
from mechref.edits.strengths import EditStrengths
from mechref.errors import MechrefError
from mechref.framework.io import atomic_path
from mechref.framework.ownership import check_export_target
from mechref.framework.vectors import unit
from mechref.model.loading import MechrefModel
from mechref.model.norms import write_target
from mechref.model.plain import plain_view
from mechref.version import __version__


@torch.no_grad()
def lora_factors(
    plain, direction: Float[Tensor, " d_model"], writer_names: list[str], strengths: EditStrengths | None = None
) -> dict[str, tuple[Tensor, Tensor]]:
    """``{module name: (A, B)}`` of the rank-1 adapter reproducing the edit on a plain ``transformers``
    model: ``A`` is ``[1, d_in]`` (``[1, vocab]`` for the embedding), ``B`` is ``[d_model, 1]``."""
    check_orthogonalizable(plain.config)
    embedding = plain.get_input_embeddings()
    embedding_name = next(name for name, module in plain.named_modules() if module is embedding)
    r = unit(direction, int(embedding.weight.shape[1])).double()
    per_writer = strengths.per_writer() if strengths is not None else [1.0] * len(writer_names)
    if len(per_writer) != len(writer_names):
        raise ValueError(f"{len(per_writer)} edit strengths for {len(writer_names)} residual-stream writers")
    modules = dict(plain.named_modules())
    gains = post_norm_gains(plain, writer_names)
    factors: dict[str, tuple[Tensor, Tensor]] = {}
    strength = strengths.embedding if strengths is not None else 1.0
    factors[embedding_name] = ((embedding.weight.double() @ r).unsqueeze(0), (-strength * r).unsqueeze(1))
    for name, strength, gain in zip(writer_names, per_writer, gains):
        linear = modules[name]
        if not isinstance(getattr(linear, "weight", None), Tensor):
            raise MechrefError(
                f"{name} is a mixture-of-experts block: its experts' output projections are one 3-D tensor, which a "
                "LoRA adapter cannot target; export the edited model instead (--formats hf)"
            )
        if getattr(linear, "bias", None) is not None:
            raise MechrefError(f"{name} has a bias, which a LoRA adapter cannot edit; export the edited model instead")
        target = write_target(r, gain)  # r itself, or g * r normalized through a post-norm
        factors[name] = ((target @ linear.weight.double()).unsqueeze(0), (-strength * target).unsqueeze(1))
    return factors


def export_lora(
    model: MechrefModel,
    direction: Float[Tensor, " d_model"],
    out_dir: str | Path,
    *,
    strengths: EditStrengths | None = None,
    provenance: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a PEFT LoRA adapter (rank 1, float32) that turns the unedited model into the
    orthogonalized one. ``out_dir`` must be new or empty, or (with ``overwrite``) an earlier
    mechref export. Load it with ``PeftModel.from_pretrained(base_model, out_dir)``.
    """
    check_export_target(out_dir, overwrite)
    check_orthogonalizable(model.hf_model.config)
    model.require_plain_weights("exporting a LoRA adapter")
    if not model.folder:
        raise MechrefError("this model was not loaded from a folder, so there is no base model for the adapter to name")
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise MechrefError('a LoRA export needs the peft package: pip install "mechref[peft]"') from error

    # The factors are read from the loaded model's own tensors (a plain view, no second copy: PEFT wraps
    # the view's modules, never the loaded model's); PEFT keeps the adapter in float32.
    plain = plain_view(model)
    names = writer_module_names(model, plain)
    factors = lora_factors(plain, direction, names, strengths)
    config = LoraConfig(r=1, lora_alpha=1, lora_dropout=0.0, target_modules=list(factors), bias="none")
    peft_model = get_peft_model(plain, config)
    with torch.no_grad():
        for name, (a, b) in factors.items():
            layer: Any = plain.get_submodule(name)  # now a PEFT LoRA layer (PEFT edits the model in place)
            if hasattr(layer, "lora_embedding_A") and "default" in layer.lora_embedding_A:
                layer.lora_embedding_A["default"].copy_(a.float())
                layer.lora_embedding_B["default"].copy_(b.float())
            else:
                layer.lora_A["default"].weight.copy_(a.float())
                layer.lora_B["default"].weight.copy_(b.float())
    out_dir = Path(out_dir)
    with atomic_path(out_dir, replace_folder=True) as tmp:
        # Only the rank-1 factors: PEFT would otherwise also save the (unchanged) embedding matrix,
        # hundreds of MB for a real vocabulary.
        peft_model.save_pretrained(str(tmp), save_embedding_layers=False)
        info = {
            "mechref_version": __version__,
            "format": "peft-lora",
            "base_model": model.name,
            "base_source": model.source,
            "base_folder": model.folder,
            "edited_modules": list(factors),
            "edit": edit_description(strengths, False, through_post_norms(model.hf_model.config)),
            **(provenance or {}),
        }
        (tmp / "mechref_edit.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        (tmp / "README.md").write_text(_card(info), encoding="utf-8")
    return out_dir


def _card(info: dict) -> str:
    return "\n".join(
        [
            f"# Refusal-direction edit of {info['base_model']} as a LoRA adapter",
            "",
            "A rank-1 LoRA adapter made with mechref: on its base model it reproduces the weight "
            "orthogonalization of Arditi et al. 2024 (the token embedding and every attention and MLP output "
            "projection stop writing one direction of the residual stream). It was made for research on refusal; "
            "with it the model complies with requests its base model refuses, including harmful ones.",
            "",
            f"- base model: `{info['base_model']}` ({info['base_source']})",
            f"- edit: `{json.dumps(info['edit'])}`",
            f"- made with mechref {info['mechref_version']}",
            "",
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM",
            "base = AutoModelForCausalLM.from_pretrained(BASE_MODEL)",
            "model = PeftModel.from_pretrained(base, THIS_FOLDER)",
            "```",
            "",
            "Keep the adapter unmerged on a model whose embedding and unembedding share one matrix (tied "
            "embeddings): the edit changes the embedding only, and merging it into a shared matrix would change "
            "the unembedding too.",
            "",
        ]
    )
