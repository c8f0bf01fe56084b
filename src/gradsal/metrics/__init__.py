"""Scores of saliency maps, one module per question (chapters 01, 05 and 06).

* :mod:`.concentration`: how concentrated one map is (chapter 01, The Vanilla Gradient);
* :mod:`.similarity`: how alike two maps are, by the package's one Spearman
  correlation, SSIM and top-pixel overlap (chapter 01; chapter 05, Sanity Checks);
* :mod:`.randomization`: does the map depend on the model? Cascading parameter
  randomisation (chapter 05; Adebayo et al., 2018);
* :mod:`.faithfulness`: is it faithful? Deletion and insertion curves
  (chapter 05; Petsiuk et al., 2018, RISE);
* :mod:`.robustness`: is it robust? Max-sensitivity (chapter 05; Yeh et al., 2019);
* :mod:`.baselines`: a random map and an edge map that know nothing about the model (chapter 05);
* :mod:`.localization`: does it find a known answer? (chapter 06, Beyond Images);
* :mod:`.uncertainty`: bootstrap intervals over photos and seeds (chapter 07, The Wider Family);
* :mod:`.checks`: the input checks they share.

Every public name is re-exported here, e.g. ``gradsal.metrics.spearman``.
"""

from .baselines import random_map, sobel_map
from .concentration import (
    gini,
    map_statistics,
    max_mean_ratio,
    neighbour_correlation,
    percentiles,
    sparsity,
    top_mass,
)
from .faithfulness import (
    CURVE_KINDS,
    Curve,
    auc,
    baseline_image,
    deletion_curve,
    insertion_curve,
    perturbation_curve,
    perturbation_curves,
)
from .localization import (
    aligned_profile,
    mass_inside,
    pointing_game,
    top_k_hits,
    window_mask,
)
from .randomization import (
    cascading_randomization,
    randomization_similarity,
    reinitialize_,
)
from .robustness import MaxSensitivity, max_sensitivity
from .similarity import (
    hog_similarity,
    map_similarity,
    spearman,
    ssim,
    top_overlap,
)
from .uncertainty import Interval, bootstrap_interval, paired_difference

__all__ = [
    "CURVE_KINDS",
    "Curve",
    "Interval",
    "MaxSensitivity",
    "aligned_profile",
    "auc",
    "baseline_image",
    "bootstrap_interval",
    "cascading_randomization",
    "deletion_curve",
    "gini",
    "hog_similarity",
    "insertion_curve",
    "map_similarity",
    "map_statistics",
    "mass_inside",
    "paired_difference",
    "max_mean_ratio",
    "max_sensitivity",
    "neighbour_correlation",
    "percentiles",
    "perturbation_curve",
    "perturbation_curves",
    "pointing_game",
    "random_map",
    "randomization_similarity",
    "reinitialize_",
    "sobel_map",
    "sparsity",
    "spearman",
    "ssim",
    "top_k_hits",
    "top_mass",
    "top_overlap",
    "window_mask",
]
