"""parasal.core: parameter-space saliency (Levin et al., NeurIPS 2022) on PyTorch models.

Public surface; every other module in this package is private. Depends on torch and numpy
only (Pillow/matplotlib are imported lazily for the heatmap PNG); knows nothing of files,
FAISS or gRPC.
"""

from .class_stats import ClassFilterStats
from .edits_export import apply_edit
from .evaluation import (
    DEFAULT_COUNT_FRACTIONS,
    DEFAULT_RANDOM_DRAWS,
    SELECTIONS,
    WHOLE_NETWORK,
    Cancelled,
    Collateral,
    DrawSpread,
    FinetuneReport,
    FinetuneRow,
    PruningReport,
    PruningRow,
    ReferenceState,
    counts_from_fractions,
    default_counts,
    draw_seed,
    finetune_evaluation,
    pruning_evaluation,
    random_filters,
    reference_key,
    row_filters,
    select_filters,
)
from .exemplars import Exemplars, activation_maps, exemplar_png, top_exemplars
from .importance import IMPORTANCE_METHODS, filter_importance, last_conv_layer
from .input_saliency import HEATMAP_BLUR_SIGMA, InputSaliency, heatmap_overlay_png, input_saliency, saliency_heatmap
from .interventions import batchnorm_consumers, finetune_step, perturb_filters, prune_filters, smoothgrad_saliency
from .layout import FilterLayout, LayerSpan, filter_layout
from .ranking import top_k_filters
from .reference import per_sample_filter_saliency
from .regions import FilterRegion, filter_region, region_png, superpixel_scores, superpixels
from .saliency import filter_saliency
from .stats import SIGMA_FLOOR, RunningStats, standardize
from .suppression import SuppressionReport, SuppressionRow, suppress_surprise
from .surprise import FilterDeviation, SampleSurprise, beta_scores, surprise_expectation

__all__ = [
    # layouts and profiles
    "FilterLayout",
    "LayerSpan",
    "filter_layout",
    "filter_saliency",
    "per_sample_filter_saliency",
    "RunningStats",
    "standardize",
    "SIGMA_FLOOR",
    "top_k_filters",
    # input space
    "input_saliency",
    "InputSaliency",
    "saliency_heatmap",
    "heatmap_overlay_png",
    "HEATMAP_BLUR_SIGMA",
    # interventions
    "prune_filters",
    "finetune_step",
    "perturb_filters",
    "smoothgrad_saliency",
    "batchnorm_consumers",
    # evaluations
    "select_filters",
    "finetune_evaluation",
    "pruning_evaluation",
    "FinetuneReport",
    "PruningReport",
    "FinetuneRow",
    "PruningRow",
    "ReferenceState",
    "Cancelled",
    "SELECTIONS",
    "WHOLE_NETWORK",
    "DEFAULT_COUNT_FRACTIONS",
    "DEFAULT_RANDOM_DRAWS",
    "default_counts",
    "counts_from_fractions",
    "reference_key",
    "draw_seed",
    "random_filters",
    "row_filters",
    "Collateral",
    "DrawSpread",
    "apply_edit",
    # surprise and expectation (Hartley et al.)
    "filter_importance",
    "last_conv_layer",
    "IMPORTANCE_METHODS",
    "ClassFilterStats",
    "surprise_expectation",
    "beta_scores",
    "SampleSurprise",
    "FilterDeviation",
    "filter_region",
    "FilterRegion",
    "region_png",
    "superpixels",
    "superpixel_scores",
    "top_exemplars",
    "Exemplars",
    "activation_maps",
    "exemplar_png",
    "suppress_surprise",
    "SuppressionReport",
    "SuppressionRow",
]
