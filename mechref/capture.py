"""Capture exactly the activations an analysis needs, streamed over batches.

Nothing here builds a full activation cache: each hook copies only the chosen positions of the
chosen layers, and the forward pass stops after the last layer that is read.

>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> acts = capture_residual(model, ["Write a poem", "Bake a cake"], layers=[0, 2], positions=[-2, -1], progress=False)
>>> tuple(acts.shape)   # [prompt, position, layer, d_model]
(2, 2, 2, 64)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, cast

import torch
from jaxtyping import Float
from torch import Tensor

from mechref.model.batching import as_texts, iter_batches
from mechref.model.loading import MechrefModel

ResidKind = Literal["resid_pre", "resid_mid", "resid_post"]
RESID_KINDS = ("resid_pre", "resid_mid", "resid_post")


def resid_hook_name(layer: int, kind: ResidKind = "resid_pre") -> str:
    """The TransformerLens hook name of the residual stream at ``layer``.

    >>> resid_hook_name(3, "resid_post")
    'blocks.3.hook_resid_post'
    """
    if kind not in RESID_KINDS:
        raise ValueError(f"unknown residual stream point {kind!r}; choose one of {', '.join(RESID_KINDS)}")
    return f"blocks.{layer}.hook_{kind}"


def block_hook_name(layer: int, point: Literal["attn_out", "mlp_out", "head_mix_in", "pattern"]) -> str:
    """The TransformerLens hook name of a point inside block ``layer``: what its attention writes
    (``attn_out``), what its MLP writes (``mlp_out``), the per-head outputs entering the attention's
    output projection (``head_mix_in``), or the attention pattern (``pattern``).

    >>> block_hook_name(2, "mlp_out"), block_hook_name(2, "head_mix_in")
    ('blocks.2.hook_mlp_out', 'blocks.2.attn.o.hook_in')
    """
    names = {
        "attn_out": "hook_attn_out",
        "mlp_out": "hook_mlp_out",
        "head_mix_in": "attn.o.hook_in",
        "pattern": "attn.hook_pattern",
    }
    if point not in names:
        raise ValueError(f"unknown hook point {point!r}; choose one of {', '.join(names)}")
    return f"blocks.{layer}.{names[point]}"


def normalize_layers(model: MechrefModel, layers: Sequence[int] | int | None) -> list[int]:
    """Resolve ``None`` (all layers), an int, or negative indices into sorted layer numbers."""
    if layers is None:
        return list(range(model.n_layers))
    if isinstance(layers, int):
        layers = [layers]
    resolved = []
    for layer in layers:
        index = layer + model.n_layers if layer < 0 else layer
        if not 0 <= index < model.n_layers:
            raise ValueError(f"layer {layer} is out of range for a model with {model.n_layers} layers")
        resolved.append(index)
    return resolved


def normalize_positions(model: MechrefModel, positions: Sequence[int] | int | str) -> list[int]:
    """Resolve ``"post_instruction"``, an int, or a list of negative positions (``-1`` = last token)."""
    if isinstance(positions, str):
        if positions != "post_instruction":
            raise ValueError(f"unknown position spec {positions!r}; use 'post_instruction' or negative ints")
        return model.chat.post_instruction_positions
    if isinstance(positions, int):
        positions = [positions]
    positions = list(positions)
    if not positions or any(p >= 0 for p in positions):
        raise ValueError(
            f"positions must be negative indices counted from the end (-1 = last token), got {positions}; "
            "with left padding only end-relative positions mean the same thing in every row"
        )
    return positions


def stop_layer_for(model: MechrefModel, max_layer: int) -> int | None:
    """The ``stop_at_layer`` that still runs block ``max_layer`` (None when every block is needed)."""
    stop = max_layer + 1
    return stop if stop < model.n_layers else None


def capture_residual(
    model: MechrefModel,
    prompts: Sequence[str],
    *,
    layers: Sequence[int] | int | None = None,
    positions: Sequence[int] | int | str = -1,
    kind: ResidKind = "resid_pre",
    batch_size: int = 16,
    reduce: Literal["none", "mean"] = "none",
    chat: bool = True,
    progress: bool = True,
    desc: str = "residual capture",
) -> Float[Tensor, "n_prompt n_pos n_layer d_model"] | Float[Tensor, "n_pos n_layer d_model"]:
    """Residual-stream activations at chosen layers and end-relative positions.

    Args:
        prompts: instructions (formatted with the chat template) or, with ``chat=False``, raw texts.
        layers: layer indices (negative allowed); ``None`` for all.
        positions: negative positions, or ``"post_instruction"`` for the template tokens after the
            user's text.
        kind: ``resid_pre`` (entering the block), ``resid_mid`` (after attention) or ``resid_post``.
        reduce: ``"none"`` returns every prompt's activations in the model's dtype;
            ``"mean"`` returns their mean over prompts, accumulated in float64 without keeping them.

    Returns:
        ``[n_prompt, n_pos, n_layer, d_model]``, or ``[n_pos, n_layer, d_model]`` for ``reduce="mean"``.
    """
    if reduce not in ("none", "mean"):
        raise ValueError(f"reduce must be 'none' or 'mean', got {reduce!r}")
    texts = as_texts(model, prompts, chat)
    layer_ids = normalize_layers(model, layers)
    pos = normalize_positions(model, positions)
    pos_index = torch.tensor(pos)
    n = len(texts)
    if reduce == "mean":
        total = torch.zeros(len(pos), len(layer_ids), model.d_model, dtype=torch.float64)
    else:
        out = torch.empty(n, len(pos), len(layer_ids), model.d_model, dtype=model.dtype)
    captured: dict[int, Tensor] = {}

    def make_hook(slot: int):
        def hook(x: Tensor, hook=None) -> Tensor:
            captured[slot] = x[:, pos_index.to(x.device) + x.shape[1], :].detach()
            return x

        return hook

    hooks = [(resid_hook_name(layer, kind), make_hook(slot)) for slot, layer in enumerate(layer_ids)]
    stop = stop_layer_for(model, max(layer_ids))
    with model.hooks(hooks):
        for batch in iter_batches(model, texts, batch_size, desc=desc, progress=progress):
            if -min(pos) > batch.attention_mask.sum(1).min():
                raise ValueError(f"position {min(pos)} reaches before the start of a prompt; use positions closer to the end")
            captured.clear()
            model.forward(batch.input_ids, batch.attention_mask, stop_at_layer=stop, last_logits_only=True)
            stacked = torch.stack([captured[slot] for slot in range(len(layer_ids))], dim=2).cpu()
            if reduce == "mean":
                total += stacked.to(torch.float64).sum(dim=0)
            else:
                out[batch.indices] = stacked.to(out.dtype)
    return total / n if reduce == "mean" else out


@dataclass
class AttentionCapture:
    """Attention patterns of chosen heads, one entry per prompt, padding removed.

    ``patterns[i]`` is ``[n_heads_selected, n_query, seq_i]``: how much each selected head, at
    each chosen query position, attends to every token of prompt ``i``.
    """

    heads: list[tuple[int, int]]
    query_positions: list[int]
    patterns: list[Float[Tensor, "n_head n_query seq"]]
    input_ids: list[list[int]]


def capture_attention(
    model: MechrefModel,
    prompts: Sequence[str],
    heads: Sequence[tuple[int, int]],
    *,
    query_positions: Sequence[int] | int = -1,
    batch_size: int = 16,
    chat: bool = True,
    progress: bool = True,
) -> AttentionCapture:
    """Attention patterns of the given ``(layer, head)`` pairs from end-relative query positions.

    >>> from mechref.testing import tiny_model
    >>> model = tiny_model("qwen2")
    >>> cap = capture_attention(model, ["Write a poem"], heads=[(1, 0), (2, 3)], progress=False)
    >>> tuple(cap.patterns[0].shape[:2]), round(float(cap.patterns[0].sum(-1).mean()), 4)
    ((2, 1), 1.0)
    """
    texts = as_texts(model, prompts, chat)
    heads = [(int(layer), int(head)) for layer, head in heads]
    for layer, head in heads:
        normalize_layers(model, [layer])
        if not 0 <= head < model.n_heads:
            raise ValueError(f"head {head} is out of range for a model with {model.n_heads} heads per layer")
    qpos = normalize_positions(model, query_positions)
    layer_ids = sorted({layer for layer, _ in heads})
    captured: dict[int, Tensor] = {}

    def make_hook(layer: int):
        def hook(pattern: Tensor, hook=None) -> Tensor:
            seq = pattern.shape[-2]
            captured[layer] = pattern[:, :, [seq + q for q in qpos], :].detach()
            return pattern

        return hook

    patterns: list[Tensor | None] = [None] * len(texts)
    ids_out: list[list[int] | None] = [None] * len(texts)
    hooks = [(block_hook_name(layer, "pattern"), make_hook(layer)) for layer in layer_ids]
    with model.hooks(hooks):
        for batch in iter_batches(model, texts, batch_size, desc="attention capture", progress=progress):
            model.forward(batch.input_ids, batch.attention_mask, stop_at_layer=stop_layer_for(model, max(layer_ids)))
            for row, index in enumerate(batch.indices):
                keep = batch.attention_mask[row].bool()
                per_head = [captured[layer][row, head][:, keep].float().cpu() for layer, head in heads]
                patterns[index] = torch.stack(per_head)
                ids_out[index] = batch.input_ids[row, keep].tolist()
    # Every index was filled: the batches cover every prompt.
    return AttentionCapture(
        heads=heads, query_positions=qpos, patterns=cast(list[Tensor], patterns), input_ids=cast(list[list[int]], ids_out)
    )
