"""A bundle that travels (issue #13): built with a weights file, moved to another directory
and its original weights deleted, it is served by a real server, which loads the bundle's
own copy of the weights (model.pt) and answers uploads with it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from parasal.indexer import open_bundle

pytestmark = pytest.mark.slow  # a real server process

PYTHON = sys.executable


def test_a_moved_bundle_without_its_original_weights_is_served(tmp_path, start_server):
    from parasal.client import Client
    from parasal.indexer.zoo import DEMO_WEIGHTS_PATH

    rng = np.random.default_rng(0)
    for c in ("c0", "c1"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, size=(28, 28), dtype=np.uint8)).save(
                tmp_path / "imgs" / c / f"{k}.png"
            )
    weights = shutil.copy(DEMO_WEIGHTS_PATH, tmp_path / "w2.pth")  # a user's own weights file
    cmd = [
        *(PYTHON, "-m", "parasal.indexer", "--model", "demo-fashion", "--weights", str(weights)),
        *("--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "built" / "b")),
        *("--no-progress", "--device", "cpu", "--max-skipped", "0"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "built" / "b", moved)
    (tmp_path / "w2.pth").unlink()
    with open_bundle(moved) as b:
        first, label = int(b.ids[0]), int(b.labels[0])
        stored = b.profile(first)
    server = start_server(bundle=moved)
    with Client(server.address, timeout=60) as client:
        image = np.asarray(Image.open(tmp_path / "imgs" / "c0" / "0.png"))
        profile = client.profile(image=image, label=label, full=True)
        assert np.allclose(profile.vector, stored, atol=2e-2)  # the same model: the same profile
        assert client.sample(first).id == first


def test_serve_weights_override_loads_the_model_from_another_file(tmp_path, start_server, bundle_dir):
    """`parasal serve --weights NAME=FILE`: the model loads from FILE instead of the bundle's
    copy (here the embedded weights copied elsewhere: the same fingerprint, the same answers)."""
    from parasal.client import Client
    from parasal.indexer.zoo import DEMO_WEIGHTS_PATH

    copy = shutil.copy(DEMO_WEIGHTS_PATH, tmp_path / "override.pth")
    server = start_server("--weights", f"{bundle_dir.name}={copy}")
    with open_bundle(bundle_dir) as b:
        first, label = int(b.ids[0]), int(b.labels[0])
        stored = b.profile(first)
    with Client(server.address, timeout=60) as client:
        png = client.sample(first, include_image=True).image_png
        uploaded = client.profile(image=png, label=label, full=True)  # computed by the loaded model
    assert np.allclose(uploaded.vector, stored, atol=2e-2)


def test_serve_weights_override_must_name_a_served_bundle(tmp_path):
    from parasal.server.cli import build_parser, config_from_args
    from parasal.server.config import ConfigError

    (tmp_path / "b").mkdir()
    (tmp_path / "w.pth").write_bytes(b"x")
    for flag, message in ((f"other={tmp_path / 'w.pth'}", "names no served bundle"), ("b=/nope.pth", "not a file")):
        args = build_parser().parse_args(["--bundle", str(tmp_path / "b"), "--weights", flag])
        with pytest.raises(ConfigError, match=message):
            config_from_args(args)
