"""parasal.core: parameter-space saliency (Levin et al., NeurIPS 2022) on PyTorch models.

Public surface; everything else in this package is private.
"""

from .layout import FilterLayout, LayerSpan, filter_layout
from .stats import SIGMA_FLOOR, RunningStats, standardize

__all__ = ["FilterLayout", "LayerSpan", "filter_layout", "RunningStats", "standardize", "SIGMA_FLOOR"]
