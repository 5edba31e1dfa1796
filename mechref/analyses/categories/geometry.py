"""The geometry of refusal across harm categories: per-category directions, their cosines, a
clustering order, and the principal subspace they span.

Every function is plain linear algebra on tensors already captured, so each is checked against
numpy / scipy in the tests.

>>> import torch
>>> harmful = torch.tensor([[2.0, 0.0], [4.0, 0.0], [0.0, 3.0], [0.0, 5.0]])
>>> directions = category_directions(harmful, ["a", "a", "b", "b"], torch.zeros(1, 2))
>>> directions["a"].tolist(), directions["b"].tolist()
([3.0, 0.0], [0.0, 4.0])
>>> cosine_matrix(torch.stack(list(directions.values()))).tolist()
[[1.0, 0.0], [0.0, 1.0]]
>>> space = principal_subspace(torch.stack(list(directions.values())))
>>> [round(x, 2) for x in space.explained_variance_ratio.tolist()]
[0.64, 0.36]
>>> round(float(angle_to_subspace(torch.tensor([1.0, 1.0]), space.basis[:, :1])), 1)  # degrees
45.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor


def category_directions(
    harmful: Float[Tensor, "n_prompt d_model"],
    categories: Sequence[str],
    harmless: Float[Tensor, "n_harmless d_model"],
) -> dict[str, Float[Tensor, " d_model"]]:
    """Difference in means per category: the mean of its harmful prompts' activations minus the
    mean of every harmless prompt's (one shared harmless mean, so categories differ only by their
    own prompts). Accumulated in float64, returned in float32, in first-seen category order."""
    if len(categories) != harmful.shape[0]:
        raise ValueError(f"one category per prompt: {len(categories)} categories for {harmful.shape[0]} prompts")
    base = harmless.double().mean(0)
    out = {}
    for name in dict.fromkeys(categories):
        rows = [i for i, c in enumerate(categories) if c == name]
        out[name] = (harmful[rows].double().mean(0) - base).float()
    return out


def cosine_matrix(vectors: Float[Tensor, "n d_model"]) -> Float[Tensor, "n n"]:
    """Cosine similarity of every pair of rows (float64 arithmetic)."""
    v = vectors.double()
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (v @ v.T).clamp(-1, 1).float()


def cluster_order(cosines: Float[Tensor, "n n"]) -> list[int]:
    """An order of the rows that puts similar directions next to each other: the leaves of an
    average-linkage clustering on ``1 - cosine``.

    >>> import torch
    >>> c = torch.tensor([[1.0, 0.1, 0.9], [0.1, 1.0, 0.2], [0.9, 0.2, 1.0]])
    >>> order = cluster_order(c)
    >>> abs(order.index(0) - order.index(2))   # the two similar rows are neighbours
    1
    """
    n = cosines.shape[0]
    if n < 3:
        return list(range(n))
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = (1 - cosines.double()).clamp_min(0).numpy()
    distance = (distance + distance.T) / 2
    distance[range(n), range(n)] = 0
    return [int(i) for i in leaves_list(linkage(squareform(distance, checks=False), method="average"))]


@dataclass
class Subspace:
    """The principal subspace of a set of directions: orthonormal ``basis`` columns, strongest first."""

    basis: Float[Tensor, "d_model k"]
    singular_values: Float[Tensor, " k"]

    @property
    def explained_variance_ratio(self) -> Float[Tensor, " k"]:
        """Share of the directions' total squared norm along each component."""
        power = self.singular_values.double() ** 2
        return (power / power.sum()).float()

    def top(self, k: int) -> Float[Tensor, "d_model k"]:
        """The first ``k`` basis vectors (columns), the most shared first; ``ValueError`` outside 1..rank."""
        if not 1 <= k <= self.basis.shape[1]:
            raise ValueError(f"k must be between 1 and {self.basis.shape[1]}, got {k}")
        return self.basis[:, :k]


def principal_subspace(directions: Float[Tensor, "n d_model"]) -> Subspace:
    """SVD of the stacked directions, *not* centred: what they share (the common refusal
    component) is the first component, not subtracted away. Each component's sign is chosen so
    that it points along the directions' mean (a component is defined up to sign)."""
    x = directions.double()
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    basis = vh.T.clone()
    mean = x.mean(0)
    for j in range(basis.shape[1]):
        if float(basis[:, j] @ mean) < 0:
            basis[:, j] = -basis[:, j]
    return Subspace(basis=basis.float(), singular_values=s.float())


def angle_to_subspace(vector: Float[Tensor, " d_model"], basis: Float[Tensor, "d_model k"]) -> float:
    """The angle in degrees between ``vector`` and the span of the orthonormal ``basis`` columns:
    ``arccos(|projection| / |vector|)``; 0 when the vector lies in the subspace."""
    v = vector.double()
    q = basis.double()
    inside = float((q.T @ v).norm() / v.norm().clamp_min(1e-12))
    return math.degrees(math.acos(max(-1.0, min(1.0, inside))))


def orthonormal(vectors: Float[Tensor, "k d_model"]) -> Float[Tensor, "d_model k"]:
    """Orthonormal columns spanning ``vectors`` (QR in float64), signs kept along the inputs."""
    q, r = torch.linalg.qr(vectors.double().T)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1
    return (q * signs).float()
