"""Defenses against adversarial images: input transformations (JPEG, bit depth)
and the individual-fairness centroid defense."""
from geoaudit.defenses._centroid import CentroidDefense, CentroidScores, calibrate_thresholds, select_centroids
from geoaudit.defenses._centroid_eval import CentroidCurve, evaluate_centroid_defense
from geoaudit.defenses._simple import JPEG, BitDepth

__all__ = ["JPEG", "BitDepth", "CentroidCurve", "CentroidDefense", "CentroidScores", "calibrate_thresholds",
           "evaluate_centroid_defense", "select_centroids"]
