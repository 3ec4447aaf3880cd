"""Streaming anomaly detectors, one per module, all on one ABC (:mod:`.base`)."""

from newswatch.alerts.detectors.base import Detector, available, make_detector, register, z_to_score
from newswatch.alerts.detectors.cusum import Cusum
from newswatch.alerts.detectors.fixed_threshold import FixedThreshold
from newswatch.alerts.detectors.likelihood import AnomalyLikelihood
from newswatch.alerts.detectors.robust_cusum import RobustCusum
from newswatch.alerts.detectors.robust_zscore import RobustZScore
from newswatch.alerts.detectors.three_sigma import ThreeSigma

__all__ = [
    "AnomalyLikelihood",
    "Cusum",
    "Detector",
    "FixedThreshold",
    "RobustCusum",
    "RobustZScore",
    "ThreeSigma",
    "available",
    "make_detector",
    "register",
    "z_to_score",
]
