"""SSIMNewton (eq. 5): exact and CG solutions agree, the step has length eps, bad input."""
import re

import pytest
import torch
import torch.nn.functional as F

from _attack_models import TinyCNN, striped_images
from geoaudit._errors import InputError
from geoaudit.attacks import SSIMNewton


def test_exact_and_cg_agree():
    g = torch.Generator().manual_seed(0)
    x = 0.25 + 0.5 * torch.rand(2, 1, 12, 12, generator=g, dtype=torch.float64)
    grad = torch.randn(x.shape, generator=g, dtype=torch.float64)
    exact = SSIMNewton(1.0, solver="exact").direction(x, grad)
    cg = SSIMNewton(1.0, solver="cg", cg_iters=400, cg_tol=1e-10).direction(x, grad)
    rel = (exact - cg).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)
    assert bool((rel < 1e-5).all()), rel
    # it is a Newton direction, not the gradient: H reshapes it
    cos = F.cosine_similarity(exact.flatten(1), grad.flatten(1))
    assert bool((cos < 0.99).all())
    # lam only scales Delta*
    torch.testing.assert_close(SSIMNewton(1.0, solver="exact", lam=4.0).direction(x, grad), exact / 4)


def test_attack_step_length_and_loss():
    x, y = striped_images(6, size=16, channels=1, seed=3)
    x = 0.2 + 0.6 * x  # keep away from 0 and 1 so the clamp does not bite
    torch.manual_seed(0)
    model = TinyCNN(channels=1)  # untrained: H is positive definite, so g . Delta* > 0 all the same
    res = SSIMNewton(0.5, solver="cg", cg_iters=30)(model, x, y)
    norms = (res.images - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 0.5), atol=1e-4, rtol=0)
    assert res.steps.tolist() == [1] * 6
    with torch.no_grad():
        assert F.cross_entropy(model(res.images), y) > F.cross_entropy(model(x), y)


def test_exact_refuses_large_images():
    x, y = striped_images(1, size=40, seed=3)
    with pytest.raises(InputError, match="solver='cg'"):
        SSIMNewton(1.0, solver="exact")(TinyCNN(), x, y)


@pytest.mark.parametrize("kwargs, name", [
    (dict(eps=0), "eps"), (dict(eps=1.0, lam=0), "lam"), (dict(eps=1.0, solver="lu"), "solver"),
    (dict(eps=1.0, cg_iters=0), "cg_iters"), (dict(eps=1.0, damping=-1.0), "damping"),
])
def test_bad_hyperparameters(kwargs, name):
    with pytest.raises(InputError, match=re.escape(f"The '{name}' parameter of SSIMNewton must be")):
        SSIMNewton(**kwargs)


def test_small_images_rejected():
    with pytest.raises(InputError, match="at least 11x11 pixels"):
        SSIMNewton(1.0)(TinyCNN(), torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
