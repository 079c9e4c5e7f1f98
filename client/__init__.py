"""parasal.client: Python SDK and CLI for a parasal server (no torch, no faiss).

    from parasal.client import Client

    with Client("127.0.0.1:50051") as c:
        failures = c.find_similar_failures(sample_id=7, only_misclassified=True)

The public surface is what `__all__` lists; the modules starting with `_` are private.
"""

from ._client import Client
from ._operations import OperationHandle
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OperationAborted,
    OperationCancelled,
    OperationError,
    OperationFailed,
    OperationTimeout,
    OutOfRange,
    ParasalError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
from .types import (
    BundleInfo,
    Collateral,
    ConfusionCount,
    ConfusionMatrix,
    DrawSpread,
    Exemplar,
    ExperimentPoint,
    ExperimentResult,
    Explanation,
    ExportedEdit,
    FailureMapPoint,
    FailureMode,
    FailureModes,
    FilterCount,
    FilterDeviation,
    FilterScore,
    FinetuneResult,
    FinetuneRow,
    Layer,
    Neighbor,
    Operation,
    OperationErrorInfo,
    Profile,
    PruningResult,
    PruningRow,
    ReferenceDataInfo,
    ReferenceState,
    Sample,
    SamplePage,
    SimilarFailures,
    SuppressionResult,
    SuppressionRow,
    Surprise,
)

__all__ = [
    "Aborted",
    "AlreadyExists",
    "BundleInfo",
    "Cancelled",
    "Client",
    "Collateral",
    "ConfusionCount",
    "ConfusionMatrix",
    "DataLoss",
    "DeadlineExceeded",
    "DrawSpread",
    "Exemplar",
    "ExperimentPoint",
    "ExperimentResult",
    "Explanation",
    "ExportedEdit",
    "FailedPrecondition",
    "FailureMapPoint",
    "FailureMode",
    "FailureModes",
    "FilterCount",
    "FilterDeviation",
    "FilterScore",
    "FinetuneResult",
    "FinetuneRow",
    "Internal",
    "InvalidArgument",
    "Layer",
    "Neighbor",
    "NotFound",
    "Operation",
    "OperationAborted",
    "OperationCancelled",
    "OperationError",
    "OperationErrorInfo",
    "OperationFailed",
    "OperationHandle",
    "OperationTimeout",
    "OutOfRange",
    "ParasalError",
    "PermissionDenied",
    "Profile",
    "PruningResult",
    "PruningRow",
    "ReferenceDataInfo",
    "ReferenceState",
    "ResourceExhausted",
    "Sample",
    "SamplePage",
    "SimilarFailures",
    "Surprise",
    "SuppressionResult",
    "SuppressionRow",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
]

# Public objects report the public module, as httpx does.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("parasal.client."):
        try:
            _obj.__module__ = "parasal.client"
        except (AttributeError, TypeError):  # pragma: no cover
            pass
del _name, _obj
