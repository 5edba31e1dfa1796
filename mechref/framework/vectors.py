"""Validation of direction vectors against a model."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from mechref.errors import NonFiniteError, ShapeError


def check_vector(vector: Tensor, d_model: int, what: str = "direction") -> Float[Tensor, " d_model"]:
    """Return ``vector`` as a 1-D float tensor after checking its width and values.

    >>> check_vector(torch.ones(4), 4).shape
    torch.Size([4])
    >>> check_vector(torch.ones(3), 4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mechref.errors.ShapeError: the direction has shape (3,) but this model's residual stream has width 4; ...
    """
    if not isinstance(vector, Tensor):
        vector = torch.as_tensor(vector)
    vector = vector.squeeze()
    if vector.ndim != 1 or vector.shape[0] != d_model:
        raise ShapeError(
            f"the {what} has shape {tuple(vector.shape)} but this model's residual stream has width {d_model}; "
            "was it computed on another model? Recompute it on this one"
        )
    if not torch.isfinite(vector).all():
        raise NonFiniteError(f"the {what} holds NaN or infinite values; recompute it (check for empty prompt sets)")
    return vector.float()


def unit(vector: Tensor, d_model: int, what: str = "direction") -> Float[Tensor, " d_model"]:
    """The unit vector along ``vector``, checked as in :func:`check_vector` and for a zero norm."""
    vector = check_vector(vector, d_model, what)
    norm = vector.norm()
    if norm == 0:
        raise ShapeError(f"the {what} is the zero vector and has no direction")
    return vector / norm
