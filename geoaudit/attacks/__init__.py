"""Adversarial attacks on image classifiers.

Every attack is an object holding validated hyperparameters, called as
``attack(model, images, labels) -> AttackResult`` with float images (N, C, H, W) in [0, 1];
any input normalization belongs inside the model (:class:`Normalized`).
"""
from geoaudit.attacks._base import Attack, AttackResult, margins_of
from geoaudit.attacks._calibrate import CalibrationResult, NormCalibration, calibrate_epsilon
from geoaudit.attacks._costs import (
    PIEAPP_ENV,
    CallableCost,
    Cost,
    PieAPPCost,
    SSIMCost,
    load_pieapp_network,
    make_cost,
)
from geoaudit.attacks._evaluate import EvaluationResult, evaluate
from geoaudit.attacks._factory import ATTACKS, attack_parameters, make_attack
from geoaudit.attacks._newton import SSIMNewton
from geoaudit.attacks._perceptual import PerceptualDRO
from geoaudit.attacks._pgd import FGSM, PGD
from geoaudit.models import Normalize, NormalizedModel

#: Short alias: ``Normalized(model, mean, std)`` puts per-channel normalization inside a model.
Normalized = NormalizedModel

__all__ = [
    "CalibrationResult",
    "NormCalibration",
    "calibrate_epsilon",
    "ATTACKS",
    "attack_parameters",
    "make_attack",
    "PIEAPP_ENV",
    "EvaluationResult",
    "evaluate",
    "CallableCost",
    "Cost",
    "PerceptualDRO",
    "PieAPPCost",
    "SSIMNewton",
    "SSIMCost",
    "load_pieapp_network",
    "make_cost",
    "FGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "Normalize",
    "Normalized",
    "NormalizedModel",
    "margins_of",
]
