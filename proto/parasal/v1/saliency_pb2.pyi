import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Selection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SELECTION_UNSPECIFIED: _ClassVar[Selection]
    SELECTION_MOST_SALIENT: _ClassVar[Selection]
    SELECTION_RANDOM: _ClassVar[Selection]
    SELECTION_LEAST_SALIENT: _ClassVar[Selection]
    SELECTION_WHOLE_NETWORK: _ClassVar[Selection]

class OperationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_KIND_UNSPECIFIED: _ClassVar[OperationKind]
    OPERATION_KIND_FINETUNE_EVALUATION: _ClassVar[OperationKind]
    OPERATION_KIND_PRUNING_EVALUATION: _ClassVar[OperationKind]

class OperationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_STATE_UNSPECIFIED: _ClassVar[OperationState]
    OPERATION_STATE_PENDING: _ClassVar[OperationState]
    OPERATION_STATE_RUNNING: _ClassVar[OperationState]
    OPERATION_STATE_SUCCEEDED: _ClassVar[OperationState]
    OPERATION_STATE_FAILED: _ClassVar[OperationState]
    OPERATION_STATE_CANCELLED: _ClassVar[OperationState]
    OPERATION_STATE_ABORTED: _ClassVar[OperationState]
SELECTION_UNSPECIFIED: Selection
SELECTION_MOST_SALIENT: Selection
SELECTION_RANDOM: Selection
SELECTION_LEAST_SALIENT: Selection
SELECTION_WHOLE_NETWORK: Selection
OPERATION_KIND_UNSPECIFIED: OperationKind
OPERATION_KIND_FINETUNE_EVALUATION: OperationKind
OPERATION_KIND_PRUNING_EVALUATION: OperationKind
OPERATION_STATE_UNSPECIFIED: OperationState
OPERATION_STATE_PENDING: OperationState
OPERATION_STATE_RUNNING: OperationState
OPERATION_STATE_SUCCEEDED: OperationState
OPERATION_STATE_FAILED: OperationState
OPERATION_STATE_CANCELLED: OperationState
OPERATION_STATE_ABORTED: OperationState

class ImageInput(_message.Message):
    __slots__ = ("data", "label")
    DATA_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    label: int
    def __init__(self, data: _Optional[bytes] = ..., label: _Optional[int] = ...) -> None: ...

class ProfileVector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Layer(_message.Message):
    __slots__ = ("name", "kind", "filters", "offset")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    filters: int
    offset: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., filters: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class FilterScore(_message.Message):
    __slots__ = ("index", "layer", "filter", "z")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    index: int
    layer: str
    filter: int
    z: float
    def __init__(self, index: _Optional[int] = ..., layer: _Optional[str] = ..., filter: _Optional[int] = ..., z: _Optional[float] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("id", "uri", "label", "predicted", "true_confidence", "predicted_confidence", "loss", "correct", "top_filters", "label_name", "predicted_name")
    ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    TRUE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    TOP_FILTERS_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_NAME_FIELD_NUMBER: _ClassVar[int]
    id: int
    uri: str
    label: int
    predicted: int
    true_confidence: float
    predicted_confidence: float
    loss: float
    correct: bool
    top_filters: _containers.RepeatedCompositeFieldContainer[FilterScore]
    label_name: str
    predicted_name: str
    def __init__(self, id: _Optional[int] = ..., uri: _Optional[str] = ..., label: _Optional[int] = ..., predicted: _Optional[int] = ..., true_confidence: _Optional[float] = ..., predicted_confidence: _Optional[float] = ..., loss: _Optional[float] = ..., correct: _Optional[bool] = ..., top_filters: _Optional[_Iterable[_Union[FilterScore, _Mapping]]] = ..., label_name: _Optional[str] = ..., predicted_name: _Optional[str] = ...) -> None: ...

class ListBundlesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBundlesResponse(_message.Message):
    __slots__ = ("bundles",)
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    bundles: _containers.RepeatedCompositeFieldContainer[BundleInfo]
    def __init__(self, bundles: _Optional[_Iterable[_Union[BundleInfo, _Mapping]]] = ...) -> None: ...

class BundleInfo(_message.Message):
    __slots__ = ("name", "model", "model_fingerprint", "dataset", "num_samples", "num_misclassified", "num_filters", "layers", "index_type", "class_names", "created_at", "input_shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    NUM_MISCLASSIFIED_FIELD_NUMBER: _ClassVar[int]
    NUM_FILTERS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    model_fingerprint: str
    dataset: str
    num_samples: int
    num_misclassified: int
    num_filters: int
    layers: _containers.RepeatedCompositeFieldContainer[Layer]
    index_type: str
    class_names: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., dataset: _Optional[str] = ..., num_samples: _Optional[int] = ..., num_misclassified: _Optional[int] = ..., num_filters: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[Layer, _Mapping]]] = ..., index_type: _Optional[str] = ..., class_names: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., input_shape: _Optional[_Iterable[int]] = ...) -> None: ...

