"""Direct feature attribution (DFA): how much each attention head, each MLP and the embeddings
write a direction into the residual stream at a position.

The residual stream entering layer ``L`` is a sum of what earlier components wrote::

    resid_pre[L] = embed + sum_{l < L} (attn_out[l] + mlp_out[l])
    attn_out[l]  = sum_h z[l, h] @ W_O[l, h] + b_O[l]

so its projection on a direction ``r`` splits exactly into per-component terms. In the families
that normalize each write before adding it (Gemma-2, Gemma-3, OLMo-2: ``post_attention_layernorm``
and ``post_feedforward_layernorm``), a write is ``g * y / rms(y)``; with each write's scale
``1 / rms(y)`` frozen per token (as attribution through the pre-norms already reads them frozen),
it is linear in ``y``, and head ``h`` contributes ``z[l, h] @ W_O[l, h] @ (g * r) / rms(y)``. Each term is
measured from the activations the component actually wrote (hooks on ``attn.o`` input, MLP
output and the embedding), and :attr:`Attribution.residual_error` reports how far their sum is
from the projection of the residual stream itself: a check that the decomposition is complete.

>>> import torch
>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> attr = direct_feature_attribution(model, ["Write a poem"], torch.randn(model.d_model), layer=3, progress=False)
>>> tuple(attr.heads.shape)   # [prompt, layer, head]
(1, 3, 4)
>>> bool(attr.residual_error.abs().max() < 1e-3)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from mechref.capture import block_hook_name, normalize_positions, resid_hook_name, stop_layer_for
from mechref.framework.vectors import unit
from mechref.model.batching import as_texts, iter_batches
from mechref.model.loading import MechrefModel
from mechref.model.norms import post_norm


@dataclass
class Attribution:
    """Per-prompt contributions to ``direction`` at one position of the stream entering ``layer``.

    All tensors are float64 on the CPU. ``heads[:, l, h]`` is head ``h`` of layer ``l``;
    ``attn_bias[:, l]`` the attention output bias (zero where the model has none).
    """

    layer: int
    position: int
    embed: Float[Tensor, " n_prompt"]
    heads: Float[Tensor, "n_prompt n_layer n_head"]
    attn_bias: Float[Tensor, "n_prompt n_layer"]
    mlp: Float[Tensor, "n_prompt n_layer"]
    projection: Float[Tensor, " n_prompt"]
    # How far the sum may fall from the projection through the model's own rounding (its dtype's
    # additions into the residual stream), per prompt; see :func:`rounding_allowance`.
    rounding: Float[Tensor, " n_prompt"] | None = None

    @property
    def total(self) -> Float[Tensor, " n_prompt"]:
        """The sum of every component's contribution."""
        return self.embed + self.heads.sum((1, 2)) + self.attn_bias.sum(1) + self.mlp.sum(1)

    @property
    def residual_error(self) -> Float[Tensor, " n_prompt"]:
        """``total - projection``: zero up to rounding when the decomposition is complete."""
        return self.total - self.projection

    @property
    def allowed_error(self) -> Float[Tensor, " n_prompt"]:
        """The gap :meth:`check` allows by default: 1e-3 (absolute and relative) plus the rounding allowance."""
        base = 1e-3 + 1e-3 * self.projection.abs().clamp_min(1.0)
        return base + (self.rounding if self.rounding is not None else 0.0)

    def check(self, rtol: float | None = None, atol: float | None = None) -> Attribution:
        """Raise if the contributions do not sum to the projection: by default within
        :attr:`allowed_error` (which holds in bfloat16 too), else within ``atol + rtol * |projection|``."""
        if rtol is None and atol is None:
            allowed = self.allowed_error
        else:
            allowed = (atol or 0.0) + (rtol or 0.0) * self.projection.abs().clamp_min(1.0)
        bad = (self.residual_error.abs() > allowed).nonzero().flatten()
        if len(bad):
            i = int(bad[0])
            raise AssertionError(
                f"attribution of prompt {i} sums to {float(self.total[i]):.6g} but the residual stream's "
                f"projection is {float(self.projection[i]):.6g}; this architecture writes to the residual "
                "stream through something DFA does not see (a component or norm outside the decomposition)"
            )
        return self

    def top_heads(self, k: int = 10, prompts: slice | None = None) -> list[tuple[int, int, float]]:
        """The ``k`` heads with the largest mean contribution: ``[(layer, head, value), ...]``."""
        mean = self.heads[prompts or slice(None)].mean(0)
        values, flat = mean.flatten().topk(min(k, mean.numel()))
        n_head = mean.shape[1]
        return [(int(i) // n_head, int(i) % n_head, float(v)) for v, i in zip(values, flat)]


#: Margin over the expected size of the rounding error: a decomposition that is complete stays
#: within it, one that misses a component (tens of percent of the projection) does not.
ROUNDING_MARGIN = 6.0


def rounding_allowance(
    stream: Float[Tensor, "n_prompt d_model"], direction: Float[Tensor, " d_model"], dtype: torch.dtype, n_writes: int
) -> Float[Tensor, " n_prompt"]:
    """How far a complete decomposition's sum may fall from the stream's projection because the
    model adds its writes into the residual stream in ``dtype``.

    Each of the ``n_writes`` additions rounds every element ``x_i`` by up to ``eps/2 * |x_i|``
    (uniformly), so the projection on the unit ``direction`` moves by about
    ``eps / (2 sqrt 3) * sqrt(sum_i (r_i x_i)^2)`` per addition, and by ``sqrt(n_writes)`` times that
    over all of them; the allowance is :data:`ROUNDING_MARGIN` times this. In bfloat16 it is a few
    percent of a large projection; in float32, negligible.

    >>> x, r = torch.full((1, 4), 10.0), torch.tensor([1.0, 0.0, 0.0, 0.0])
    >>> [round(float(rounding_allowance(x, r, d, 9)[0]), 4) for d in (torch.bfloat16, torch.float32)]
    [0.4059, 0.0]
    """
    eps = torch.finfo(dtype).eps
    per_write = eps / (2 * math.sqrt(3)) * (stream.double() * direction.double()).pow(2).sum(-1).sqrt()
    return ROUNDING_MARGIN * math.sqrt(n_writes) * per_write


def _o_proj(model: MechrefModel, layer: int):
    attn = model.bridge.blocks[layer].attn
    module = getattr(attn, "o", None)
    return getattr(module, "original_component", module)


def _o_weight(model: MechrefModel, layer: int) -> Tensor:
    """The attention output projection as ``[d_model, n_head * d_head]``, whatever the layer type
    (GPT-2's Conv1D stores it transposed)."""
    module = _o_proj(model, layer)
    weight = module.weight.detach()
    return weight.T if type(module).__name__ == "Conv1D" else weight


def direct_feature_attribution(
    model: MechrefModel,
    prompts: Sequence[str],
    direction: Float[Tensor, " d_model"],
    *,
    layer: int | None = None,
    position: int = -1,
    batch_size: int = 16,
    chat: bool = True,
    normalize: bool = True,
    progress: bool = True,
) -> Attribution:
    """Attribute the projection of the residual stream on ``direction`` to every component.

    Args:
        direction: the direction (unit-normalised unless ``normalize=False``).
        layer: the stream entering block ``layer``; ``None`` or ``n_layers`` means the final
            residual stream (before the last norm). Components of layers ``< layer`` contribute.
        position: an end-relative token position (``-1`` = last token).
    """
    model.require_plain_weights("direct feature attribution")
    n_layers = model.n_layers
    layer = n_layers if layer is None else (layer + n_layers if layer < 0 else layer)
    if not 0 <= layer <= n_layers:
        raise ValueError(f"layer must be in 0..{n_layers} (the last meaning the final residual stream), got {layer}")
    (position,) = normalize_positions(model, position)
    r = unit(direction, model.d_model) if normalize else direction.float()
    texts = as_texts(model, prompts, chat)
    n = len(texts)
    n_head, d_head = model.n_heads, model.d_head

    # Each head's write along r is z_h . (W_O_h^T r): precompute W_O^T r once per layer (through a
    # post-norm: W_O^T (g * r), scaled per token by the norm's 1 / rms of the attention's output).
    post = [post_norm(model, l) for l in range(layer)]
    readouts, biases = [], []
    for l in range(layer):
        o_proj = _o_proj(model, l)
        weight = _o_weight(model, l).double()  # [d_model, n_head * d_head], on the layer's device
        r_here = r.double().to(weight.device)
        norm = post[l]
        if norm is not None:
            r_here = norm.gain.to(weight.device) * r_here
        readouts.append((weight.T @ r_here).view(n_head, d_head))
        bias = getattr(o_proj, "bias", None)
        biases.append(float(bias.detach().double() @ r_here) if bias is not None else 0.0)

    embed = torch.zeros(n, dtype=torch.float64)
    heads = torch.zeros(n, layer, n_head, dtype=torch.float64)
    mlp = torch.zeros(n, layer, dtype=torch.float64)
    projection = torch.zeros(n, dtype=torch.float64)
    rounding = torch.zeros(n, dtype=torch.float64)
    grabbed: dict[str, Tensor] = {}

    def grab(key: str):
        def hook(x: Tensor, hook=None) -> Tensor:
            grabbed[key] = x[:, x.shape[1] + position].detach().double()
            return x

        return hook

    hooks = [(resid_hook_name(0, "resid_pre"), grab("embed"))]
    for l in range(layer):
        hooks += [(block_hook_name(l, "head_mix_in"), grab(f"z{l}")), (block_hook_name(l, "mlp_out"), grab(f"mlp{l}"))]
        if post[l] is not None:
            hooks.append((f"blocks.{l}.ln1_post.hook_in", grab(f"attn{l}")))  # what the post-norm reads
    final = resid_hook_name(layer, "resid_pre") if layer < n_layers else resid_hook_name(n_layers - 1, "resid_post")
    hooks.append((final, grab("final")))
    stop = stop_layer_for(model, min(layer, n_layers - 1))

    r64 = r.double().to(model.device)
    attn_bias = torch.tensor(biases, dtype=torch.float64).expand(n, layer).clone()
    with model.hooks(hooks):
        for batch in iter_batches(model, texts, batch_size, desc="attribution", progress=progress):
            grabbed.clear()
            model.forward(batch.input_ids, batch.attention_mask, stop_at_layer=stop, last_logits_only=True)
            rows = batch.indices
            embed[rows] = (grabbed["embed"] @ r64).cpu()
            projection[rows] = (grabbed["final"] @ r64).cpu()
            # Two writes per layer (attention, MLP) plus the embedding.
            rounding[rows] = rounding_allowance(grabbed["final"], r64, model.dtype, 2 * layer + 1).cpu()
            for l in range(layer):
                z = grabbed[f"z{l}"].view(len(rows), n_head, d_head)
                written = torch.einsum("bhd,hd->bh", z, readouts[l].to(z.device))
                norm = post[l]
                if norm is not None:
                    scale = norm.scale(grabbed[f"attn{l}"])
                    written = written * scale[:, None]
                    attn_bias[rows, l] = attn_bias[rows, l] * scale.cpu()
                heads[rows, l] = written.cpu()
                mlp[rows, l] = (grabbed[f"mlp{l}"] @ r64).cpu()
    return Attribution(
        layer=layer,
        position=position,
        embed=embed,
        heads=heads,
        attn_bias=attn_bias,
        mlp=mlp,
        projection=projection,
        rounding=rounding,
    )


def head_outputs(
    model: MechrefModel,
    prompts: Sequence[str],
    layer: int,
    *,
    position: int = -1,
    batch_size: int = 16,
    chat: bool = True,
    progress: bool = True,
) -> Float[Tensor, "n_prompt n_head d_model"]:
    """What each attention head of ``layer`` writes to the residual stream at ``position``.

    Computed from the heads' mixed values and their slices of the output projection
    (``z_h @ W_O[h]``), without materializing ``[batch, pos, head, d_model]`` for every position.
    The attention output bias, if any, is not included.
    """
    model.require_plain_weights("per-head outputs")
    (position,) = normalize_positions(model, position)
    texts = as_texts(model, prompts, chat)
    weight = _o_weight(model, layer)  # [d_model, n_head * d_head]
    w_heads = weight.T.reshape(model.n_heads, model.d_head, model.d_model)
    out = torch.empty(len(texts), model.n_heads, model.d_model, dtype=torch.float32)
    grabbed: dict[str, Tensor] = {}

    def grab(z: Tensor, hook=None) -> Tensor:
        grabbed["z"] = z[:, z.shape[1] + position].detach()
        return z

    with model.hooks([(block_hook_name(layer, "head_mix_in"), grab)]):
        for batch in iter_batches(model, texts, batch_size, desc="head outputs", progress=progress):
            model.forward(
                batch.input_ids, batch.attention_mask, stop_at_layer=stop_layer_for(model, layer), last_logits_only=True
            )
            z = grabbed["z"].view(len(batch.indices), model.n_heads, model.d_head)
            out[batch.indices] = torch.einsum("bhd,hdm->bhm", z, w_heads.to(z.dtype)).float().cpu()
    return out
