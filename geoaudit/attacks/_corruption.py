"""A corruption in an attack's clothing: GeoShapes' capture degradation at a random severity.

Algorithm 2 appends whatever its attack returns to D, so with :class:`CaptureCorruption` as
the "attack" D holds the clean images plus capture-corrupted copies, and Algorithm 3 on that D
is training with the corruption as augmentation: the demo's oracle, a population known to be
robust to GeoShapes' capture-quality bias.  It takes no gradient steps and does not look at
the model except to report margins and success like every attack.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

from geoaudit._errors import InputError
from geoaudit._validation import check_interval
from geoaudit.attacks._base import Attack, margins_of

__all__ = ["CaptureCorruption"]


class CaptureCorruption(Attack):
    """``geoaudit.data.capture_corruption`` at a severity drawn per image from U(0, max_severity).

    Parameters
    ----------
    max_severity : float, default 1.0
        Upper end of the uniform severity, in (0, 1].
    random_state : int or None, default 0
        Seed of the severities and the sensor noise.  The stream advances with every call, so
        successive batches get different corruptions; the same seed and the same sequence of
        calls give the same images.
    """

    name = "capture"

    def __init__(self, max_severity=1.0, *, random_state=0):
        caller = type(self).__name__
        self.max_severity = check_interval("max_severity", max_severity, 0, 1, caller=caller, closed="right")
        if random_state is not None and (not isinstance(random_state, numbers.Integral)
                                         or isinstance(random_state, bool)):
            raise InputError(f"The 'random_state' parameter of {caller} must be an int or None. "
                             f"Got {random_state!r} instead.")
        self.random_state = None if random_state is None else int(random_state)
        self._rng = np.random.default_rng(self.random_state)

    def _params(self):
        return {"max_severity": self.max_severity, "random_state": self.random_state}

    def _run(self, model, x, y):
        from geoaudit.data import capture_corruption

        n = x.shape[0]
        severity = self._rng.uniform(0.0, self.max_severity, n)
        adv = capture_corruption(x.detach().float().cpu(), severity, random_state=self._rng)
        adv = adv.to(device=x.device, dtype=x.dtype)
        with torch.no_grad():
            margins = margins_of(model(adv), y)
        return adv, margins > 0, torch.zeros(n, dtype=torch.long, device=x.device), margins
