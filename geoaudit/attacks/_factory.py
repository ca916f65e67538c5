"""One way to build an attack by name: ``make_attack("pgd", eps=0.5)``.

Each attack's defaults are defined once, on its class; the CLI, training and the demo all
build attacks here, so they cannot disagree.
"""
from __future__ import annotations

import inspect

from geoaudit._errors import InputError
from geoaudit._validation import check_options
from geoaudit.attacks._ddn import DDN
from geoaudit.attacks._newton import SSIMNewton
from geoaudit.attacks._perceptual import PerceptualDRO
from geoaudit.attacks._pgd import FGSM, PGD

#: Attack name -> class.  "perceptual" is Algorithm 1, "ssim-newton" the one-step attack of eq. 5,
#: "ddn" the minimal-L2 baseline.
ATTACKS = {"pgd": PGD, "fgsm": FGSM, "perceptual": PerceptualDRO, "ssim-newton": SSIMNewton, "ddn": DDN}


def attack_parameters(name: str) -> dict:
    """The parameters ``make_attack(name, ...)`` accepts, with their class defaults.

    Parameters
    ----------
    name : {"pgd", "fgsm", "perceptual", "ssim-newton", "ddn"}

    Returns
    -------
    dict
        Parameter name -> default (``inspect.Parameter.empty`` where the class requires it).
    """
    check_options("name", name, tuple(ATTACKS), caller="attack_parameters")
    sig = inspect.signature(ATTACKS[name].__init__)
    return {p.name: p.default for p in list(sig.parameters.values())[1:]
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def make_attack(name: str, **params):
    """Build the attack called ``name`` with ``params`` over its class defaults.

    Parameters
    ----------
    name : {"pgd", "fgsm", "perceptual", "ssim-newton", "ddn"}
        The attack.
    **params
        Hyperparameters of that attack's class; ``None`` values mean "the default".

    Returns
    -------
    Attack
        A validated attack object, called as ``attack(model, images, labels)``.

    Raises
    ------
    InputError
        For an unknown name or parameter (the message lists what is accepted) or a bad value.
    """
    accepted = attack_parameters(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InputError(f"Unknown {name} attack parameter(s) {', '.join(map(repr, unknown))}; "
                         f"accepted: {', '.join(accepted)}.")
    return ATTACKS[name](**{k: v for k, v in params.items() if v is not None})
