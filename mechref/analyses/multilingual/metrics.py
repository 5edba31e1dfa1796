"""Measures of the multilingual analyses, as functions of activations.

>>> import torch
>>> m = cosine_matrix(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]]))
>>> [[round(float(x), 3) for x in row] for row in m]
[[1.0, 0.707, 0.0], [0.707, 1.0, -0.707], [0.0, -0.707, 1.0]]
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def cosine_matrix(vectors: Float[Tensor, "n d"], zero: str = "raise") -> Float[Tensor, "n n"]:
    """Pairwise cosine similarity of the rows (e.g. one refusal vector per language).

    A zero vector has no direction: ``zero="raise"`` raises, ``zero="nan"`` gives NaN in its
    row and column (e.g. layer 0 at a template token, where every prompt looks the same).
    """
    if zero not in ("raise", "nan"):
        raise ValueError(f"zero must be 'raise' or 'nan', got {zero!r}")
    v = vectors.double()
    norms = v.norm(dim=-1, keepdim=True)
    if (norms == 0).any() and zero == "raise":
        raise ValueError("a vector has zero norm; its cosine similarity is undefined (was its prompt set empty?)")
    unit = v / norms.masked_fill(norms == 0, float("nan"))
    return (unit @ unit.T).clamp(-1, 1).float()


def cosine_matrix_by_layer(vectors: Float[Tensor, "n n_layer d"]) -> Float[Tensor, "n_layer n n"]:
    """:func:`cosine_matrix` at every layer (NaN where a vector is zero)."""
    return torch.stack([cosine_matrix(vectors[:, layer], zero="nan") for layer in range(vectors.shape[1])])


def mean_off_diagonal(matrix: Float[Tensor, "... n n"]) -> Float[Tensor, ...]:
    """Mean of the off-diagonal entries (the average pairwise similarity).

    >>> round(float(mean_off_diagonal(torch.tensor([[1.0, 0.5], [0.5, 1.0]]))), 3)
    0.5
    """
    n = matrix.shape[-1]
    if n < 2:
        raise ValueError("need at least two rows for an off-diagonal mean")
    mask = ~torch.eye(n, dtype=torch.bool)
    return matrix[..., mask].nanmean(-1)


def silhouette(harmful: Float[Tensor, "n d"], harmless: Float[Tensor, "m d"], metric: str = "euclidean") -> float:
    """Silhouette score of the two clusters harmful vs harmless (scikit-learn), in [-1, 1]."""
    from sklearn.metrics import silhouette_score

    if len(harmful) < 2 or len(harmless) < 2:
        raise ValueError("the silhouette score needs at least two prompts in each class")
    x = torch.cat([harmful, harmless]).double().numpy()
    labels = [1] * len(harmful) + [0] * len(harmless)
    return float(silhouette_score(x, labels, metric=metric))


def silhouette_by_layer(
    harmful: Float[Tensor, "n n_layer d"], harmless: Float[Tensor, "m n_layer d"], metric: str = "euclidean"
) -> Float[Tensor, " n_layer"]:
    """:func:`silhouette` at every layer."""
    return torch.tensor([silhouette(harmful[:, l], harmless[:, l], metric) for l in range(harmful.shape[1])])


def pca_projection(fit_on: Float[Tensor, "n d"], project: Float[Tensor, "m d"] | None = None, n_components: int = 2):
    """Fit a PCA on ``fit_on`` and project ``project`` (default: ``fit_on``) onto its components.

    Returns ``(coordinates [m, n_components], explained_variance_ratio [n_components])``.
    """
    from sklearn.decomposition import PCA

    pca = PCA(n_components=n_components).fit(fit_on.double().numpy())
    target = fit_on if project is None else project
    coords = torch.from_numpy(pca.transform(target.double().numpy())).float()
    return coords, torch.from_numpy(pca.explained_variance_ratio_).float()
