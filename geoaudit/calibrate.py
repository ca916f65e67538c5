"""Calibrating the attack budget epsilon from the data (kept here for compatibility).

The code lives in :mod:`geoaudit.attacks` (``geoaudit.attacks._calibrate``); this module
re-exports it, so ``from geoaudit.calibrate import calibrate_epsilon`` keeps working.
"""
from geoaudit.attacks._calibrate import (  # noqa: F401
    LPIPS_BACKBONE_FILE,
    NORM_LABELS,
    NORMS,
    REFERENCES,
    CalibrationResult,
    NormCalibration,
    calibrate_epsilon,
    lpips_available,
    pairwise_lp,
    pairwise_lpips,
    pairwise_ssim_distance,
    sample_per_class,
    summarize_distances,
)

__all__ = [
    "NORMS", "CalibrationResult", "NormCalibration", "calibrate_epsilon", "lpips_available", "pairwise_lp",
    "pairwise_lpips", "pairwise_ssim_distance", "sample_per_class", "summarize_distances",
]