class GetSampleRequest(_message.Message):
    __slots__ = ("bundle", "id", "include_image")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    id: int
    include_image: bool
    def __init__(self, bundle: _Optional[str] = ..., id: _Optional[int] = ..., include_image: _Optional[bool] = ...) -> None: ...

class GetSampleResponse(_message.Message):
    __slots__ = ("sample", "image_png")
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PNG_FIELD_NUMBER: _ClassVar[int]
    sample: Sample
    image_png: bytes
    def __init__(self, sample: _Optional[_Union[Sample, _Mapping]] = ..., image_png: _Optional[bytes] = ...) -> None: ...

class GetProfileRequest(_message.Message):
    __slots__ = ("bundle", "sample_id", "image", "top_k", "include_vector")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTOR_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    sample_id: int
    image: ImageInput
    top_k: int
    include_vector: bool
    def __init__(self, bundle: _Optional[str] = ..., sample_id: _Optional[int] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., top_k: _Optional[int] = ..., include_vector: _Optional[bool] = ...) -> None: ...

class GetProfileResponse(_message.Message):
    __slots__ = ("sample_id", "label", "predicted", "true_confidence", "predicted_confidence", "loss", "top_filters", "vector")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    TRUE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    TOP_FILTERS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    sample_id: int
    label: int
    predicted: int
    true_confidence: float
    predicted_confidence: float
    loss: float
    top_filters: _containers.RepeatedCompositeFieldContainer[FilterScore]
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, sample_id: _Optional[int] = ..., label: _Optional[int] = ..., predicted: _Optional[int] = ..., true_confidence: _Optional[float] = ..., predicted_confidence: _Optional[float] = ..., loss: _Optional[float] = ..., top_filters: _Optional[_Iterable[_Union[FilterScore, _Mapping]]] = ..., vector: _Optional[_Iterable[float]] = ...) -> None: ...

class FindSimilarFailuresRequest(_message.Message):
    __slots__ = ("bundle", "sample_id", "image", "vector", "k", "only_misclassified", "true_labels", "predicted_labels", "include_query", "layers", "include_top_filters")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    ONLY_MISCLASSIFIED_FIELD_NUMBER: _ClassVar[int]
    TRUE_LABELS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_LABELS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_QUERY_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TOP_FILTERS_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    sample_id: int
    image: ImageInput
    vector: ProfileVector
    k: int
    only_misclassified: bool
    true_labels: _containers.RepeatedScalarFieldContainer[int]
    predicted_labels: _containers.RepeatedScalarFieldContainer[int]
    include_query: bool
    layers: _containers.RepeatedScalarFieldContainer[str]
    include_top_filters: bool
    def __init__(self, bundle: _Optional[str] = ..., sample_id: _Optional[int] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., vector: _Optional[_Union[ProfileVector, _Mapping]] = ..., k: _Optional[int] = ..., only_misclassified: _Optional[bool] = ..., true_labels: _Optional[_Iterable[int]] = ..., predicted_labels: _Optional[_Iterable[int]] = ..., include_query: _Optional[bool] = ..., layers: _Optional[_Iterable[str]] = ..., include_top_filters: _Optional[bool] = ...) -> None: ...

class FindSimilarFailuresResponse(_message.Message):
    __slots__ = ("neighbors", "confusions")
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    CONFUSIONS_FIELD_NUMBER: _ClassVar[int]
    neighbors: _containers.RepeatedCompositeFieldContainer[Neighbor]
    confusions: _containers.RepeatedCompositeFieldContainer[ConfusionCount]
    def __init__(self, neighbors: _Optional[_Iterable[_Union[Neighbor, _Mapping]]] = ..., confusions: _Optional[_Iterable[_Union[ConfusionCount, _Mapping]]] = ...) -> None: ...

