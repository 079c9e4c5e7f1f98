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

class Correctness(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CORRECTNESS_UNSPECIFIED: _ClassVar[Correctness]
    CORRECTNESS_CORRECT: _ClassVar[Correctness]
    CORRECTNESS_MISCLASSIFIED: _ClassVar[Correctness]

class SampleOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLE_ORDER_UNSPECIFIED: _ClassVar[SampleOrder]
    SAMPLE_ORDER_ID: _ClassVar[SampleOrder]
    SAMPLE_ORDER_LOSS: _ClassVar[SampleOrder]
    SAMPLE_ORDER_TRUE_CONFIDENCE: _ClassVar[SampleOrder]
    SAMPLE_ORDER_PREDICTED_CONFIDENCE: _ClassVar[SampleOrder]
    SAMPLE_ORDER_BETA: _ClassVar[SampleOrder]

class OperationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_KIND_UNSPECIFIED: _ClassVar[OperationKind]
    OPERATION_KIND_FINETUNE_EVALUATION: _ClassVar[OperationKind]
    OPERATION_KIND_PRUNING_EVALUATION: _ClassVar[OperationKind]
    OPERATION_KIND_SUPPRESSION: _ClassVar[OperationKind]
    OPERATION_KIND_EXPERIMENT: _ClassVar[OperationKind]

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
CORRECTNESS_UNSPECIFIED: Correctness
CORRECTNESS_CORRECT: Correctness
CORRECTNESS_MISCLASSIFIED: Correctness
SAMPLE_ORDER_UNSPECIFIED: SampleOrder
SAMPLE_ORDER_ID: SampleOrder
SAMPLE_ORDER_LOSS: SampleOrder
SAMPLE_ORDER_TRUE_CONFIDENCE: SampleOrder
SAMPLE_ORDER_PREDICTED_CONFIDENCE: SampleOrder
SAMPLE_ORDER_BETA: SampleOrder
OPERATION_KIND_UNSPECIFIED: OperationKind
OPERATION_KIND_FINETUNE_EVALUATION: OperationKind
OPERATION_KIND_PRUNING_EVALUATION: OperationKind
OPERATION_KIND_SUPPRESSION: OperationKind
OPERATION_KIND_EXPERIMENT: OperationKind
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
    __slots__ = ("id", "uri", "label", "predicted", "true_confidence", "predicted_confidence", "loss", "correct", "top_filters", "label_name", "predicted_name", "beta", "num_surprise", "num_expectation", "failure_mode")
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
    BETA_FIELD_NUMBER: _ClassVar[int]
    NUM_SURPRISE_FIELD_NUMBER: _ClassVar[int]
    NUM_EXPECTATION_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MODE_FIELD_NUMBER: _ClassVar[int]
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
    beta: float
    num_surprise: int
    num_expectation: int
    failure_mode: int
    def __init__(self, id: _Optional[int] = ..., uri: _Optional[str] = ..., label: _Optional[int] = ..., predicted: _Optional[int] = ..., true_confidence: _Optional[float] = ..., predicted_confidence: _Optional[float] = ..., loss: _Optional[float] = ..., correct: _Optional[bool] = ..., top_filters: _Optional[_Iterable[_Union[FilterScore, _Mapping]]] = ..., label_name: _Optional[str] = ..., predicted_name: _Optional[str] = ..., beta: _Optional[float] = ..., num_surprise: _Optional[int] = ..., num_expectation: _Optional[int] = ..., failure_mode: _Optional[int] = ...) -> None: ...

class ListBundlesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBundlesResponse(_message.Message):
    __slots__ = ("bundles",)
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    bundles: _containers.RepeatedCompositeFieldContainer[BundleInfo]
    def __init__(self, bundles: _Optional[_Iterable[_Union[BundleInfo, _Mapping]]] = ...) -> None: ...

class BundleInfo(_message.Message):
    __slots__ = ("name", "model", "model_fingerprint", "dataset", "num_samples", "num_misclassified", "num_filters", "layers", "index_type", "class_names", "created_at", "input_shape", "reference")
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
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
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
    reference: ReferenceDataInfo
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., dataset: _Optional[str] = ..., num_samples: _Optional[int] = ..., num_misclassified: _Optional[int] = ..., num_filters: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[Layer, _Mapping]]] = ..., index_type: _Optional[str] = ..., class_names: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., input_shape: _Optional[_Iterable[int]] = ..., reference: _Optional[_Union[ReferenceDataInfo, _Mapping]] = ...) -> None: ...

