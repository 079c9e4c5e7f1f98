"""The reference-data precondition the Hartley et al. experiments share."""

from __future__ import annotations

from parasal.indexer.errors import NoReferenceData

__all__ = ["require_reference"]


def require_reference(bundle) -> None:
    """NoReferenceData (FAILED_PRECONDITION on the wire) for a bundle built without ``--reference-data``."""
    if not getattr(bundle, "has_reference", False):
        raise NoReferenceData.for_bundle(bundle.name)
