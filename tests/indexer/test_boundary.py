"""The bundle format stays behind parasal.indexer: no module outside indexer/ reads manifest
keys or Bundle privates (issue #11). A failure lists every offending file:line."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = ("server", "client", "demo", "benchmarks")

# manifest dict access, and the private attributes of Bundle (and of its searcher)
FORBIDDEN = re.compile(
    r"manifest\s*\[|manifest\.get\(|\[\s*[\"'](model|counts|datasets|index|layout|preprocessing|files|skipped)[\"']\s*\]"
    r"|bundle\._|(?<!self)\._(profiles|table|env|index|flat|gpu|searcher|meta_path)\b"
)
# (file, text on the line): look-alikes that are not the bundle format
EXEMPT = {
    ("benchmarks/saliency_throughput.py", "r['model']"),  # the benchmark's own result dict
    ("server/experiments/pruning.py", 'options["counts"]'),  # the experiment's own options
    ("server/experiments/results.py", 'doc["counts"]'),  # an experiment's JSON document
    ("client/_cli_surprise.py", 'document["files"]'),  # the CLI's JSON output
}


def offending_lines() -> list[str]:
    found = []
    for top in OUTSIDE:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "_generated" in path.parts:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                rel = str(path.relative_to(ROOT))
                if FORBIDDEN.search(code) and not any(rel == f and text in code for f, text in EXEMPT):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_no_module_outside_the_indexer_reads_manifest_keys_or_bundle_privates():
    found = offending_lines()
    assert not found, "the bundle format leaks out of parasal.indexer:\n" + "\n".join(found)


def test_the_pattern_catches_what_it_is_meant_to():
    for line in (
        'n = bundle.manifest["model"].get("num_classes")',
        'x = manifest.get("datasets", ())',
        "rows = base._profiles[a:b]",
        "env = bundle._env",
        'spec = d["layout"]',
        "t = b._table",
    ):
        assert FORBIDDEN.search(line), line
    assert not FORBIDDEN.search("num_classes = bundle.manifest.model.num_classes")
    assert not FORBIDDEN.search("created = manifest.created")
    assert not FORBIDDEN.search("with self._env.begin() as txn:")  # a class's own LMDB handle
