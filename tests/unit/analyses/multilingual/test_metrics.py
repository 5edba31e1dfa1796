import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from mechref.analyses.multilingual.metrics import (
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


def test_zero_vectors_give_nan_rows_only_where_asked():
    v = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.6, 0.8, 0.0]])  # unit, zero, unit
    m = cosine_matrix(v, zero="nan")
    assert torch.isnan(m[1]).all() and torch.isnan(m[:, 1]).all()
    keep = torch.tensor([0, 2])
    torch.testing.assert_close(m[keep][:, keep], torch.tensor([[1.0, 0.6], [0.6, 1.0]]))
    by_layer = cosine_matrix_by_layer(torch.stack([v, v + 1], dim=1))  # a zero vector at layer 0 only
    assert torch.isnan(by_layer[0, 1]).all() and not torch.isnan(by_layer[1]).any()
    with pytest.raises(ValueError, match="'raise' or 'nan'"):
        cosine_matrix(v, zero="NaN")


def test_cosines_stay_within_minus_one_and_one():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(6, 37, generator=g) * 7
    m = cosine_matrix(torch.cat([v, -v]))
    assert float(m.max()) == 1.0 and float(m.min()) == -1.0


def test_mean_off_diagonal_of_the_smallest_and_of_stacked_matrices():
    assert float(mean_off_diagonal(torch.tensor([[1.0, 0.2], [0.4, 1.0]]))) == pytest.approx(0.3)
    stacked = torch.tensor([[[1.0, 0.2, 0.5], [0.2, 1.0, float("nan")], [0.5, float("nan"), 1.0]], [[1.0, -1.0, 0.0]] * 3])
    torch.testing.assert_close(mean_off_diagonal(stacked), torch.tensor([0.35, 0.0]))
    with pytest.raises(ValueError, match="at least two rows"):
        mean_off_diagonal(torch.ones(1, 1))


def test_silhouette_with_two_prompts_per_class_and_another_metric():
    g = torch.Generator().manual_seed(1)
    harmful, harmless = torch.randn(2, 5, generator=g) + 2, torch.randn(2, 5, generator=g)
    x = np.concatenate([harmful.numpy(), harmless.numpy()])
    assert silhouette(harmful, harmless) == pytest.approx(silhouette_score(x, [1, 1, 0, 0]), abs=1e-6)
    cosine = silhouette_score(x, [1, 1, 0, 0], metric="cosine")
    assert cosine != pytest.approx(silhouette_score(x, [1, 1, 0, 0]), abs=1e-3)
    assert silhouette(harmful, harmless, metric="cosine") == pytest.approx(cosine, abs=1e-6)
    layers = silhouette_by_layer(harmful.unsqueeze(1), harmless.unsqueeze(1), metric="cosine")
    assert float(layers[0]) == pytest.approx(cosine, abs=1e-6)
    for a, b in ((harmful[:1], harmless), (harmful, harmless[:1])):
        with pytest.raises(ValueError, match="two prompts"):
            silhouette(a, b)
