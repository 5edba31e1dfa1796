"""Interventions on the residual stream, as context managers.

Both work for a single forward pass and for generation alike, because they hook the model's
modules rather than a particular call:

>>> import torch
>>> from mechref.testing import tiny_model
>>> from mechref.capture import capture_residual
>>> model = tiny_model("qwen2")
>>> r = torch.randn(model.d_model)
>>> with directional_ablation(model, r):
...     acts = capture_residual(model, ["Write a poem"], kind="resid_post", progress=False)
>>> bool((acts.float() @ (r / r.norm())).abs().max() < 1e-4)
True
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from mechref.capture import block_hook_name, normalize_layers, resid_hook_name
from mechref.edits.strengths import EditStrengths
from mechref.errors import ShapeError
from mechref.framework.vectors import check_vector, unit
from mechref.model.loading import MechrefModel
from mechref.model.norms import POST_NORM_PARTS, write_target, writer_post_norms


def ablation_hooks(model: MechrefModel, direction: Float[Tensor, " d_model"]) -> list[tuple[str, object]]:
    """Hooks that remove the component along ``direction`` from everything that writes to the
    residual stream: the stream entering every block, and every attention and MLP output."""
    d_hat = unit(direction, model.d_model)
    cache: dict[tuple, Tensor] = {}

    def project_out(x: Tensor, hook=None) -> Tensor:
        key = (x.dtype, x.device)
        if key not in cache:
            cache[key] = d_hat.to(dtype=x.dtype, device=x.device)
        d = cache[key]
        return x - (x @ d).unsqueeze(-1) * d

    return [(name, project_out) for name in ablation_hook_names(model)]


def ablation_hook_names(model: MechrefModel) -> list[str]:
    """Where directional ablation acts: the stream entering every block, every attention and MLP output."""
    names = []
    for layer in range(model.n_layers):
        names += [resid_hook_name(layer, "resid_pre"), block_hook_name(layer, "attn_out"), block_hook_name(layer, "mlp_out")]
    return names


@contextlib.contextmanager
def directional_ablation(model: MechrefModel, direction: Float[Tensor, " d_model"]) -> Iterator[MechrefModel]:
    """Within the block, the model cannot represent ``direction``: its component is projected out of
    the residual stream at every layer and position, and out of every attention and MLP output
    (Arditi et al. 2024, eq. 4)."""
    with model.hooks(ablation_hooks(model, direction)):
        yield model


def subspace_ablation_hooks(model: MechrefModel, basis: Float[Tensor, "d_model k"]) -> list[tuple[str, object]]:
    """Hooks that remove every component in the span of ``basis``'s columns (orthonormal) from
    everything that writes to the residual stream, where :func:`ablation_hooks` removes one direction.
    With one column this is :func:`ablation_hooks` of that column."""
    if basis.ndim != 2 or basis.shape[0] != model.d_model:
        raise ShapeError(f"the subspace basis must be [d_model={model.d_model}, k], got shape {tuple(basis.shape)}")
    gram = basis.double().T @ basis.double()
    if not torch.allclose(gram, torch.eye(basis.shape[1], dtype=torch.float64), atol=1e-4):
        raise ShapeError("the subspace basis must have orthonormal columns (orthonormalise it, e.g. with torch.linalg.qr)")
    cache: dict[tuple, Tensor] = {}

    def project_out(x: Tensor, hook=None) -> Tensor:
        key = (x.dtype, x.device)
        if key not in cache:
            cache[key] = basis.to(dtype=x.dtype, device=x.device)
        q = cache[key]
        return x - (x @ q) @ q.T

    return [(name, project_out) for name in ablation_hook_names(model)]


@contextlib.contextmanager
def subspace_ablation(model: MechrefModel, basis: Float[Tensor, "d_model k"]) -> Iterator[MechrefModel]:
    """Within the block, the model cannot represent any direction in the span of ``basis``
    (orthonormal columns): :func:`directional_ablation` of a k-dimensional subspace."""
    with model.hooks(subspace_ablation_hooks(model, basis)):
        yield model


def weighted_ablation_hooks(
    model: MechrefModel, direction: Float[Tensor, " d_model"], strengths: EditStrengths
) -> list[tuple[str, object]]:
    """Hooks that remove a share of the component along ``direction`` from each writer: ``strengths.embedding``
    from the token embedding, ``strengths.attention[l]`` and ``strengths.mlp[l]`` from layer ``l``'s
    attention and MLP outputs. Exactly the weight edit
    :func:`~mechref.edits.orthogonalize.orthogonalize_weights` makes with those strengths, without
    touching the weights (so a search can try many edits on one model), through the post-norms of
    the families that have them as the weight edit goes (:mod:`mechref.model.norms`)."""
    if len(strengths.attention) != model.n_layers:
        raise ShapeError(f"{len(strengths.attention)} layer strengths for a model of {model.n_layers} layers")
    d_hat = unit(direction, model.d_model)
    cache: dict[tuple, Tensor] = {}

    def remover(share: float, target: Tensor):
        def project_out(x: Tensor, hook=None) -> Tensor:
            key = (id(target), x.dtype, x.device)
            if key not in cache:
                cache[key] = target.to(dtype=x.dtype, device=x.device)
            d = cache[key]
            return x - share * (x @ d).unsqueeze(-1) * d

        return project_out

    hooks: list[tuple[str, object]] = [("hook_embed", remover(strengths.embedding, d_hat))]
    # A writer followed by a post-norm (Gemma-2, Gemma-3, OLMo-2) is edited where the weight edit
    # edits it: its output before the norm, against g * r normalized (mechref.model.norms).
    norms = writer_post_norms(model)
    points = [(layer, part) for layer in range(model.n_layers) for part in ("attn", "mlp")]
    for (layer, part), norm, share in zip(points, norms, strengths.per_writer()):
        if norm is None:
            name = block_hook_name(layer, "attn_out" if part == "attn" else "mlp_out")
            target = d_hat
        else:
            name = f"blocks.{layer}.{POST_NORM_PARTS[part == 'mlp']}.hook_in"
            target = write_target(d_hat.double(), norm.gain).float()
        hooks.append((name, remover(share, target)))
    return [(name, fn) for (name, fn), share in zip(hooks, [strengths.embedding, *strengths.per_writer()]) if share != 0.0]


@contextlib.contextmanager
def weighted_ablation(
    model: MechrefModel, direction: Float[Tensor, " d_model"], strengths: EditStrengths
) -> Iterator[MechrefModel]:
    """Within the block, each writer writes only ``1 - strength`` of its component along ``direction``
    (:func:`weighted_ablation_hooks`); full strengths everywhere equal :func:`directional_ablation`."""
    with model.hooks(weighted_ablation_hooks(model, direction, strengths)):
        yield model


def addition_hooks(
    model: MechrefModel, vector: Float[Tensor, " d_model"], layer: int, coefficient: float = 1.0
) -> list[tuple[str, object]]:
    """A hook adding ``coefficient * vector`` to the residual stream entering ``layer``, at all positions."""
    (layer,) = normalize_layers(model, [layer])
    vec = check_vector(vector, model.d_model, "steering vector") * float(coefficient)
    cache: dict[tuple, Tensor] = {}

    def add(x: Tensor, hook=None) -> Tensor:
        key = (x.dtype, x.device)
        if key not in cache:
            cache[key] = vec.to(dtype=x.dtype, device=x.device)
        return x + cache[key]

    return [(resid_hook_name(layer, "resid_pre"), add)]


@contextlib.contextmanager
def activation_addition(
    model: MechrefModel, vector: Float[Tensor, " d_model"], layer: int, coefficient: float = 1.0
) -> Iterator[MechrefModel]:
    """Within the block, ``coefficient * vector`` is added to the residual stream entering ``layer``
    at every position (the vector is *not* normalised: pass the difference-in-means itself to
    shift activations by the harmful-minus-harmless gap, and ``coefficient=-1`` to subtract it)."""
    with model.hooks(addition_hooks(model, vector, layer, coefficient)):
        yield model


InterventionKind = Literal["baseline", "ablation", "addition"]


def intervene(
    model: MechrefModel,
    kind: InterventionKind,
    direction: Float[Tensor, " d_model"] | None = None,
    layer: int | None = None,
    coefficient: float = 1.0,
) -> ContextManager[MechrefModel]:
    """The one switch between interventions: ``baseline`` (none), ``ablation`` of ``direction``
    everywhere, or ``addition`` of ``coefficient * direction`` at ``layer``.

    >>> import torch
    >>> from mechref.testing import tiny_model
    >>> model = tiny_model("qwen2")
    >>> with intervene(model, "addition", torch.ones(model.d_model), layer=1, coefficient=-1.0):
    ...     pass
    """
    if kind == "baseline":
        return contextlib.nullcontext(model)
    if direction is None:
        raise ValueError(f"the {kind} intervention needs a direction")
    if kind == "ablation":
        return directional_ablation(model, direction)
    if kind == "addition":
        if layer is None:
            raise ValueError("activation addition needs the layer where the vector is added")
        return activation_addition(model, direction, layer, coefficient)
    raise ValueError(f"unknown intervention {kind!r}; choose baseline, ablation or addition")
