"""Defenses against adversarial images: input transformations (JPEG, bit depth)
and the individual-fairness centroid defense."""
from geoaudit.defenses._centroid import (
    THRESHOLD_PRESETS,
    CentroidDefense,
    CentroidScores,
    calibrate_thresholds,
    select_centroids,
)
from geoaudit.defenses._centroid_eval import (
    DEFAULT_EPS_GRID,
    CentroidCurve,
    CentroidEvaluation,
    evaluate_centroid_checkpoint,
    evaluate_centroid_defense,
    parse_eps_grid,
    read_thresholds,
)
from geoaudit.defenses._simple import JPEG, BitDepth

__all__ = ["DEFAULT_EPS_GRID", "JPEG", "THRESHOLD_PRESETS", "BitDepth", "CentroidCurve", "CentroidDefense",
           "CentroidEvaluation", "CentroidScores", "calibrate_thresholds", "evaluate_centroid_checkpoint",
           "evaluate_centroid_defense", "parse_eps_grid", "read_thresholds", "select_centroids"]
