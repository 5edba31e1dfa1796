"""The space of edits the search explores: which direction, and how strongly each layer's
attention and MLP outputs are edited (a kernel over layers for each, as heretic parametrizes it).

A point's direction is the difference-in-means candidate at the run's position, interpolated
linearly between the two candidate layers around ``direction_layer`` (a fractional layer).

>>> import torch
>>> point = EditPoint(2.5, LayerKernel(1, 2, 0.5, 1.0), LayerKernel(0, 1, 0.0, 1.0))
>>> candidates = torch.stack([torch.eye(4)] * 2)          # [n_pos, n_layer, d_model]
>>> point.direction(candidates, 0)
tensor([0.0000, 0.0000, 0.5000, 0.5000])
>>> point.strengths(3).mlp
(1.0, 0.0, 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

from mechref.edits.strengths import EditStrengths, LayerKernel


@dataclass(frozen=True)
class EditPoint:
    """One edit: the (fractional) layer of its direction and the two kernels of its strengths."""

    direction_layer: float
    attention: LayerKernel
    mlp: LayerKernel

    def direction(self, candidates: Float[Tensor, "n_pos n_layer d_model"], position_index: int) -> Float[Tensor, " d_model"]:
        """The direction at this point's (fractional) layer: linear interpolation between the two nearest
        candidates' rows."""
        low = math.floor(self.direction_layer)
        high = min(low + 1, candidates.shape[1] - 1)
        share = self.direction_layer - low
        rows = candidates[position_index].float()
        return (1 - share) * rows[low] + share * rows[high]

    def strengths(self, n_layers: int) -> EditStrengths:
        """The per-layer edit strengths of this point's kernels."""
        return EditStrengths.from_kernels(n_layers, self.attention, self.mlp)

    def to_dict(self) -> dict:
        """The point as written to the trial records (rounded to 4 places)."""
        return {
            "direction_layer": round(self.direction_layer, 4),
            "attention": {k: round(v, 4) for k, v in self.attention.__dict__.items()},
            "mlp": {k: round(v, 4) for k, v in self.mlp.__dict__.items()},
        }


def layer_range(n_layers: int, low: float, high: float, must_include: int) -> tuple[float, float]:
    """The fractional layers a direction may come from: ``[low, high]`` of the depth, widened to
    include the layer the refusal-direction analysis chose (the reference edit's).

    >>> layer_range(28, 0.3, 0.9, 20)
    (8.1, 24.3)
    """
    lo, hi = low * (n_layers - 1), high * (n_layers - 1)
    return round(min(lo, must_include), 4), round(max(hi, must_include), 4)


def suggest(trial, n_layers: int, layers: tuple[float, float]) -> EditPoint:
    """Draw an edit from an Optuna trial: the direction's layer, and per writer kind the kernel's
    peak layer, width, maximum strength and minimum as a fraction of the maximum."""
    kernels = {}
    for kind in ("attention", "mlp"):
        peak = trial.suggest_float(f"{kind}_peak", 0.0, float(n_layers - 1))
        width = trial.suggest_float(f"{kind}_width", 1.0, float(n_layers))
        top = trial.suggest_float(f"{kind}_max", 0.5, 1.5)
        floor = trial.suggest_float(f"{kind}_min_fraction", 0.0, 1.0)
        kernels[kind] = LayerKernel(peak, width, floor * top, top)
    return EditPoint(trial.suggest_float("direction_layer", *layers), kernels["attention"], kernels["mlp"])


def reference_params(layer: int, n_layers: int) -> dict[str, float]:
    """Trial parameters of today's edit: the chosen layer's direction removed in full everywhere."""
    params: dict[str, float] = {"direction_layer": float(layer)}
    for kind in ("attention", "mlp"):
        params.update({f"{kind}_peak": 0.0, f"{kind}_width": float(n_layers), f"{kind}_max": 1.0, f"{kind}_min_fraction": 1.0})
    return params


def point_from_params(params: dict[str, float]) -> EditPoint:
    """The edit point an Optuna trial's parameters describe."""
    kernels = {
        kind: LayerKernel(
            params[f"{kind}_peak"],
            params[f"{kind}_width"],
            params[f"{kind}_min_fraction"] * params[f"{kind}_max"],
            params[f"{kind}_max"],
        )
        for kind in ("attention", "mlp")
    }
    return EditPoint(params["direction_layer"], kernels["attention"], kernels["mlp"])


def is_full(point: EditPoint, n_layers: int) -> bool:
    """Whether the point is the paper's edit: every weight at full strength, the direction of one whole layer."""
    return point.strengths(n_layers).is_full() and float(point.direction_layer).is_integer()


__all__ = ["EditPoint", "is_full", "layer_range", "point_from_params", "reference_params", "suggest"]
