"""The committed stubs are exactly what the pinned generator makes, and the proto lints."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The committed stubs sit beside the contract (installed as `parasal.v1`).
COMMITTED = ROOT / "proto" / "parasal" / "v1"


def _generate_module():
    spec = importlib.util.spec_from_file_location("_parasal_proto_generate", ROOT / "proto" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(generate, folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in generate.generated_files(folder)}


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    generate = _generate_module()
    generate.generate(tmp_path)
    fresh, committed = _files(generate, tmp_path / "parasal" / "v1"), _files(generate, COMMITTED)
    assert fresh, "the generator wrote nothing"
    assert sorted(committed) == sorted(fresh), "generated file set differs; run: python proto/generate.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}; run: python proto/generate.py"


def test_the_default_output_is_beside_the_contract():
    generate = _generate_module()
    assert generate.DEFAULT_OUT / "parasal" / "v1" == COMMITTED
    assert (COMMITTED / "saliency.proto").is_file()


def _buf() -> str:
    found = shutil.which("buf") or str(Path(sys.executable).parent / "buf")
    if not Path(found).exists():
        pytest.fail("buf is not installed (pip install buf-bin, part of the dev extra)")
    return found


def test_buf_lint_passes(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BUF_CACHE_DIR": str(tmp_path / "buf-cache")}
    done = subprocess.run([_buf(), "lint"], cwd=ROOT / "proto", capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
