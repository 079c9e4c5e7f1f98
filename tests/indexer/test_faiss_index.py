"""FAISS building blocks: factory strings, the randomized PCA for wide profiles, row selectors."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from parasal.indexer import faiss_index as fi
from parasal.indexer import scoring as sc
from parasal.indexer.errors import IndexBuildError


def clustered(n, d, seed=0, clusters=8, rank=6):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d))
    basis = rng.standard_normal((rank, d))
    x = (
        centers[rng.integers(0, clusters, n)]
        + rng.standard_normal((n, rank)) @ basis
        + 0.3 * rng.standard_normal((n, d))
    )
    return x.astype(np.float16)


def exact_top(x, q, k):
    xn, qn = sc.normalize_rows(x), sc.normalize_rows(q)
    return np.argsort(-(qn @ xn.T), axis=1, kind="stable")[:, :k]


def test_randomized_pca_matches_the_exact_principal_subspace():
    x = sc.normalize_rows(clustered(300, 1000))
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
    _, got = index.search(sc.normalize_rows(q), 10)
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
    params, keep = sc.row_selector_params(index, mask)
    assert params is not None
    _, rows = sc.inner_index(index).search(sc.normalize_rows(x[:5]), 10, params=params)
    assert (rows >= 0).any() and mask[rows[rows >= 0]].all()


def _flat(x):
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(x.shape[1]))
    index.add_with_ids(sc.normalize_rows(x), np.arange(len(x), dtype=np.int64) * 10)
    return index


def test_flat_vectors_is_a_view_of_an_exact_inner_product_index_only():
    x = clustered(50, 16)
    view = fi.flat_vectors(_flat(x))
    np.testing.assert_array_equal(view, sc.normalize_rows(x))
    assert fi.flat_vectors(faiss.IndexFlatL2(16)) is None  # L2 scores are not cosines
    assert fi.flat_vectors(faiss.index_factory(16, "SQfp16", faiss.METRIC_INNER_PRODUCT)) is None
    assert fi.flat_vectors(faiss.IndexFlatIP(16)) is None  # empty


def best(rows, scores, k):
    """The scan's candidates in (score desc, row asc) order, as the bundle sorts them."""
    order = np.lexsort((rows, -scores))[:k]
    return rows[order].tolist(), scores[order]


@pytest.mark.parametrize("with_mask", [False, True])
def test_flat_scan_matches_a_float64_brute_force_with_ties_kept(with_mask):
    x = clustered(400, 24).astype(np.float32)
    x[200:210] = x[3]  # ten exact duplicates of row 3: tied scores straddle the k-th place
    xb = sc.normalize_rows(x)
    rng = np.random.default_rng(1)
    q = sc.normalize_rows(np.concatenate([x[3:4], rng.standard_normal((6, 24)).astype(np.float32)]))
    mask = None
    if with_mask:
        mask = rng.random(400) < 0.6
        mask[200:210] = True  # the duplicates stay searchable
    k = 5
    found = sc.flat_scan(xb, q, k, mask)
    sims = q.astype(np.float64) @ xb.astype(np.float64).T
    if mask is not None:
        sims[:, ~mask] = -np.inf
    for j, (rows, scores) in enumerate(found):
        assert mask is None or mask[rows].all()
        got, got_scores = best(rows, scores, k)
        want = np.lexsort((np.arange(400), -np.round(sims[j], 5)))[:k]
        np.testing.assert_allclose(got_scores, sims[j][want], atol=1e-5)
        assert set(got) == set(want.tolist()) or np.allclose(np.sort(sims[j][got]), np.sort(sims[j][want]), atol=1e-6)
    # The duplicate query: row 3 and its ten copies all tie at 1.0, and every one comes back.
    rows, scores = found[0]
    assert {3, *range(200, 210)} <= set(rows.tolist())
    assert best(rows, scores, k)[0] == [3, 200, 201, 202, 203]  # ties by row


def test_flat_scan_edge_cases():
    xb = sc.normalize_rows(clustered(30, 8).astype(np.float32))
    q = xb[:2]
    mask = np.zeros(30, bool)
    mask[[4, 9]] = True
    rows = [sorted(r.tolist()) for r, _ in sc.flat_scan(xb, q, 10, mask)]
    assert rows == [[4, 9], [4, 9]]  # k beyond what the mask allows: all allowed rows
    assert all(len(r) == 0 for r, _ in sc.flat_scan(xb, q, 10, np.zeros(30, bool)))
    assert all(len(r) == 0 for r, _ in sc.flat_scan(xb, q, 0))


def test_flat_vectors_keep_their_index_alive():
    import gc

    x = clustered(50, 16)
    view = fi.flat_vectors(_flat(x))  # the index itself is not referenced anywhere else
    gc.collect()
    clustered(5000, 64)  # reuse freed memory, if it had been freed
    np.testing.assert_array_equal(view, sc.normalize_rows(x))
    assert not view.flags.writeable
