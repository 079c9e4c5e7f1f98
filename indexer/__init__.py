"""parasal.indexer: datasets and model specs -> saliency bundles (FAISS + LMDB).

    from parasal.indexer import IndexJob, open_bundle, run_index

    run_index(IndexJob(data="fashion-mnist:test", out="bundle", model="demo-fashion"))
    with open_bundle("bundle") as b:
        print(b.manifest.model.name, b.num_samples, b.search(b.profiles([0]), k=5))

The public surface is what ``__all__`` lists; the submodules are private (their names may
change). The names load on first use (PEP 562), so importing this package, or one of its
light submodules such as ``parasal.indexer.errors``, does not import FAISS, LMDB or torch:
``parasal index --help`` and the server's error table stay cheap.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING


class _FaissLoaderChatter(logging.Filter):
    """faiss's loader logs, at INFO, each optimised library it tries ("Could not load
    library with AVX2 support due to: ModuleNotFoundError ...") before loading the generic
    one: under a server's INFO logging that reads like an error at every start. A failed
    fallback still raises ImportError, so the chatter is lowered to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def _quiet_faiss_loader() -> None:
    logger = logging.getLogger("faiss.loader")  # before anything here imports faiss
    if not any(isinstance(f, _FaissLoaderChatter) for f in logger.filters):
        logger.addFilter(_FaissLoaderChatter())


_quiet_faiss_loader()

# public name -> the private module that defines it
_EXPORTS = {
    # reading a bundle
    "open_bundle": "bundle",
    "Bundle": "bundle",
    "SampleMeta": "metadata",
    "Manifest": "manifest",
    "ModelInfo": "manifest",
    "DatasetInfo": "manifest",
    "IndexInfo": "manifest",
    "Counts": "manifest",
    "SkippedSample": "manifest",
    "FileEntry": "manifest",
    "is_bundle_dir": "manifest",
    "ReferenceInfo": "manifest",
    "ReferenceData": "reference_data",
    # browsing: the table's columns, failure modes, the Parquet export
    "SampleColumns": "columns",
    "sample_columns": "columns",
    "FailureMode": "failure_modes",
    "FailureModes": "failure_modes",
    "ModeSettings": "failure_modes",
    "TooFewFailures": "failure_modes",
    "bundle_failure_modes": "failure_modes",
    "find_failure_modes": "failure_modes",
    "export_parquet": "export",
    # searching
    "cosine_top_k": "scoring",
    "normalize_rows": "scoring",
    # models
    "LoadedModel": "models",
    "load_model": "models",
    "load_model_from_manifest": "models",
    "model_display_name": "models",
    "parse_model_spec": "models",
    "state_dict_fingerprint": "models",
    "Preprocessing": "preprocessing",
    # building a bundle
    "IndexJob": "pipeline",
    "IndexResult": "pipeline",
    "run_index": "pipeline",
    # datasets
    "Dataset": "datasets",
    "Sample": "datasets",
    "open_dataset": "datasets",
    "load_image": "datasets",
    "CorruptSample": "datasets",
    "FASHION_MNIST_CLASSES": "datasets",
    # images (one pixel limit for dataset files and uploads, checked on the header)
    "open_image_limited": "images",
    "check_image_size": "images",
    "ImageRejected": "images",
    "ImageTooLarge": "images",
    "DEFAULT_MAX_IMAGE_PIXELS": "images",
    # errors
    "IndexerError": "errors",
    "ModelSpecError": "errors",
    "DataSpecError": "errors",
    "InputMismatch": "errors",
    "OutputExists": "errors",
    "IndexBuildError": "errors",
    "DistributedError": "errors",
    "BundleError": "errors",
    "BundleCorrupt": "errors",
    "BundleVersionMismatch": "errors",
    "ModelMismatch": "errors",
    "SampleNotFound": "errors",
    "NoReferenceData": "errors",
}

__all__ = [
    "Bundle",
    "BundleCorrupt",
    "BundleError",
    "BundleVersionMismatch",
    "CorruptSample",
    "Counts",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DataSpecError",
    "Dataset",
    "DatasetInfo",
    "DistributedError",
    "FASHION_MNIST_CLASSES",
    "FailureMode",
    "FailureModes",
    "FileEntry",
    "ImageRejected",
    "ImageTooLarge",
    "IndexBuildError",
    "IndexInfo",
    "IndexJob",
    "IndexResult",
    "IndexerError",
    "InputMismatch",
    "LoadedModel",
    "Manifest",
    "ModeSettings",
    "ModelInfo",
    "ModelMismatch",
    "ModelSpecError",
    "NoReferenceData",
    "OutputExists",
    "Preprocessing",
    "ReferenceData",
    "ReferenceInfo",
    "Sample",
    "SampleColumns",
    "SampleMeta",
    "SampleNotFound",
    "SkippedSample",
    "TooFewFailures",
    "bundle_failure_modes",
    "check_image_size",
    "cosine_top_k",
    "export_parquet",
    "find_failure_modes",
    "is_bundle_dir",
    "load_image",
    "load_model",
    "load_model_from_manifest",
    "model_display_name",
    "normalize_rows",
    "open_bundle",
    "open_dataset",
    "open_image_limited",
    "parse_model_spec",
    "run_index",
    "sample_columns",
    "state_dict_fingerprint",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .bundle import Bundle, open_bundle
    from .columns import SampleColumns, sample_columns
    from .datasets import FASHION_MNIST_CLASSES, CorruptSample, Dataset, Sample, load_image, open_dataset
    from .errors import (
        BundleCorrupt,
        BundleError,
        BundleVersionMismatch,
        DataSpecError,
        DistributedError,
        IndexBuildError,
        IndexerError,
        InputMismatch,
        ModelMismatch,
        ModelSpecError,
        NoReferenceData,
        OutputExists,
        SampleNotFound,
    )
    from .export import export_parquet
    from .failure_modes import (
        FailureMode,
        FailureModes,
        ModeSettings,
        TooFewFailures,
        bundle_failure_modes,
        find_failure_modes,
    )
    from .images import DEFAULT_MAX_IMAGE_PIXELS, ImageRejected, ImageTooLarge, check_image_size, open_image_limited
    from .manifest import (
        Counts,
        DatasetInfo,
        FileEntry,
        IndexInfo,
        Manifest,
        ModelInfo,
        ReferenceInfo,
        SkippedSample,
        is_bundle_dir,
    )
    from .metadata import SampleMeta
    from .models import (
        LoadedModel,
        load_model,
        load_model_from_manifest,
        model_display_name,
        parse_model_spec,
        state_dict_fingerprint,
    )
    from .pipeline import IndexJob, IndexResult, run_index
    from .preprocessing import Preprocessing
    from .reference_data import ReferenceData
    from .scoring import cosine_top_k, normalize_rows
