"""User code named by a ``package.module:attr`` spec (model and dataset factories).

The module is imported by name from ``sys.path``, at index time and again wherever the
bundle is served, so a module that is a local file (``mymodels.py`` beside the command)
needs its directory on ``PYTHONPATH`` both times. :func:`import_object` says so when the
import fails; :func:`module_location` is what a manifest records so the hint can name the
directory the bundle was built with.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["FACTORY_SPEC", "is_factory_spec", "import_object", "module_location", "ImportFailed"]

#: ``package.module:attr`` (dotted identifiers on both sides)
FACTORY_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class ImportFailed(Exception):
    """The spec's module or attribute could not be imported; the message says how to fix it."""


def is_factory_spec(spec: str) -> bool:
    return bool(FACTORY_SPEC.match(str(spec)))


def import_object(spec: str, recorded: dict | None = None) -> Any:
    """The object ``package.module:attr`` names. ``recorded``: the :func:`module_location`
    of the build, for the hint. Raises :class:`ImportFailed`."""
    module_name, _, attr = str(spec).partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportFailed(f"cannot import {spec}: {e}; {_path_hint(module_name, recorded)}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportFailed(f"cannot import {spec}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


def module_location(spec: str) -> dict:
    """Where the spec's (already imported) module came from: ``{"module", "file",
    "pythonpath"}``, ``pythonpath`` being the ``sys.path`` entry it was found under."""
    module_name = str(spec).partition(":")[0]
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    out: dict = {"module": module_name, "file": None, "pythonpath": None}
    if file:
        path = Path(file).resolve()
        depth = module_name.count(".") + (1 if path.name == "__init__.py" else 0)
        out["file"] = str(path)
        out["pythonpath"] = str(path.parents[depth])
    return out


def _path_hint(module_name: str, recorded: dict | None) -> str:
    top = module_name.split(".")[0]
    where = (recorded or {}).get("pythonpath")
    if where:
        return (
            f"the bundle was built with it from {recorded.get('file')}: run with PYTHONPATH={where} "
            "(or that directory's copy on this machine), or pip install the package"
        )
    return (
        f"if {top} is a local file or folder ({top}.py), run with PYTHONPATH set to the directory holding it "
        "(e.g. PYTHONPATH=. from that directory), both to index and to serve, or pip install the package"
    )
