"""How each population is trained: the attacks of the DRO methods and the oracle's data."""
from __future__ import annotations


def attack_params(s, cost, pieapp_weights=None) -> dict:
    """The training attacks' parameters, per DRO method (what :func:`geoaudit.attacks.make_attack` takes).

    Parameters
    ----------
    s : DemoSettings
    cost : str
        The perceptual cost (``"ssim"`` or ``"pieapp"``).
    pieapp_weights : str or Path, optional
        PieAPP weights, passed on when the cost is PieAPP.

    Returns
    -------
    dict
        ``{"pgd": {...}, "perceptual": {...}}``.
    """
    params = {
        "pgd": dict(eps=0.5, step_size=0.1, steps=s.pgd_steps, norm="l2"),
        # the implicit (proximal) cost step, the attack's default, with a lambda at which the
        # cost measurably shapes the perturbation (docs/attacks.md: at the paper's lambda = 1 it
        # barely acts on these small models)
        "perceptual": dict(cost=cost, lam=s.perceptual_lam, step_size=0.1, steps=s.perceptual_steps,
                           confidence=0.0, cost_step="implicit"),
    }
    if cost == "pieapp" and pieapp_weights:
        params["perceptual"]["pieapp_weights"] = str(pieapp_weights)
    return params


def oracle_training_data(folder, *, copies, random_state):
    """The training split plus ``copies`` capture-corrupted copies (severity U(0, 1) per image).

    Parameters
    ----------
    folder : str or Path
        A GeoShapes dataset folder.
    copies : int
        Corrupted copies of each training image, beside the clean one.
    random_state : int
        Seed of the severities and of the corruptions.

    Returns
    -------
    geoaudit.train.TrainingData
    """
    import numpy as np
    import torch

    from geoaudit.data import capture_corruption
    from geoaudit.train import from_tensors, load_training_data

    clean = load_training_data(folder)
    rng = np.random.default_rng([random_state, 7])
    images = [clean.images] + [capture_corruption(clean.images, rng.uniform(0.0, 1.0, clean.n), random_state=rng)
                               for _ in range(copies)]
    return from_tensors(torch.cat(images), clean.labels.repeat(copies + 1), class_names=clean.class_names,
                        source=f"{clean.source} + {copies} capture-corrupted copies", split=clean.split)
