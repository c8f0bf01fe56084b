"""Why SmoothGrad works: the analysis behind chapters 03 and 04.

* :mod:`.regions`: activation patterns, linear regions and how many units
  SmoothGrad's noise flips (chapter 03, ReLU Boundaries);
* :mod:`.gaussian`: the closed forms for one unit under Gaussian noise and the
  package's one normal CDF (chapter 03; chapter 04, What SmoothGrad Estimates);
* :mod:`.estimators`: Stein's estimator, the 1/N variance law and Jensen's gap
  (chapter 04; Smilkov et al., 2017; Seo et al., 2018).

Every public name is re-exported here, e.g. ``gradsal.analysis.flip_sweep``.
"""

from .estimators import (
    jensen_gap,
    loglog_slope,
    stein_projections,
    variance_vs_n,
)
from .gaussian import (
    flip_probability,
    folded_normal_mean,
    gate_probability,
    gaussian_cdf,
    smoothed_relu,
    smoothed_relu6_derivative,
    smoothed_relu_derivative,
)
from .regions import (
    ABOVE,
    BELOW,
    BETWEEN,
    FlipSweep,
    LineScan,
    PatternRecorder,
    activation_kinks,
    activation_pattern,
    activation_states,
    affine_row_norms,
    flip_sweep,
    line_scan,
    pattern_changes,
)

__all__ = [
    "ABOVE",
    "BELOW",
    "BETWEEN",
    "FlipSweep",
    "LineScan",
    "PatternRecorder",
    "activation_kinks",
    "activation_pattern",
    "activation_states",
    "affine_row_norms",
    "flip_probability",
    "flip_sweep",
    "folded_normal_mean",
    "gate_probability",
    "gaussian_cdf",
    "jensen_gap",
    "line_scan",
    "loglog_slope",
    "pattern_changes",
    "smoothed_relu",
    "smoothed_relu6_derivative",
    "smoothed_relu_derivative",
    "stein_projections",
    "variance_vs_n",
]
