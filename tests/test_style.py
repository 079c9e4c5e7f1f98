"""The formatter decides layout everywhere: no formatter escape comments (skip / off) in
the tree (ruff format --check itself runs in make test)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "indexer", "server", "client", "demo", "benchmarks", "tests", "proto")


def test_no_formatter_escapes():
    marker = "fmt: " + "skip"  # split so this file does not match itself
    off = "fmt: " + "off"
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if marker in line or off in line
    ]
    assert not found, f"formatter escapes: {found}"
