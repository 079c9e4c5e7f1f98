"""The public surface (httpx tests/test_exported_members.py) and a torch-free import."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import parasal.client


def test_all_lists_exactly_the_public_members():
    exported = set(parasal.client.__all__)
    assert len(exported) == len(parasal.client.__all__), "duplicates in __all__"
    # Submodules (errors, types, cli, ...) are reachable as attributes but are not members.
    public = {
        name
        for name in dir(parasal.client)
        if not name.startswith("_") and not inspect.ismodule(getattr(parasal.client, name))
    }
    assert exported == public
    for name in exported:
        member = getattr(parasal.client, name)
        assert getattr(member, "__module__", "parasal.client") == "parasal.client", name
    for name in (
        "Client",
        "OperationHandle",
        "ParasalError",
        "InvalidArgument",
        "NotFound",
        "Unauthenticated",
        "PermissionDenied",
        "ResourceExhausted",
        "DeadlineExceeded",
        "Unavailable",
        "FailedPrecondition",
        "Internal",
        "OperationFailed",
        "OperationCancelled",
        "OperationAborted",
        "Sample",
        "Profile",
        "SimilarFailures",
        "Explanation",
        "Operation",
        "FinetuneResult",
        "PruningResult",
        "BundleInfo",
    ):
        assert name in exported, name


BLOCKED_IMPORT_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, io, contextlib, sys

    BLOCKED = {"torch", "torchvision", "faiss", "lmdb"}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    try:
        import torch
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker does not work")

    import parasal.client
    import parasal.client.cli
    from parasal.v1 import saliency_pb2, saliency_pb2_grpc

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc_help = parasal.client.cli.main(["--help"])
        rc_index = parasal.client.cli.main(["index", "--help"])
    assert rc_help == 0, rc_help
    assert "usage: parasal" in out.getvalue()
    # The engine subcommand either works torch-free (its --help) or fails with one line.
    assert rc_index in (0, 1) and "Traceback" not in err.getvalue(), (rc_index, err.getvalue())
    if rc_index == 1:
        assert err.getvalue().startswith("error: `parasal index`"), err.getvalue()
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("torch-free ok")
    """
)


def test_client_imports_and_runs_without_torch_faiss_lmdb():
    done = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT_SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "torch-free ok" in done.stdout
