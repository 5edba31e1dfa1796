import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from mechref.multilingual.metrics import (
    cosine_matrix,
    cosine_matrix_by_layer,
    mean_off_diagonal,
    pca_projection,
    silhouette,
    silhouette_by_layer,
)


def test_cosine_matrix_matches_torch():
    v = torch.randn(5, 16)
    m = cosine_matrix(v)
    expected = torch.nn.functional.cosine_similarity(v.unsqueeze(1), v.unsqueeze(0), dim=-1)
    torch.testing.assert_close(m, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cosine_matrix(v * torch.rand(5, 1) * 10), m, atol=1e-5, rtol=1e-5)  # scale-free
    by_layer = cosine_matrix_by_layer(torch.stack([v, -v], dim=1))
    torch.testing.assert_close(by_layer[1], m, atol=1e-5, rtol=1e-5)
    assert abs(float(mean_off_diagonal(m)) - float((m.sum() - m.diag().sum()) / 20)) < 1e-5
    with pytest.raises(ValueError, match="zero norm"):
        cosine_matrix(torch.zeros(2, 3))


def test_silhouette_matches_sklearn_and_tracks_separation():
    g = torch.Generator().manual_seed(0)
    harmful, harmless = torch.randn(20, 8, generator=g) + 3, torch.randn(15, 8, generator=g)
    x = np.concatenate([harmful.numpy(), harmless.numpy()])
    expected = silhouette_score(x, [1] * 20 + [0] * 15)
    assert abs(silhouette(harmful, harmless) - expected) < 1e-6
    far, near = silhouette(harmful + 10, harmless), silhouette(harmful - 3, harmless)
    assert far > expected > near and abs(near) < 0.2
    layers = silhouette_by_layer(torch.stack([harmful, harmful - 3], 1), torch.stack([harmless, harmless], 1))
    assert abs(float(layers[0]) - expected) < 1e-6 and abs(float(layers[1]) - near) < 1e-6
    with pytest.raises(ValueError, match="two prompts"):
        silhouette(harmful[:1], harmless)


def test_pca_projection_matches_sklearn():
    x = torch.randn(30, 10) * torch.linspace(5, 0.1, 10)
    coords, ratio = pca_projection(x)
    pca = PCA(2).fit(x.double().numpy())
    np.testing.assert_allclose(ratio.numpy(), pca.explained_variance_ratio_, rtol=1e-5)
    np.testing.assert_allclose(np.abs(coords.numpy()), np.abs(pca.transform(x.double().numpy())), rtol=1e-4, atol=1e-4)
    assert float(ratio[0]) > float(ratio[1]) and float(ratio.sum()) <= 1
    other, _ = pca_projection(x, x[:4])
    torch.testing.assert_close(other, coords[:4])
