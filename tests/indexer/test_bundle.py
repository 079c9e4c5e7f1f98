"""The bundle reader: search vs a brute-force cosine oracle, metadata, read-only access,
and refusal of truncated / tampered / other-version bundles and mismatched models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import indexer_helpers as H
import numpy as np
import pytest

from parasal.indexer.bundle import SampleMeta, open_bundle
from parasal.indexer.errors import BundleCorrupt, BundleVersionMismatch, ModelMismatch, SampleNotFound
from parasal.indexer.models import LoadedModel, load_model
from parasal.indexer.pipeline import IndexJob, run_index

GRAY = {"channels": "L", "mean": (0.5,), "std": (0.5,)}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    data = H.make_image_folder(root / "imgs", per_class=12)
    H.corrupt_file(data / "c" / "005.png")
    result = run_index(
        IndexJob(
            data=str(data),
            out=root / "b",
            model=H.FACTORY,
            preprocessing=GRAY,
            batch_size=5,
            shard_size=8,
            progress=False,
            max_skipped=0.1,  # one corrupt file in 36
        )
    )
    return result


@pytest.fixture()
def bundle(built):
    with open_bundle(built.bundle) as b:
        yield b


def brute_force(b, queries, k, rows=None, cols=None):
    """Cosine over the stored float16 profiles, computed in float64 with no FAISS at all."""
    x = b.profiles(b.ids).astype(np.float64)
    q = np.asarray(queries, np.float64)
    if cols is not None:
        x, q = x[:, cols], q[:, cols]
    rows = np.arange(len(b.ids)) if rows is None else np.asarray(rows)
    x = x[rows] / np.linalg.norm(x[rows], axis=1, keepdims=True)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = q @ x.T
    out = []
    for s in sims:
        order = np.argsort(-s, kind="stable")[:k]
        out.append([(int(b.ids[rows[j]]), float(s[j])) for j in order])
    return out


def assert_same(got, want, atol=2e-5):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert [i for i, _ in g] == [i for i, _ in w]
        np.testing.assert_allclose([s for _, s in g], [s for _, s in w], atol=atol)


def test_counts_and_metadata(bundle, built):
    assert bundle.num_samples == 35 == len(bundle.ids)  # 36 images, one corrupt
    assert built.skipped == 1 and bundle.manifest.skipped[0].uri.endswith("c/005.png")
    assert 29 not in set(bundle.ids.tolist())  # c/005 is dataset index 24 + 5
    assert bundle.num_misclassified == int((~bundle.correct).sum())
    meta = bundle.meta(int(bundle.ids[7]))
    assert isinstance(meta, SampleMeta) and meta.uri.endswith(".png") and meta.label == bundle.labels[7]
    assert meta.correct == (meta.label == meta.predicted)
    assert 0 < meta.true_confidence <= meta.predicted_confidence <= 1
    np.testing.assert_allclose(meta.loss, -np.log(meta.true_confidence), rtol=1e-9)
    z = bundle.profile(meta.id)
    assert z.dtype == np.float32 and z.shape == (18,)
    top = [i for i, _ in meta.top_filters]
    assert len(top) == 10 and top == list(np.argsort(-z, kind="stable")[:10])
    np.testing.assert_allclose([v for _, v in meta.top_filters], z[top])
    assert [m.id for m in bundle.metas(bundle.ids[:3])] == bundle.ids[:3].tolist()
    with pytest.raises(SampleNotFound):
        bundle.meta(29)
    with pytest.raises(KeyError):
        bundle.profile(10_000)


def test_profiles_are_standardized_with_the_bundle_stats(bundle):
    z = bundle.profiles(bundle.ids).astype(np.float64)
    # mean of z over the very samples the statistics came from is ~0, variance ~1 (ddof=1)
    live = bundle.stats.std != 1.0
    np.testing.assert_allclose(z.mean(axis=0)[live], 0, atol=2e-3)
    np.testing.assert_allclose(z.var(axis=0, ddof=1)[live], 1, atol=5e-3)
    assert bundle.stats.count == bundle.num_samples


def test_search_matches_brute_force(bundle):
    q = bundle.profiles(bundle.ids[[0, 9, 20]]) + 0.1 * np.random.default_rng(0).standard_normal((3, 18)).astype(
        np.float32
    )
    assert_same(bundle.search(q, 7), brute_force(bundle, q, 7))
    everything = bundle.search(q[:1], 100)[0]
    assert len(everything) == bundle.num_samples  # k larger than the bundle: all of it


def test_search_with_allowed_and_exclusions(bundle):
    q = bundle.profiles(bundle.ids[[0, 13]])
    allowed = bundle.rows_where(labels=[1, 2])
    assert allowed.sum() == 23
    assert_same(bundle.search(q, 5, allowed=allowed), brute_force(bundle, q, 5, rows=np.flatnonzero(allowed)))
    exclude = [int(bundle.ids[0]), int(bundle.ids[13]), 999_999]
    keep = ~np.isin(bundle.ids, exclude)
    assert_same(bundle.search(q, 5, exclude_ids=exclude), brute_force(bundle, q, 5, rows=np.flatnonzero(keep)))
    both = allowed & keep
    got = bundle.search(q, 50, allowed=allowed, exclude_ids=exclude)
    assert [len(r) for r in got] == [both.sum()] * 2  # exactly min(k, #allowed)
    assert_same(got, brute_force(bundle, q, 50, rows=np.flatnonzero(both)))
    none = np.zeros(len(bundle.ids), bool)
    assert bundle.search(q, 5, allowed=none) == [[], []]
    with pytest.raises(ValueError):
        bundle.search(q, 5, allowed=np.ones(3, bool))


def test_search_over_a_subset_of_layers(bundle):
    q = bundle.profiles(bundle.ids[[3, 30]])
    for layers, cols in ((["conv1"], range(0, 4)), (["conv2", "conv3"], range(4, 18))):
        got = bundle.search(q, 6, layers=layers)
        assert_same(got, brute_force(bundle, q, 6, cols=list(cols)))
    mis = bundle.rows_where(misclassified=True)
    got = bundle.search(q, 4, layers=["conv3"], allowed=mis)
    assert_same(got, brute_force(bundle, q, 4, rows=np.flatnonzero(mis), cols=list(range(10, 18))))
    with pytest.raises(ValueError, match="unknown layer"):
        bundle.search(q, 3, layers=["fc"])


def test_rows_where(bundle):
    mis = bundle.rows_where(misclassified=True)
    assert mis.dtype == np.bool_ and mis.sum() == bundle.num_misclassified
    assert np.array_equal(bundle.rows_where(misclassified=False), ~mis)
    sel = bundle.rows_where(labels=[0], predicted=[0, 1])
    assert np.array_equal(sel, (bundle.labels == 0) & np.isin(bundle.predicted, [0, 1]))


def test_reader_never_modifies_the_bundle(built):
    before = H.tree_snapshot(built.bundle)
    with open_bundle(built.bundle) as a, open_bundle(built.bundle, verify="size") as b:  # same LMDB env twice
        q = a.profiles(a.ids[:2])
        a.search(q, 3), b.search(q, 3, allowed=b.rows_where(misclassified=True)), b.search(q, 3, layers=["conv2"])
        a.metas(a.ids)
        assert b.load_image(int(b.ids[0])).size == (28, 28)
    assert H.tree_snapshot(built.bundle) == before


def test_model_checks(built, tmp_path):
    same = load_model(H.FACTORY, preprocessing=GRAY)
    with open_bundle(built.bundle, model=same) as b:
        assert b.load_model().fingerprint == same.fingerprint
    other = load_model(H.FACTORY, weights=H.save_weights(tmp_path / "w.pt", seed=1), preprocessing=GRAY)
    with pytest.raises(ModelMismatch, match="fingerprint"):
        open_bundle(built.bundle, model=other)
    relabelled = LoadedModel(
        same.model,
        same.preprocessing,
        same.spec,
        same.fingerprint,
        layout=load_model("indexer_helpers:fixed_size_net").layout,
    )
    with pytest.raises(ModelMismatch, match="layout"):
        open_bundle(built.bundle, model=relabelled)


def _copy(built, tmp_path) -> tuple[Path, Path]:
    dst = tmp_path / "copy"
    shutil.copytree(built.bundle, dst)
    return dst, dst / (dst / "CURRENT").read_text().strip()


def test_truncated_file_is_refused(built, tmp_path):
    root, gen = _copy(built, tmp_path)
    data = (gen / "profiles.npy").read_bytes()
    (gen / "profiles.npy").write_bytes(data[: len(data) // 2])
    for verify in (True, "size"):
        with pytest.raises(BundleCorrupt, match=r"truncated.*profiles\.npy is \d+ bytes"):
            open_bundle(root, verify=verify)


def test_missing_file_and_missing_generation_are_refused(built, tmp_path):
    root, gen = _copy(built, tmp_path)
    (gen / "meta.lmdb").unlink()
    with pytest.raises(BundleCorrupt, match="meta.lmdb is missing"):
        open_bundle(root)
    shutil.rmtree(gen)
    with pytest.raises(BundleCorrupt, match="CURRENT points to gen-00001, which is missing"):
        open_bundle(root)
    with pytest.raises(BundleCorrupt, match="not a parasal bundle"):
        open_bundle(tmp_path)


def test_tampered_file_is_refused(built, tmp_path):
    root, gen = _copy(built, tmp_path)
    data = bytearray((gen / "index.faiss").read_bytes())
    data[-5] ^= 0xFF  # same size, different bytes
    (gen / "index.faiss").write_bytes(bytes(data))
    with pytest.raises(BundleCorrupt, match=r"sha256 of index\.faiss does not match"):
        open_bundle(root)
    open_bundle(root, verify="size").close()  # documented: sizes only


def test_tampered_manifest_is_refused(built, tmp_path):
    root, gen = _copy(built, tmp_path)
    manifest = json.loads((gen / "manifest.json").read_text())
    manifest["counts"]["misclassified"] = 0
    (gen / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleCorrupt, match="manifest checksum"):
        open_bundle(root)
    (gen / "manifest.json").write_text('{"format": "parasal-bundle", "format_ver')
    with pytest.raises(BundleCorrupt, match="not valid JSON"):
        open_bundle(root)


def test_other_format_version_is_refused(built, tmp_path):
    root, gen = _copy(built, tmp_path)
    manifest = json.loads((gen / "manifest.json").read_text())
    manifest["format_version"] = 99
    (gen / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleVersionMismatch, match="format version 99.*reads version 1"):
        open_bundle(root)


@pytest.mark.parametrize("index_type", ["SQfp16", "PCA8,Flat", "IVF2,Flat"])
def test_faiss_factory_index_types(built, tmp_path, index_type):
    """Other factory strings build, search, and honour filters with exactly min(k, #allowed) results."""
    data = Path(json.loads((built.bundle / "gen-00001" / "manifest.json").read_text())["datasets"][0]["spec"])
    out = tmp_path / "b"
    res = run_index(
        IndexJob(
            data=str(data),
            out=out,
            model=H.FACTORY,
            preprocessing=GRAY,
            batch_size=5,
            shard_size=8,
            index_type=index_type,
            progress=False,
            max_skipped=0.1,
        )
    )
    with open_bundle(out) as b, open_bundle(built.bundle) as exact:
        assert b.index_type == index_type and b.manifest.index.ntotal == res.samples
        assert np.array_equal(b.ids, exact.ids)
        q = b.profiles(b.ids[:4])
        raw = b.search(q, 5, rerank=0)  # the index's own (approximate) answer
        assert all(len(h) == 5 for h in raw)
        if index_type != "PCA8,Flat":  # PCA to 8 of 18 dims may reorder near-duplicates
            assert [h[0][0] for h in raw] == b.ids[:4].tolist()
        # default: candidates re-scored exactly against the stored profiles; with 35 rows
        # (< 64 candidates) that is the exact answer
        assert_same(b.search(q, 5), exact.search(q, 5))
        allowed = b.rows_where(labels=[2])
        got = b.search(q, 50, allowed=allowed, rerank=0)
        assert [len(h) for h in got] == [allowed.sum()] * 4
        assert all(set(i for i, _ in h) == set(b.ids[allowed].tolist()) for h in got)
        assert_same(b.search(q, 4, allowed=allowed), exact.search(q, 4, allowed=allowed))
        assert_same(b.search(q, 5, layers=["conv3"]), exact.search(q, 5, layers=["conv3"]))


def test_unverified_open_still_fails_cleanly_on_a_broken_index(built, tmp_path):
    root, gen = _copy(built, tmp_path)
    data = (gen / "index.faiss").read_bytes()
    (gen / "index.faiss").write_bytes(data[:100])
    with pytest.raises(BundleCorrupt, match="index.faiss"):
        open_bundle(root, verify=False)


def test_row_of_one_id_agrees_with_rows_of(bundle):
    ids = bundle.ids
    assert [bundle.row_of(i) for i in ids] == bundle.rows_of(ids).tolist()
    missing = sorted(set(range(int(ids[0]) - 2, int(ids[-1]) + 3)) - set(ids.tolist()))
    assert missing  # before, after (and, with the corrupt image skipped, inside) the id range
    for sample_id in missing:
        with pytest.raises(SampleNotFound, match=f"no sample with id {sample_id} "):
            bundle.row_of(sample_id)


def test_row_of_with_contiguous_ids(built, tmp_path):
    root = tmp_path / "contiguous"
    data = H.make_image_folder(root / "imgs", per_class=3)
    result = run_index(
        IndexJob(
            data=str(data),
            out=root / "b",
            model=H.FACTORY,
            preprocessing=GRAY,
            batch_size=5,
            shard_size=8,
            progress=False,
        )
    )
    with open_bundle(result.bundle) as b:
        assert b.ids.tolist() == list(range(len(b.ids)))
        assert [b.row_of(i) for i in b.ids] == list(range(len(b.ids)))
        for sample_id in (-1, len(b.ids)):
            with pytest.raises(SampleNotFound):
                b.row_of(sample_id)
