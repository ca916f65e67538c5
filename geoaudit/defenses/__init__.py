"""Defenses against adversarial images: input transformations (JPEG, bit depth)
and the individual-fairness centroid defense."""
from geoaudit.defenses._centroid import (
    THRESHOLD_PRESETS,
    TIE_BREAKS,
    CentroidDefense,
    CentroidScores,
    calibrate_thresholds,
    paper_layer_names,
    select_centroids,
)
from geoaudit.defenses._centroid_eval import (
    CENTROID_MODES,
    DEFAULT_EPS_GRID,
    CentroidCurve,
    CentroidEvaluation,
    evaluate_centroid_checkpoint,
    evaluate_centroid_defense,
    parse_eps_grid,
    read_thresholds,
)
from geoaudit.defenses._simple import JPEG, BitDepth

__all__ = ["CENTROID_MODES", "DEFAULT_EPS_GRID", "TIE_BREAKS", "paper_layer_names", "JPEG", "THRESHOLD_PRESETS", "BitDepth", "CentroidCurve", "CentroidDefense",
           "CentroidEvaluation", "CentroidScores", "calibrate_thresholds", "evaluate_centroid_checkpoint",
           "evaluate_centroid_defense", "parse_eps_grid", "read_thresholds", "select_centroids"]
