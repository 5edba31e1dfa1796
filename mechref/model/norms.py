"""The norms some families apply to each write before it reaches the residual stream.

Gemma-2, Gemma-3 and OLMo-2 pass every attention and MLP output ``y`` through an RMS norm before
adding it to the stream (``post_attention_layernorm``, ``post_feedforward_layernorm``): the stream
gets ``g * y / rms(y)``. Its component along a unit direction ``r`` is ``(g * r) . y / rms(y)``,
zero exactly when ``y`` is orthogonal to ``g * r``. So a writer stops writing ``r`` when its output
is kept orthogonal to :func:`write_target` (the unit vector along ``g * r``), not to ``r`` itself;
attribution (:mod:`mechref.attribution`) and the weight edits (:mod:`mechref.edits.orthogonalize`)
read the gains from here.

>>> import torch
>>> from mechref.testing import tiny_model
>>> model = tiny_model("gemma3", n_layers=1)
>>> [type(n).__name__ for n in writer_post_norms(model)]
['FrozenNorm', 'FrozenNorm']
>>> [n is None for n in writer_post_norms(tiny_model("qwen2", n_layers=1))]
[True, True]
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import cast

import torch
from jaxtyping import Float
from torch import Tensor

from mechref.model.loading import MechrefModel

#: The bridge's names of the norms after block ``l``'s attention and MLP outputs, in writer order.
POST_NORM_PARTS = ("ln1_post", "ln2_post")


@dataclass(frozen=True)
class FrozenNorm:
    """An RMS norm after a write, seen as linear in the write with its scale frozen per token:
    ``norm(y) = gain * y * scale(y)``, ``scale(y) = 1 / sqrt(mean(y^2) + eps)``."""

    gain: Float[Tensor, " d_model"]  # float64, on the CPU
    eps: float

    def scale(self, y: Float[Tensor, "batch d_model"]) -> Float[Tensor, " batch"]:
        """``1 / rms(y)`` per row, as the norm computes it (in float64 here)."""
        return (y.double().pow(2).mean(-1) + self.eps).rsqrt()

    @classmethod
    def of(cls, module: torch.nn.Module, weight: Tensor | None = None) -> FrozenNorm | None:
        """The norm ``module`` (a Hugging Face RMS norm) as a gain and an epsilon; None where it is not
        an RMS norm that says its epsilon. The gain is read by the module itself, whatever its
        convention (Gemma's ``1 + weight``, OLMo-2's ``weight``): its output on a constant vector
        large enough that ``eps`` does not count, in float32 (the precision the norms compute in).
        With ``weight``, the gain of that weight under the module's convention (a copy of the module
        holds it: e.g. the float32 weight of a folder beside a model loaded in bfloat16)."""
        eps = getattr(module, "eps", None)
        if eps is None:
            eps = getattr(module, "variance_epsilon", None)
        own = getattr(module, "weight", None)
        if eps is None or not isinstance(own, Tensor):
            return None
        if weight is not None:
            module = copy.deepcopy(module).float().cpu()
            own = cast(Tensor, module.weight)
            own.data = weight.detach().float().cpu().reshape(own.shape)
        probe = torch.full((1, own.shape[-1]), 1e3, dtype=torch.float32, device=own.device)
        with torch.no_grad():
            gain = module(probe)[0].double().cpu()
        return cls(gain=gain, eps=float(eps))


def _bridged(model: MechrefModel, layer: int, part: str) -> torch.nn.Module | None:
    module = getattr(model.bridge.blocks[layer], part, None)
    return None if module is None else getattr(module, "original_component", module)


def post_norm(model: MechrefModel, layer: int) -> FrozenNorm | None:
    """The norm block ``layer`` applies to its attention's output before adding it to the residual
    stream (Gemma-2, Gemma-3, OLMo-2), or None where it adds the output as it is. (The MLP's write is
    read after its own post-norm, at the bridge's ``hook_mlp_out``: already what the stream gets.)"""
    module = _bridged(model, layer, POST_NORM_PARTS[0])
    return None if module is None else FrozenNorm.of(module)


def post_norm_modules(model: MechrefModel) -> list[torch.nn.Module | None]:
    """The Hugging Face norm module after each residual-stream writer, in writer order (layer 0's
    attention, layer 0's MLP, layer 1's attention, ...); None for a writer added as it is."""
    return [_bridged(model, layer, part) for layer in range(model.n_layers) for part in POST_NORM_PARTS]


def writer_post_norms(model: MechrefModel) -> list[FrozenNorm | None]:
    """:class:`FrozenNorm` of each writer's post-norm, in writer order (see :func:`post_norm_modules`)."""
    return [None if module is None else FrozenNorm.of(module) for module in post_norm_modules(model)]


def write_target(r: Float[Tensor, " d_model"], gain: Tensor | None) -> Float[Tensor, " d_model"]:
    """The unit vector a writer's output must be kept orthogonal to for the stream to get nothing
    along the unit vector ``r``: ``r`` itself, or through a post-norm of gain ``g``, ``g * r`` normalized
    (in ``r``'s dtype).

    >>> r = torch.tensor([0.6, 0.8], dtype=torch.float64)
    >>> write_target(r, None).tolist(), write_target(r, torch.tensor([2.0, 0.0])).tolist()
    ([0.6, 0.8], [1.0, 0.0])
    """
    if gain is None:
        return r
    target = gain.to(r) * r
    norm = target.norm()
    if not norm > 0:
        # g * r = 0: the norm already writes nothing along r, whatever the writer's output.
        return torch.zeros_like(r)
    return target / norm
