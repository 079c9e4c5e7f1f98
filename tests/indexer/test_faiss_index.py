"""FAISS building blocks: factory strings, the randomized PCA for wide profiles, row selectors."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from parasal.indexer import faiss_index as fi
from parasal.indexer.errors import IndexBuildError


def clustered(n, d, seed=0, clusters=8, rank=6):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d))
    basis = rng.standard_normal((rank, d))
    x = centers[rng.integers(0, clusters, n)] + rng.standard_normal((n, rank)) @ basis + 0.3 * rng.standard_normal((n, d))
    return x.astype(np.float16)


def exact_top(x, q, k):
    xn, qn = fi.normalize_rows(x), fi.normalize_rows(q)
    return np.argsort(-(qn @ xn.T), axis=1, kind="stable")[:, :k]


def test_randomized_pca_matches_the_exact_principal_subspace():
    x = fi.normalize_rows(clustered(300, 1000))
    pca = faiss.PCAMatrix(1000, 12)
    fi._train_pca(pca, x, np.random.default_rng(0))
    assert pca.is_trained
    xc = x.astype(np.float64) - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    mine = faiss.vector_to_array(pca.PCAMat).reshape(12, 1000)
    # cosines of the principal angles between the two 12-d subspaces
    cos = np.linalg.svd(mine @ vt[:12].T, compute_uv=False)
    assert cos.min() > 0.99
    y = pca.apply(x)
    np.testing.assert_allclose(y, (x - x.mean(axis=0)) @ mine.T, atol=1e-4)


def test_wide_pretransform_index_trains_in_chunks_and_recalls():
    x = clustered(600, 2100, seed=1)
    ids = np.arange(600, dtype=np.int64) * 2 + 5
    index, info = fi.build_index("PCA32,IVF4,Flat", x, ids, train_size=500, chunk_rows=128, nprobe=4)
    assert info["trained_on"] == 500 and info["nprobe"] == 4 and index.ntotal == 600
    q = x[:20].astype(np.float32) + 0.05 * np.random.default_rng(2).standard_normal((20, 2100)).astype(np.float32)
    _, got = index.search(fi.normalize_rows(q), 10)
    want = ids[exact_top(x, q, 10)]
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])
    assert recall > 0.8


def test_factory_errors():
    with pytest.raises(IndexBuildError, match="invalid FAISS factory string 'Nope'"):
        fi.new_index("Nope", 16)
    with pytest.raises(IndexBuildError, match="leave out IDMap"):
        fi.canonical_index_type("IDMap,Flat")
    with pytest.raises(IndexBuildError, match="100 IVF lists but only 50 samples"):
        fi.check_index_type("IVF100,Flat", 16, 50)
    fi.check_index_type("PCA8,IVF4,PQ4", 16, 50)


@pytest.mark.parametrize("factory", ["Flat", "SQfp16", "IVF4,Flat", "PCA8,IVF4,Flat", "HNSW8"])
def test_row_selector_restricts_every_index_type(factory):
    x = clustered(300, 16, seed=3)
    ids = np.arange(300, dtype=np.int64) + 1000
    index, _ = fi.build_index(factory, x, ids, train_size=300, nprobe=4)
    mask = np.zeros(300, bool)
    mask[::3] = True
    params, keep = fi.row_selector_params(index, mask)
    assert params is not None
    _, rows = fi.inner_index(index).search(fi.normalize_rows(x[:5]), 10, params=params)
    assert (rows >= 0).any() and mask[rows[rows >= 0]].all()
