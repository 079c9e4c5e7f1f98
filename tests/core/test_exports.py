"""parasal.core's public surface, and that its modules share no private names."""

import ast
from pathlib import Path

import parasal.core as core

CORE = Path(core.__file__).parent


def test_all_names_resolve_and_are_unique():
    assert len(core.__all__) == len(set(core.__all__))
    for name in core.__all__:
        assert getattr(core, name) is not None
    for name in ("top_k_filters", "default_counts", "FinetuneRow", "ReferenceState", "WHOLE_NETWORK", "apply_edit"):
        assert name in core.__all__
    assert core.default_counts(672) == (1, 2, 5, 25, 74) and core.WHOLE_NETWORK == "whole_network"


def test_no_module_imports_another_modules_underscore_names():
    """Shared machinery lives in a private module (``_state``, ``_edits``, ``_hooks``) under public names."""
    offenders = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert offenders == []