class Neighbor(_message.Message):
    __slots__ = ("id", "similarity", "sample")
    ID_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    id: int
    similarity: float
    sample: Sample
    def __init__(self, id: _Optional[int] = ..., similarity: _Optional[float] = ..., sample: _Optional[_Union[Sample, _Mapping]] = ...) -> None: ...

class ConfusionCount(_message.Message):
    __slots__ = ("label", "predicted", "count")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    label: int
    predicted: int
    count: int
    def __init__(self, label: _Optional[int] = ..., predicted: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class ExplainInputRequest(_message.Message):
    __slots__ = ("bundle", "sample_id", "image", "top_k", "filters", "boost")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    BOOST_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    sample_id: int
    image: ImageInput
    top_k: int
    filters: _containers.RepeatedScalarFieldContainer[int]
    boost: float
    def __init__(self, bundle: _Optional[str] = ..., sample_id: _Optional[int] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., top_k: _Optional[int] = ..., filters: _Optional[_Iterable[int]] = ..., boost: _Optional[float] = ...) -> None: ...

class ExplainInputResponse(_message.Message):
    __slots__ = ("height", "width", "heatmap", "overlay_png", "filters", "label", "predicted")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    heatmap: _containers.RepeatedScalarFieldContainer[float]
    overlay_png: bytes
    filters: _containers.RepeatedCompositeFieldContainer[FilterScore]
    label: int
    predicted: int
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., heatmap: _Optional[_Iterable[float]] = ..., overlay_png: _Optional[bytes] = ..., filters: _Optional[_Iterable[_Union[FilterScore, _Mapping]]] = ..., label: _Optional[int] = ..., predicted: _Optional[int] = ...) -> None: ...

