"""`parasal export` (indexer/export.py): the Parquet file, read back with pyarrow, holds every
sample of a bundle exactly as the bundle does, in row groups; the command line refuses what
cannot work and never leaves a partial file. On a bundle of a non-demo model (a tiny net on
an image folder) and, with Fashion-MNIST, on one with reference data."""

from __future__ import annotations

import json
import math

import indexer_helpers as H
import numpy as np
import pyarrow.parquet as pq
import pytest

from parasal.indexer import open_bundle
from parasal.indexer.export import export_parquet, main
from parasal.indexer.failure_modes import bundle_failure_modes
from parasal.indexer.pipeline import IndexJob, run_index

GRAY = {"channels": "L", "mean": (0.5,), "std": (0.5,)}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    data = H.make_image_folder(tmp / "imgs", per_class=15)
    out = tmp / "bundle"
    run_index(IndexJob(data=str(data), out=out, model=H.FACTORY, preprocessing=GRAY, progress=False))
    return out


def check_against_bundle(table, b, modes=None):
    """Every column of the exported ``table`` equals what the bundle holds for the row's id."""
    rows = table.to_pylist()
    ids = b.ids.tolist()
    assert [r["id"] for r in rows] == ids
    metas = b.metas(ids)
    names = b.classes or []
    profiles = b.profiles(ids)
    mode_of = dict(zip(ids, modes.mode_of(ids).tolist())) if modes is not None else {}
    for r, m, p in zip(rows, metas, profiles, strict=True):
        assert r["uri"] == m.uri and r["label"] == m.label and r["predicted"] == m.predicted
        assert r["label_name"] == (names[m.label] if names else None)
        assert r["predicted_name"] == (names[m.predicted] if names else None)
        assert r["correct"] == m.correct
        for name in ("true_confidence", "predicted_confidence", "loss"):
            assert r[name] == pytest.approx(getattr(m, name), rel=1e-6, abs=1e-7)
        assert [(f["index"], f["z"]) for f in r["top_filters"]] == [(i, pytest.approx(z)) for i, z in m.top_filters]
        for f in r["top_filters"]:
            span, j = b.layout.locate(f["index"])
            assert (f["layer"], f["filter"]) == (span.name, j)
        assert np.array_equal(np.asarray(r["profile"], np.float32), p)
        expected_mode = mode_of.get(m.id, -1)
        assert r["failure_mode"] == (None if expected_mode < 0 else expected_mode)
        if m.correct:
            assert r["failure_mode"] is None
    return rows


def test_the_export_holds_every_sample_as_the_bundle_does(bundle_dir, tmp_path):
    out = tmp_path / "tiny.parquet"
    with open_bundle(bundle_dir) as b:
        assert export_parquet(b, out, row_group_size=8) == 45
        modes = bundle_failure_modes(b, shared=False, with_map=False)
        f = pq.ParquetFile(out)
        assert f.metadata.num_row_groups == math.ceil(45 / 8)
        rows = check_against_bundle(f.read(), b, modes)
        assert all(r["beta"] is None and r["num_surprise"] is None for r in rows)  # no reference data
        meta = json.loads(f.schema_arrow.metadata[b"parasal"])
        assert meta["generation"] == b.generation and meta["model_fingerprint"] == b.fingerprint
        assert meta["class_names"] == ["a", "b", "c"] and meta["failure_modes"]["method"] == modes.method
        assert [layer["name"] for layer in meta["layers"]] == ["conv1", "conv2", "conv3"]
        assert f.schema_arrow.field("profile").type.list_size == b.num_filters == 18


def test_without_modes_or_profiles(bundle_dir, tmp_path):
    out = tmp_path / "slim.parquet"
    with open_bundle(bundle_dir) as b:
        export_parquet(b, out, modes=False, profile=False)
    table = pq.read_table(out)
    assert "profile" not in table.column_names
    assert table.column("failure_mode").null_count == 45


def test_the_command_line_writes_the_file_and_refuses_what_cannot_work(bundle_dir, tmp_path, capsys):
    out = tmp_path / "cli.parquet"
    assert main(["--bundle", str(bundle_dir), "--out", str(out), "--no-progress"]) == 0
    assert "exported 45 samples" in capsys.readouterr().out
    first = out.read_bytes()
    assert main(["--bundle", str(bundle_dir), "--out", str(out), "--no-progress"]) == 2  # exists
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == first
    assert main(["--bundle", str(bundle_dir), "--out", str(out), "--no-progress", "--force"]) == 0
    assert pq.read_table(out).equals(pq.read_table(_bytes_file(tmp_path, first)))  # deterministic content
    assert main(["--bundle", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.parquet")]) == 2
    assert "error" in capsys.readouterr().err and not (tmp_path / "x.parquet").exists()
    assert main(["--bundle", str(bundle_dir), "--out", str(tmp_path / "no" / "dir.parquet")]) == 2
    assert main(["--bundle", str(bundle_dir), "--out", str(tmp_path / "y.parquet"), "--row-group-size", "0"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.parquet", "first.parquet"]  # no temp files left


def _bytes_file(tmp_path, data: bytes):
    path = tmp_path / "first.parquet"
    path.write_bytes(data)
    return path


def test_an_interrupted_export_leaves_no_file(bundle_dir, tmp_path, monkeypatch):
    import parasal.indexer.export as export

    calls = []
    real = export._block

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "_block", interrupted)
    out = tmp_path / "cut.parquet"
    assert main(["--bundle", str(bundle_dir), "--out", str(out), "--no-progress", "--row-group-size", "10"]) == 130
    assert list(tmp_path.iterdir()) == []


@pytest.mark.fashion_mnist
@pytest.mark.slow
def test_beta_and_counts_come_from_the_reference_data(tmp_path):
    out = H.build_reference_bundle(tmp_path / "ref", limit=120, reference_limit=300)
    with open_bundle(out) as b:
        export_parquet(b, tmp_path / "ref.parquet")
        table = pq.read_table(tmp_path / "ref.parquet")
        rows = check_against_bundle(table, b, bundle_failure_modes(b, shared=False, with_map=False))
        beta = b.beta
        for r, expected, s, e in zip(rows, beta.tolist(), b.num_surprise.tolist(), b.num_expectation.tolist()):
            assert r["beta"] == (None if math.isnan(expected) else pytest.approx(expected))
            assert (r["num_surprise"], r["num_expectation"]) == (s, e)
        assert table.column("label_name").to_pylist()[0] == b.classes[b.labels[0]]