class ReferenceDataInfo(_message.Message):
    __slots__ = ("dataset", "num_samples", "layer", "method", "num_filters", "exemplars_per_filter")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    NUM_FILTERS_FIELD_NUMBER: _ClassVar[int]
    EXEMPLARS_PER_FILTER_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    num_samples: int
    layer: str
    method: str
    num_filters: int
    exemplars_per_filter: int
    def __init__(self, dataset: _Optional[str] = ..., num_samples: _Optional[int] = ..., layer: _Optional[str] = ..., method: _Optional[str] = ..., num_filters: _Optional[int] = ..., exemplars_per_filter: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("bundle", "sample_id", "image", "vector", "k", "only_misclassified", "true_labels", "predicted_labels", "include_query", "layers", "include_top_filters", "beta_below", "beta_above", "only_with_surprise")
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
    BETA_BELOW_FIELD_NUMBER: _ClassVar[int]
    BETA_ABOVE_FIELD_NUMBER: _ClassVar[int]
    ONLY_WITH_SURPRISE_FIELD_NUMBER: _ClassVar[int]
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
    beta_below: float
    beta_above: float
    only_with_surprise: bool
    def __init__(self, bundle: _Optional[str] = ..., sample_id: _Optional[int] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., vector: _Optional[_Union[ProfileVector, _Mapping]] = ..., k: _Optional[int] = ..., only_misclassified: _Optional[bool] = ..., true_labels: _Optional[_Iterable[int]] = ..., predicted_labels: _Optional[_Iterable[int]] = ..., include_query: _Optional[bool] = ..., layers: _Optional[_Iterable[str]] = ..., include_top_filters: _Optional[bool] = ..., beta_below: _Optional[float] = ..., beta_above: _Optional[float] = ..., only_with_surprise: _Optional[bool] = ...) -> None: ...

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

class ExplainSurpriseRequest(_message.Message):
    __slots__ = ("bundle", "sample_id", "image", "high_percentile", "low_percentile", "max_filters", "detailed", "exemplars", "exemplars_any_class", "segments", "include_alpha", "include_exemplar_images")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    HIGH_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    LOW_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    MAX_FILTERS_FIELD_NUMBER: _ClassVar[int]
    DETAILED_FIELD_NUMBER: _ClassVar[int]
    EXEMPLARS_FIELD_NUMBER: _ClassVar[int]
    EXEMPLARS_ANY_CLASS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ALPHA_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EXEMPLAR_IMAGES_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    sample_id: int
    image: ImageInput
    high_percentile: float
    low_percentile: float
    max_filters: int
    detailed: int
    exemplars: int
    exemplars_any_class: bool
    segments: int
    include_alpha: bool
    include_exemplar_images: bool
    def __init__(self, bundle: _Optional[str] = ..., sample_id: _Optional[int] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., high_percentile: _Optional[float] = ..., low_percentile: _Optional[float] = ..., max_filters: _Optional[int] = ..., detailed: _Optional[int] = ..., exemplars: _Optional[int] = ..., exemplars_any_class: _Optional[bool] = ..., segments: _Optional[int] = ..., include_alpha: _Optional[bool] = ..., include_exemplar_images: _Optional[bool] = ...) -> None: ...

class Exemplar(_message.Message):
    __slots__ = ("id", "uri", "label", "label_name", "activation", "image_png")
    ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PNG_FIELD_NUMBER: _ClassVar[int]
    id: int
    uri: str
    label: int
    label_name: str
    activation: float
    image_png: bytes
    def __init__(self, id: _Optional[int] = ..., uri: _Optional[str] = ..., label: _Optional[int] = ..., label_name: _Optional[str] = ..., activation: _Optional[float] = ..., image_png: _Optional[bytes] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("png", "height", "width", "mask")
    PNG_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    png: bytes
    height: int
    width: int
    mask: bytes
    def __init__(self, png: _Optional[bytes] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., mask: _Optional[bytes] = ...) -> None: ...

class FilterDeviation(_message.Message):
    __slots__ = ("layer", "filter", "alpha", "mean", "threshold", "deviation", "region", "exemplars")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DEVIATION_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    EXEMPLARS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    filter: int
    alpha: float
    mean: float
    threshold: float
    deviation: float
    region: Region
    exemplars: _containers.RepeatedCompositeFieldContainer[Exemplar]
    def __init__(self, layer: _Optional[str] = ..., filter: _Optional[int] = ..., alpha: _Optional[float] = ..., mean: _Optional[float] = ..., threshold: _Optional[float] = ..., deviation: _Optional[float] = ..., region: _Optional[_Union[Region, _Mapping]] = ..., exemplars: _Optional[_Iterable[_Union[Exemplar, _Mapping]]] = ...) -> None: ...

class ExplainSurpriseResponse(_message.Message):
    __slots__ = ("sample_id", "label", "predicted", "true_confidence", "predicted_confidence", "beta", "layer", "method", "high_percentile", "low_percentile", "surprise", "expectation", "alpha", "class_mean")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    TRUE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HIGH_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    LOW_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    SURPRISE_FIELD_NUMBER: _ClassVar[int]
    EXPECTATION_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    CLASS_MEAN_FIELD_NUMBER: _ClassVar[int]
    sample_id: int
    label: int
    predicted: int
    true_confidence: float
    predicted_confidence: float
    beta: float
    layer: str
    method: str
    high_percentile: float
    low_percentile: float
    surprise: _containers.RepeatedCompositeFieldContainer[FilterDeviation]
    expectation: _containers.RepeatedCompositeFieldContainer[FilterDeviation]
    alpha: _containers.RepeatedScalarFieldContainer[float]
    class_mean: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, sample_id: _Optional[int] = ..., label: _Optional[int] = ..., predicted: _Optional[int] = ..., true_confidence: _Optional[float] = ..., predicted_confidence: _Optional[float] = ..., beta: _Optional[float] = ..., layer: _Optional[str] = ..., method: _Optional[str] = ..., high_percentile: _Optional[float] = ..., low_percentile: _Optional[float] = ..., surprise: _Optional[_Iterable[_Union[FilterDeviation, _Mapping]]] = ..., expectation: _Optional[_Iterable[_Union[FilterDeviation, _Mapping]]] = ..., alpha: _Optional[_Iterable[float]] = ..., class_mean: _Optional[_Iterable[float]] = ...) -> None: ...

class ListSamplesRequest(_message.Message):
    __slots__ = ("bundle", "page_size", "page_token", "true_labels", "predicted_labels", "correctness", "min_true_confidence", "max_true_confidence", "min_loss", "max_loss", "beta_below", "beta_above", "only_with_surprise", "only_with_expectation", "failure_mode", "order_by", "descending", "include_top_filters")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TRUE_LABELS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_LABELS_FIELD_NUMBER: _ClassVar[int]
    CORRECTNESS_FIELD_NUMBER: _ClassVar[int]
    MIN_TRUE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_TRUE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    MAX_LOSS_FIELD_NUMBER: _ClassVar[int]
    BETA_BELOW_FIELD_NUMBER: _ClassVar[int]
    BETA_ABOVE_FIELD_NUMBER: _ClassVar[int]
    ONLY_WITH_SURPRISE_FIELD_NUMBER: _ClassVar[int]
    ONLY_WITH_EXPECTATION_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MODE_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    DESCENDING_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TOP_FILTERS_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    page_size: int
    page_token: str
    true_labels: _containers.RepeatedScalarFieldContainer[int]
    predicted_labels: _containers.RepeatedScalarFieldContainer[int]
    correctness: Correctness
    min_true_confidence: float
    max_true_confidence: float
    min_loss: float
    max_loss: float
    beta_below: float
    beta_above: float
    only_with_surprise: bool
    only_with_expectation: bool
    failure_mode: int
    order_by: SampleOrder
    descending: bool
    include_top_filters: bool
    def __init__(self, bundle: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., true_labels: _Optional[_Iterable[int]] = ..., predicted_labels: _Optional[_Iterable[int]] = ..., correctness: _Optional[_Union[Correctness, str]] = ..., min_true_confidence: _Optional[float] = ..., max_true_confidence: _Optional[float] = ..., min_loss: _Optional[float] = ..., max_loss: _Optional[float] = ..., beta_below: _Optional[float] = ..., beta_above: _Optional[float] = ..., only_with_surprise: _Optional[bool] = ..., only_with_expectation: _Optional[bool] = ..., failure_mode: _Optional[int] = ..., order_by: _Optional[_Union[SampleOrder, str]] = ..., descending: _Optional[bool] = ..., include_top_filters: _Optional[bool] = ...) -> None: ...

class ListSamplesResponse(_message.Message):
    __slots__ = ("samples", "next_page_token", "total_size")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    next_page_token: str
    total_size: int
    def __init__(self, samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetConfusionMatrixRequest(_message.Message):
    __slots__ = ("bundle",)
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    def __init__(self, bundle: _Optional[str] = ...) -> None: ...

class GetConfusionMatrixResponse(_message.Message):
    __slots__ = ("num_classes", "class_names", "counts", "per_class_accuracy", "accuracy", "num_samples")
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    PER_CLASS_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    num_classes: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    counts: _containers.RepeatedScalarFieldContainer[int]
    per_class_accuracy: _containers.RepeatedScalarFieldContainer[float]
    accuracy: float
    num_samples: int
    def __init__(self, num_classes: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., counts: _Optional[_Iterable[int]] = ..., per_class_accuracy: _Optional[_Iterable[float]] = ..., accuracy: _Optional[float] = ..., num_samples: _Optional[int] = ...) -> None: ...

class ListFailureModesRequest(_message.Message):
    __slots__ = ("bundle", "medoids", "top_filters", "include_map", "include_members")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    MEDOIDS_FIELD_NUMBER: _ClassVar[int]
    TOP_FILTERS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MAP_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    medoids: int
    top_filters: int
    include_map: bool
    include_members: bool
    def __init__(self, bundle: _Optional[str] = ..., medoids: _Optional[int] = ..., top_filters: _Optional[int] = ..., include_map: _Optional[bool] = ..., include_members: _Optional[bool] = ...) -> None: ...

class FilterCount(_message.Message):
    __slots__ = ("layer", "filter", "count")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    layer: str
    filter: int
    count: int
    def __init__(self, layer: _Optional[str] = ..., filter: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class FailureMode(_message.Message):
    __slots__ = ("id", "size", "confusions", "top_filters", "medoid_ids", "cohesion", "shared_surprise", "shared_expectation", "member_ids")
    ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONFUSIONS_FIELD_NUMBER: _ClassVar[int]
    TOP_FILTERS_FIELD_NUMBER: _ClassVar[int]
    MEDOID_IDS_FIELD_NUMBER: _ClassVar[int]
    COHESION_FIELD_NUMBER: _ClassVar[int]
    SHARED_SURPRISE_FIELD_NUMBER: _ClassVar[int]
    SHARED_EXPECTATION_FIELD_NUMBER: _ClassVar[int]
    MEMBER_IDS_FIELD_NUMBER: _ClassVar[int]
    id: int
    size: int
    confusions: _containers.RepeatedCompositeFieldContainer[ConfusionCount]
    top_filters: _containers.RepeatedCompositeFieldContainer[FilterScore]
    medoid_ids: _containers.RepeatedScalarFieldContainer[int]
    cohesion: float
    shared_surprise: _containers.RepeatedCompositeFieldContainer[FilterCount]
    shared_expectation: _containers.RepeatedCompositeFieldContainer[FilterCount]
    member_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[int] = ..., size: _Optional[int] = ..., confusions: _Optional[_Iterable[_Union[ConfusionCount, _Mapping]]] = ..., top_filters: _Optional[_Iterable[_Union[FilterScore, _Mapping]]] = ..., medoid_ids: _Optional[_Iterable[int]] = ..., cohesion: _Optional[float] = ..., shared_surprise: _Optional[_Iterable[_Union[FilterCount, _Mapping]]] = ..., shared_expectation: _Optional[_Iterable[_Union[FilterCount, _Mapping]]] = ..., member_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class FailureMapPoint(_message.Message):
    __slots__ = ("id", "x", "y", "label", "predicted", "failure_mode")
    ID_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MODE_FIELD_NUMBER: _ClassVar[int]
    id: int
    x: float
    y: float
    label: int
    predicted: int
    failure_mode: int
    def __init__(self, id: _Optional[int] = ..., x: _Optional[float] = ..., y: _Optional[float] = ..., label: _Optional[int] = ..., predicted: _Optional[int] = ..., failure_mode: _Optional[int] = ...) -> None: ...

class ListFailureModesResponse(_message.Message):
    __slots__ = ("modes", "method", "silhouette", "num_misclassified", "num_unassigned", "map", "map_method")
    MODES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SILHOUETTE_FIELD_NUMBER: _ClassVar[int]
    NUM_MISCLASSIFIED_FIELD_NUMBER: _ClassVar[int]
    NUM_UNASSIGNED_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    MAP_METHOD_FIELD_NUMBER: _ClassVar[int]
    modes: _containers.RepeatedCompositeFieldContainer[FailureMode]
    method: str
    silhouette: float
    num_misclassified: int
    num_unassigned: int
    map: _containers.RepeatedCompositeFieldContainer[FailureMapPoint]
    map_method: str
    def __init__(self, modes: _Optional[_Iterable[_Union[FailureMode, _Mapping]]] = ..., method: _Optional[str] = ..., silhouette: _Optional[float] = ..., num_misclassified: _Optional[int] = ..., num_unassigned: _Optional[int] = ..., map: _Optional[_Iterable[_Union[FailureMapPoint, _Mapping]]] = ..., map_method: _Optional[str] = ...) -> None: ...

class StartFinetuneEvaluationRequest(_message.Message):
    __slots__ = ("bundle", "sample_id", "image", "counts", "selections", "step_size", "num_neighbors", "neighbor_bundle", "seed", "count_fractions", "random_draws", "num_collateral", "skip_collateral", "failure_mode")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SELECTIONS_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOR_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FRACTIONS_FIELD_NUMBER: _ClassVar[int]
    RANDOM_DRAWS_FIELD_NUMBER: _ClassVar[int]
    NUM_COLLATERAL_FIELD_NUMBER: _ClassVar[int]
    SKIP_COLLATERAL_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MODE_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    sample_id: int
    image: ImageInput
    counts: _containers.RepeatedScalarFieldContainer[int]
    selections: _containers.RepeatedScalarFieldContainer[Selection]
    step_size: float
    num_neighbors: int
    neighbor_bundle: str
    seed: int
    count_fractions: _containers.RepeatedScalarFieldContainer[float]
    random_draws: int
    num_collateral: int
    skip_collateral: bool
    failure_mode: int
    def __init__(self, bundle: _Optional[str] = ..., sample_id: _Optional[int] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., counts: _Optional[_Iterable[int]] = ..., selections: _Optional[_Iterable[_Union[Selection, str]]] = ..., step_size: _Optional[float] = ..., num_neighbors: _Optional[int] = ..., neighbor_bundle: _Optional[str] = ..., seed: _Optional[int] = ..., count_fractions: _Optional[_Iterable[float]] = ..., random_draws: _Optional[int] = ..., num_collateral: _Optional[int] = ..., skip_collateral: _Optional[bool] = ..., failure_mode: _Optional[int] = ...) -> None: ...

class StartFinetuneEvaluationResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class StartPruningEvaluationRequest(_message.Message):
    __slots__ = ("bundle", "sample_id", "image", "counts", "selections", "num_neighbors", "seed", "count_fractions", "random_draws", "num_collateral", "skip_collateral")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SELECTIONS_FIELD_NUMBER: _ClassVar[int]
    NUM_NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FRACTIONS_FIELD_NUMBER: _ClassVar[int]
    RANDOM_DRAWS_FIELD_NUMBER: _ClassVar[int]
    NUM_COLLATERAL_FIELD_NUMBER: _ClassVar[int]
    SKIP_COLLATERAL_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    sample_id: int
    image: ImageInput
    counts: _containers.RepeatedScalarFieldContainer[int]
    selections: _containers.RepeatedScalarFieldContainer[Selection]
    num_neighbors: int
    seed: int
    count_fractions: _containers.RepeatedScalarFieldContainer[float]
    random_draws: int
    num_collateral: int
    skip_collateral: bool
    def __init__(self, bundle: _Optional[str] = ..., sample_id: _Optional[int] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., counts: _Optional[_Iterable[int]] = ..., selections: _Optional[_Iterable[_Union[Selection, str]]] = ..., num_neighbors: _Optional[int] = ..., seed: _Optional[int] = ..., count_fractions: _Optional[_Iterable[float]] = ..., random_draws: _Optional[int] = ..., num_collateral: _Optional[int] = ..., skip_collateral: _Optional[bool] = ...) -> None: ...

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

class Collateral(_message.Message):
    __slots__ = ("evaluated", "accuracy_delta", "flips", "true_confidence_delta")
    EVALUATED_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_DELTA_FIELD_NUMBER: _ClassVar[int]
    FLIPS_FIELD_NUMBER: _ClassVar[int]
    TRUE_CONFIDENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    evaluated: int
    accuracy_delta: float
    flips: int
    true_confidence_delta: float
    def __init__(self, evaluated: _Optional[int] = ..., accuracy_delta: _Optional[float] = ..., flips: _Optional[int] = ..., true_confidence_delta: _Optional[float] = ...) -> None: ...

class DrawSpread(_message.Message):
    __slots__ = ("draws", "reference_true_confidence_delta_std", "neighbors_true_confidence_delta_std", "neighbors_corrected_fraction_std", "incorrect_confidence_delta_std")
    DRAWS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_TRUE_CONFIDENCE_DELTA_STD_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_TRUE_CONFIDENCE_DELTA_STD_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_CORRECTED_FRACTION_STD_FIELD_NUMBER: _ClassVar[int]
    INCORRECT_CONFIDENCE_DELTA_STD_FIELD_NUMBER: _ClassVar[int]
    draws: int
    reference_true_confidence_delta_std: float
    neighbors_true_confidence_delta_std: float
    neighbors_corrected_fraction_std: float
    incorrect_confidence_delta_std: float
    def __init__(self, draws: _Optional[int] = ..., reference_true_confidence_delta_std: _Optional[float] = ..., neighbors_true_confidence_delta_std: _Optional[float] = ..., neighbors_corrected_fraction_std: _Optional[float] = ..., incorrect_confidence_delta_std: _Optional[float] = ...) -> None: ...

class FinetuneRow(_message.Message):
    __slots__ = ("selection", "count", "reference_corrected", "reference_true_confidence_delta", "neighbors_corrected_fraction", "neighbors_true_confidence_delta", "neighbors_evaluated", "parameters", "filters", "collateral", "spread", "reference_corrected_fraction")
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_CORRECTED_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_TRUE_CONFIDENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_CORRECTED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_TRUE_CONFIDENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_EVALUATED_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    COLLATERAL_FIELD_NUMBER: _ClassVar[int]
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_CORRECTED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    selection: Selection
    count: int
    reference_corrected: bool
    reference_true_confidence_delta: float
    neighbors_corrected_fraction: float
    neighbors_true_confidence_delta: float
    neighbors_evaluated: int
    parameters: int
    filters: _containers.RepeatedScalarFieldContainer[int]
    collateral: Collateral
    spread: DrawSpread
    reference_corrected_fraction: float
    def __init__(self, selection: _Optional[_Union[Selection, str]] = ..., count: _Optional[int] = ..., reference_corrected: _Optional[bool] = ..., reference_true_confidence_delta: _Optional[float] = ..., neighbors_corrected_fraction: _Optional[float] = ..., neighbors_true_confidence_delta: _Optional[float] = ..., neighbors_evaluated: _Optional[int] = ..., parameters: _Optional[int] = ..., filters: _Optional[_Iterable[int]] = ..., collateral: _Optional[_Union[Collateral, _Mapping]] = ..., spread: _Optional[_Union[DrawSpread, _Mapping]] = ..., reference_corrected_fraction: _Optional[float] = ...) -> None: ...

class FinetuneEvaluationResult(_message.Message):
    __slots__ = ("reference", "neighbor_ids", "rows", "step_size", "seed", "random_draws", "failure_mode")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOR_IDS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RANDOM_DRAWS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MODE_FIELD_NUMBER: _ClassVar[int]
    reference: ReferenceState
    neighbor_ids: _containers.RepeatedScalarFieldContainer[int]
    rows: _containers.RepeatedCompositeFieldContainer[FinetuneRow]
    step_size: float
    seed: int
    random_draws: int
    failure_mode: int
    def __init__(self, reference: _Optional[_Union[ReferenceState, _Mapping]] = ..., neighbor_ids: _Optional[_Iterable[int]] = ..., rows: _Optional[_Iterable[_Union[FinetuneRow, _Mapping]]] = ..., step_size: _Optional[float] = ..., seed: _Optional[int] = ..., random_draws: _Optional[int] = ..., failure_mode: _Optional[int] = ...) -> None: ...

class PruningRow(_message.Message):
    __slots__ = ("selection", "count", "corrected", "incorrect_confidence_delta", "true_confidence_delta", "neighbors_corrected_fraction", "neighbors_incorrect_confidence_delta", "neighbors_true_confidence_delta", "neighbors_evaluated", "filters", "collateral", "spread", "reference_corrected_fraction")
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CORRECTED_FIELD_NUMBER: _ClassVar[int]
    INCORRECT_CONFIDENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    TRUE_CONFIDENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_CORRECTED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_INCORRECT_CONFIDENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_TRUE_CONFIDENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_EVALUATED_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    COLLATERAL_FIELD_NUMBER: _ClassVar[int]
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_CORRECTED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    selection: Selection
    count: int
    corrected: bool
    incorrect_confidence_delta: float
    true_confidence_delta: float
    neighbors_corrected_fraction: float
    neighbors_incorrect_confidence_delta: float
    neighbors_true_confidence_delta: float
    neighbors_evaluated: int
    filters: _containers.RepeatedScalarFieldContainer[int]
    collateral: Collateral
    spread: DrawSpread
    reference_corrected_fraction: float
    def __init__(self, selection: _Optional[_Union[Selection, str]] = ..., count: _Optional[int] = ..., corrected: _Optional[bool] = ..., incorrect_confidence_delta: _Optional[float] = ..., true_confidence_delta: _Optional[float] = ..., neighbors_corrected_fraction: _Optional[float] = ..., neighbors_incorrect_confidence_delta: _Optional[float] = ..., neighbors_true_confidence_delta: _Optional[float] = ..., neighbors_evaluated: _Optional[int] = ..., filters: _Optional[_Iterable[int]] = ..., collateral: _Optional[_Union[Collateral, _Mapping]] = ..., spread: _Optional[_Union[DrawSpread, _Mapping]] = ..., reference_corrected_fraction: _Optional[float] = ...) -> None: ...

class PruningEvaluationResult(_message.Message):
    __slots__ = ("reference", "neighbor_ids", "rows", "seed", "random_draws")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOR_IDS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RANDOM_DRAWS_FIELD_NUMBER: _ClassVar[int]
    reference: ReferenceState
    neighbor_ids: _containers.RepeatedScalarFieldContainer[int]
    rows: _containers.RepeatedCompositeFieldContainer[PruningRow]
    seed: int
    random_draws: int
    def __init__(self, reference: _Optional[_Union[ReferenceState, _Mapping]] = ..., neighbor_ids: _Optional[_Iterable[int]] = ..., rows: _Optional[_Iterable[_Union[PruningRow, _Mapping]]] = ..., seed: _Optional[int] = ..., random_draws: _Optional[int] = ...) -> None: ...

class StartSuppressionRequest(_message.Message):
    __slots__ = ("bundle", "sample_id", "image", "segments", "blank_counts")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    BLANK_COUNTS_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    sample_id: int
    image: ImageInput
    segments: _containers.RepeatedScalarFieldContainer[int]
    blank_counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, bundle: _Optional[str] = ..., sample_id: _Optional[int] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., segments: _Optional[_Iterable[int]] = ..., blank_counts: _Optional[_Iterable[int]] = ...) -> None: ...

class StartSuppressionResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class SuppressionRow(_message.Message):
    __slots__ = ("method", "segments", "blanked", "predicted", "true_confidence", "corrected")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    BLANKED_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    TRUE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    CORRECTED_FIELD_NUMBER: _ClassVar[int]
    method: str
    segments: int
    blanked: int
    predicted: int
    true_confidence: float
    corrected: bool
    def __init__(self, method: _Optional[str] = ..., segments: _Optional[int] = ..., blanked: _Optional[int] = ..., predicted: _Optional[int] = ..., true_confidence: _Optional[float] = ..., corrected: _Optional[bool] = ...) -> None: ...

class SuppressionResult(_message.Message):
    __slots__ = ("reference", "layer", "filter", "rows", "fixed_by_surprise", "fixed_by_vanilla")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FIXED_BY_SURPRISE_FIELD_NUMBER: _ClassVar[int]
    FIXED_BY_VANILLA_FIELD_NUMBER: _ClassVar[int]
    reference: ReferenceState
    layer: str
    filter: int
    rows: _containers.RepeatedCompositeFieldContainer[SuppressionRow]
    fixed_by_surprise: bool
    fixed_by_vanilla: bool
    def __init__(self, reference: _Optional[_Union[ReferenceState, _Mapping]] = ..., layer: _Optional[str] = ..., filter: _Optional[int] = ..., rows: _Optional[_Iterable[_Union[SuppressionRow, _Mapping]]] = ..., fixed_by_surprise: _Optional[bool] = ..., fixed_by_vanilla: _Optional[bool] = ...) -> None: ...

class StartExperimentRequest(_message.Message):
    __slots__ = ("bundle", "name", "references", "seed", "options")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    name: str
    references: int
    seed: int
    options: _containers.ScalarMap[str, str]
    def __init__(self, bundle: _Optional[str] = ..., name: _Optional[str] = ..., references: _Optional[int] = ..., seed: _Optional[int] = ..., options: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StartExperimentResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class ExperimentPoint(_message.Message):
    __slots__ = ("selection", "count", "metric", "mean", "ci_low", "ci_high", "n")
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    selection: str
    count: int
    metric: str
    mean: float
    ci_low: float
    ci_high: float
    n: int
    def __init__(self, selection: _Optional[str] = ..., count: _Optional[int] = ..., metric: _Optional[str] = ..., mean: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., n: _Optional[int] = ...) -> None: ...

class ExperimentResult(_message.Message):
    __slots__ = ("name", "references", "seed", "points", "json", "plot_png", "seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    PLOT_PNG_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    references: int
    seed: int
    points: _containers.RepeatedCompositeFieldContainer[ExperimentPoint]
    json: str
    plot_png: bytes
    seconds: float
    def __init__(self, name: _Optional[str] = ..., references: _Optional[int] = ..., seed: _Optional[int] = ..., points: _Optional[_Iterable[_Union[ExperimentPoint, _Mapping]]] = ..., json: _Optional[str] = ..., plot_png: _Optional[bytes] = ..., seconds: _Optional[float] = ...) -> None: ...

class ExportEditedModelRequest(_message.Message):
    __slots__ = ("operation_id", "selection", "count", "draw")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DRAW_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    selection: Selection
    count: int
    draw: int
    def __init__(self, operation_id: _Optional[str] = ..., selection: _Optional[_Union[Selection, str]] = ..., count: _Optional[int] = ..., draw: _Optional[int] = ...) -> None: ...

class ExportEditedModelResponse(_message.Message):
    __slots__ = ("data", "filters", "step_size", "seed", "total_bytes")
    DATA_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    filters: _containers.RepeatedScalarFieldContainer[int]
    step_size: float
    seed: int
    total_bytes: int
    def __init__(self, data: _Optional[bytes] = ..., filters: _Optional[_Iterable[int]] = ..., step_size: _Optional[float] = ..., seed: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class OperationError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("id", "kind", "state", "progress", "message", "bundle", "created_at", "updated_at", "finetune", "pruning", "suppression", "experiment", "error")
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
    SUPPRESSION_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
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
    suppression: SuppressionResult
    experiment: ExperimentResult
    error: OperationError
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[OperationKind, str]] = ..., state: _Optional[_Union[OperationState, str]] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., bundle: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finetune: _Optional[_Union[FinetuneEvaluationResult, _Mapping]] = ..., pruning: _Optional[_Union[PruningEvaluationResult, _Mapping]] = ..., suppression: _Optional[_Union[SuppressionResult, _Mapping]] = ..., experiment: _Optional[_Union[ExperimentResult, _Mapping]] = ..., error: _Optional[_Union[OperationError, _Mapping]] = ...) -> None: ...

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
