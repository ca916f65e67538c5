"""Adversarial attacks on image classifiers.

Every attack is an object holding validated hyperparameters, called as
``attack(model, images, labels) -> AttackResult`` with float images (N, C, H, W) in [0, 1];
any input normalization belongs inside the model (:class:`Normalized`).
"""
from geoaudit.attacks._adaptive import BPDA, Defended
from geoaudit.attacks._base import Attack, AttackResult, margins_of
from geoaudit.attacks._calibrate import (
    CalibrationResult,
    NormCalibration,
    calibrate_epsilon,
)
from geoaudit.attacks._costs import (
    PIEAPP_ENV,
    CallableCost,
    Cost,
    PieAPPCost,
    SSIMCost,
    load_pieapp_network,
    make_cost,
)
from geoaudit.attacks._ddn import DDN
from geoaudit.attacks._evaluate import EvaluationResult, evaluate
from geoaudit.attacks._factory import ATTACKS, attack_parameters, make_attack
from geoaudit.attacks._newton import SSIMNewton
from geoaudit.attacks._perceptual import PerceptualDRO
from geoaudit.attacks._pgd import FGSM, PGD
from geoaudit.models import Normalize, NormalizedModel

#: Short alias: ``Normalized(model, mean, std)`` puts per-channel normalization inside a model.
Normalized = NormalizedModel

__all__ = [
    "ATTACKS",
    "BPDA",
    "DDN",
    "FGSM",
    "PGD",
    "PIEAPP_ENV",
    "Attack",
    "AttackResult",
    "CalibrationResult",
    "CallableCost",
    "Cost",
    "Defended",
    "EvaluationResult",
    "NormCalibration",
    "Normalize",
    "Normalized",
    "NormalizedModel",
    "PerceptualDRO",
    "PieAPPCost",
    "SSIMCost",
    "SSIMNewton",
    "attack_parameters",
    "calibrate_epsilon",
    "evaluate",
    "load_pieapp_network",
    "make_attack",
    "make_cost",
    "margins_of",
]