class StartFinetuneEvaluationRequest(_message.Message):
    __slots__ = ("bundle", "sample_id", "image", "counts", "selections", "step_size", "num_neighbors", "neighbor_bundle", "seed")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SELECTIONS_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOR_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    sample_id: int
    image: ImageInput
    counts: _containers.RepeatedScalarFieldContainer[int]
    selections: _containers.RepeatedScalarFieldContainer[Selection]
    step_size: float
    num_neighbors: int
    neighbor_bundle: str
    seed: int
    def __init__(self, bundle: _Optional[str] = ..., sample_id: _Optional[int] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., counts: _Optional[_Iterable[int]] = ..., selections: _Optional[_Iterable[_Union[Selection, str]]] = ..., step_size: _Optional[float] = ..., num_neighbors: _Optional[int] = ..., neighbor_bundle: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class StartFinetuneEvaluationResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class StartPruningEvaluationRequest(_message.Message):
    __slots__ = ("bundle", "sample_id", "image", "counts", "selections", "num_neighbors", "seed")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SELECTIONS_FIELD_NUMBER: _ClassVar[int]
    NUM_NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    sample_id: int
    image: ImageInput
    counts: _containers.RepeatedScalarFieldContainer[int]
    selections: _containers.RepeatedScalarFieldContainer[Selection]
    num_neighbors: int
    seed: int
    def __init__(self, bundle: _Optional[str] = ..., sample_id: _Optional[int] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., counts: _Optional[_Iterable[int]] = ..., selections: _Optional[_Iterable[_Union[Selection, str]]] = ..., num_neighbors: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class StartPruningEvaluationResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class ReferenceState(_message.Message):
    __slots__ = ("sample_id", "label", "predicted", "true_confidence", "predicted_confidence")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    TRUE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    sample_id: int
    label: int
    predicted: int
    true_confidence: float
    predicted_confidence: float
    def __init__(self, sample_id: _Optional[int] = ..., label: _Optional[int] = ..., predicted: _Optional[int] = ..., true_confidence: _Optional[float] = ..., predicted_confidence: _Optional[float] = ...) -> None: ...

class FinetuneRow(_message.Message):
    __slots__ = ("selection", "count", "reference_corrected", "reference_true_confidence_delta", "neighbors_corrected_fraction", "neighbors_true_confidence_delta", "neighbors_evaluated")
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_CORRECTED_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_TRUE_CONFIDENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_CORRECTED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_TRUE_CONFIDENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_EVALUATED_FIELD_NUMBER: _ClassVar[int]
    selection: Selection
    count: int
    reference_corrected: bool
    reference_true_confidence_delta: float
    neighbors_corrected_fraction: float
    neighbors_true_confidence_delta: float
    neighbors_evaluated: int
    def __init__(self, selection: _Optional[_Union[Selection, str]] = ..., count: _Optional[int] = ..., reference_corrected: _Optional[bool] = ..., reference_true_confidence_delta: _Optional[float] = ..., neighbors_corrected_fraction: _Optional[float] = ..., neighbors_true_confidence_delta: _Optional[float] = ..., neighbors_evaluated: _Optional[int] = ...) -> None: ...

class FinetuneEvaluationResult(_message.Message):
    __slots__ = ("reference", "neighbor_ids", "rows", "step_size")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOR_IDS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    reference: ReferenceState
    neighbor_ids: _containers.RepeatedScalarFieldContainer[int]
    rows: _containers.RepeatedCompositeFieldContainer[FinetuneRow]
    step_size: float
    def __init__(self, reference: _Optional[_Union[ReferenceState, _Mapping]] = ..., neighbor_ids: _Optional[_Iterable[int]] = ..., rows: _Optional[_Iterable[_Union[FinetuneRow, _Mapping]]] = ..., step_size: _Optional[float] = ...) -> None: ...

class PruningRow(_message.Message):
    __slots__ = ("selection", "count", "corrected", "incorrect_confidence_delta", "true_confidence_delta", "neighbors_corrected_fraction", "neighbors_incorrect_confidence_delta", "neighbors_true_confidence_delta", "neighbors_evaluated")
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CORRECTED_FIELD_NUMBER: _ClassVar[int]
    INCORRECT_CONFIDENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    TRUE_CONFIDENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_CORRECTED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_INCORRECT_CONFIDENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_TRUE_CONFIDENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_EVALUATED_FIELD_NUMBER: _ClassVar[int]
    selection: Selection
    count: int
    corrected: bool
    incorrect_confidence_delta: float
    true_confidence_delta: float
    neighbors_corrected_fraction: float
    neighbors_incorrect_confidence_delta: float
    neighbors_true_confidence_delta: float
    neighbors_evaluated: int
    def __init__(self, selection: _Optional[_Union[Selection, str]] = ..., count: _Optional[int] = ..., corrected: _Optional[bool] = ..., incorrect_confidence_delta: _Optional[float] = ..., true_confidence_delta: _Optional[float] = ..., neighbors_corrected_fraction: _Optional[float] = ..., neighbors_incorrect_confidence_delta: _Optional[float] = ..., neighbors_true_confidence_delta: _Optional[float] = ..., neighbors_evaluated: _Optional[int] = ...) -> None: ...

class PruningEvaluationResult(_message.Message):
    __slots__ = ("reference", "neighbor_ids", "rows")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOR_IDS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    reference: ReferenceState
    neighbor_ids: _containers.RepeatedScalarFieldContainer[int]
    rows: _containers.RepeatedCompositeFieldContainer[PruningRow]
    def __init__(self, reference: _Optional[_Union[ReferenceState, _Mapping]] = ..., neighbor_ids: _Optional[_Iterable[int]] = ..., rows: _Optional[_Iterable[_Union[PruningRow, _Mapping]]] = ...) -> None: ...

class OperationError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("id", "kind", "state", "progress", "message", "bundle", "created_at", "updated_at", "finetune", "pruning", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINETUNE_FIELD_NUMBER: _ClassVar[int]
    PRUNING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: OperationKind
    state: OperationState
    progress: float
    message: str
    bundle: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    finetune: FinetuneEvaluationResult
    pruning: PruningEvaluationResult
    error: OperationError
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[OperationKind, str]] = ..., state: _Optional[_Union[OperationState, str]] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., bundle: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finetune: _Optional[_Union[FinetuneEvaluationResult, _Mapping]] = ..., pruning: _Optional[_Union[PruningEvaluationResult, _Mapping]] = ..., error: _Optional[_Union[OperationError, _Mapping]] = ...) -> None: ...

class GetOperationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetOperationResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class ListOperationsRequest(_message.Message):
    __slots__ = ("page_size", "state")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    state: OperationState
    def __init__(self, page_size: _Optional[int] = ..., state: _Optional[_Union[OperationState, str]] = ...) -> None: ...

class ListOperationsResponse(_message.Message):
    __slots__ = ("operations",)
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    def __init__(self, operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ...) -> None: ...

class CancelOperationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelOperationResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class WatchOperationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchOperationResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...
