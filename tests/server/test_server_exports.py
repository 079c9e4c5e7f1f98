"""The package's public surface, and that importing it stays light."""

import subprocess
import sys

import parasal.server as server


def test_all_names_resolve():
    for name in server.__all__:
        assert getattr(server, name) is not None


def test_import_does_not_load_torch_or_faiss():
    code = "import sys, parasal.server; print(sorted({'torch', 'faiss'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
