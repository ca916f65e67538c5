"""The individual-fairness centroid defense (Pepe, "Individual fairness for adversarial
robustness", paper 002).

As an input passes through the network, at each chosen layer its activations are compared
with those of one known image per class (the *centroids*) by the rescaled cosine distance
``D = (1 - cos) / 2``; every class whose distance is under its threshold ``alpha_j`` gets a
vote, and the class with most votes wins.  No retraining; the centroid activations are
computed once at construction, so a defended prediction costs one forward pass of the
model plus one ``(N, d) x (d, M)`` product per hooked layer.

One idea a module: which layers are hooked (``_layers``), the hooks that record and score
activations (``_hooks``), one pass's scores and the class ranking (``_scores``), the
defense (``_defense``), and choosing centroids and thresholds from data (``_selection``).
"""
from geoaudit.defenses._centroid._defense import LAYER_WEIGHTINGS, THRESHOLD_PRESETS, CentroidDefense
from geoaudit.defenses._centroid._layers import (
    ACTIVATION_TYPES,
    LAYER_TYPES,
    PAPER_LAYERS,
    default_layer_names,
    paper_layer_names,
)
from geoaudit.defenses._centroid._scores import TIE_BREAKS, CentroidScores, rank_classes
from geoaudit.defenses._centroid._selection import CENTROID_METHODS, calibrate_thresholds, select_centroids

__all__ = ["ACTIVATION_TYPES", "CENTROID_METHODS", "LAYER_TYPES", "LAYER_WEIGHTINGS", "PAPER_LAYERS",
           "THRESHOLD_PRESETS", "TIE_BREAKS", "CentroidDefense", "CentroidScores", "calibrate_thresholds",
           "default_layer_names", "paper_layer_names", "rank_classes", "select_centroids"]
