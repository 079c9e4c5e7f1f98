"""The indexer's exceptions: one hierarchy, so the CLI can tell user errors from bugs.

Every :class:`IndexerError` is a problem with the input the user gave (a spec, a path, a
bundle on disk) and carries a message that says what is wrong and, where there is one,
what to do. The CLI prints it as one line and exits with status 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "IndexerError",
    "ModelSpecError",
    "DataSpecError",
    "InputMismatch",
    "OutputExists",
    "IndexBuildError",
    "DistributedError",
    "BundleError",
    "BundleCorrupt",
    "BundleVersionMismatch",
    "ModelMismatch",
    "SampleNotFound",
    "NoReferenceData",
]


class IndexerError(Exception):
    """A user error: bad spec, bad input, existing output, unusable bundle."""


class ModelSpecError(IndexerError):
    """A model spec (or its weights / preprocessing options) cannot be loaded."""


class DataSpecError(IndexerError):
    """A data spec cannot be opened, or holds nothing usable."""


class InputMismatch(IndexerError):
    """The images, after preprocessing, cannot feed the model (channels, size, classes)."""


class OutputExists(IndexerError):
    """The output path exists and --overwrite was not given (or it is not a bundle)."""


class IndexBuildError(IndexerError):
    """The FAISS factory string is invalid or the index cannot be trained on this data."""


class DistributedError(IndexerError):
    """torchrun environment or shard bookkeeping across ranks is inconsistent."""


class BundleError(IndexerError):
    """A bundle directory cannot be used."""


class BundleCorrupt(BundleError):
    """Missing, truncated or modified files; inconsistent contents; not a bundle at all."""


class BundleVersionMismatch(BundleError):
    """The bundle was written in a format version this code does not read."""


class ModelMismatch(BundleError):
    """The bundle was built with a different model (weights fingerprint or filter layout)."""


class SampleNotFound(KeyError, BundleError):
    """No sample with this id in the bundle."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "sample not found"


class NoReferenceData(BundleError):
    """The bundle was built without ``--reference-data``: no α, β or class-filter statistics."""

    @classmethod
    def for_bundle(cls, name: str) -> NoReferenceData:
        return cls(
            f"bundle {name} has no reference data; index it with "
            "`parasal index ... --reference-data fashion-mnist:train` (or any data spec)"
        )
