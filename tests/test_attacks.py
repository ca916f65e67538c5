"""Attack contract, PGD and FGSM: property tests on a tiny model trained on synthetic stripes."""
import re

import pytest
import torch
import torch.nn.functional as F

from _attack_models import striped_images, trained_model
from geoaudit._errors import InputError
from geoaudit.attacks import FGSM, PGD, AttackResult


@pytest.fixture(scope="module")
def data():
    return striped_images(24, seed=7)


def _loss(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_stays_in_ball_and_raises_loss(data, norm, random_start, device):
    x, y = (t.to(device) for t in data)
    model = trained_model(device=device)
    eps = 1.0 if norm == "l2" else 0.06
    res = PGD(eps=eps, step_size=eps / 4, steps=8, norm=norm, random_start=random_start,
              random_state=0)(model, x, y)
    assert isinstance(res, AttackResult)
    assert res.images.shape == x.shape and res.images.dtype == x.dtype and res.images.device == x.device
    assert not res.images.requires_grad
    assert float(res.images.min()) >= 0 and float(res.images.max()) <= 1
    delta = (res.images - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert bool((size <= eps + 1e-5).all())
    if not random_start:
        assert bool((_loss(model, res.images, y) >= _loss(model, x, y) - 1e-6).all())
    assert res.steps.tolist() == [8] * len(y)
    # success means "misclassified at the end"
    with torch.no_grad():
        pred = model(res.images).argmax(1)
    assert torch.equal(res.success, pred != y)


def test_pgd_high_success_on_undefended_model(data):
    x, y = data
    model = trained_model()
    assert bool((model(x).argmax(1) == y).all())
    res = PGD(eps=3.0, step_size=0.5, steps=15)(model, x, y)
    assert res.success_rate >= 0.9
    assert res.to_dict()["success_rate"] == pytest.approx(res.success_rate)


def test_fgsm_linf_and_loss(data):
    x, y = data
    model = trained_model()
    res = FGSM(eps=0.05)(model, x, y)
    assert float((res.images - x).abs().max()) <= 0.05 + 1e-6
    assert res.steps.tolist() == [1] * len(y)
    assert float(_loss(model, res.images, y).mean()) > float(_loss(model, x, y).mean())


def test_random_start_is_seeded(data):
    x, y = data
    model = trained_model()
    a = PGD(eps=0.5, step_size=0.1, steps=2, random_start=True, random_state=3)
    assert torch.equal(a(model, x, y).images, a(model, x, y).images)


def test_mode_and_gradients_restored(data):
    x, y = data
    model = trained_model()
    model.train()
    model.net[0].eval()  # a mixed state must come back as it was
    first = model.net[0].weight
    first.grad = torch.full_like(first, 7.0)
    PGD(eps=0.5, step_size=0.1, steps=3)(model, x, y)
    FGSM(eps=0.1)(model, x, y)
    assert model.training and not model.net[0].training and model.net[3].training
    assert torch.equal(first.grad, torch.full_like(first, 7.0))
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("net.0."))
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_parameters_stay_frozen(data):
    x, y = data
    model = trained_model()
    model.net[0].weight.requires_grad_(False)
    PGD(eps=0.5, step_size=0.1, steps=2)(model, x, y)
    assert not model.net[0].weight.requires_grad and model.net[0].bias.requires_grad


@pytest.mark.parametrize("kwargs, name", [
    (dict(eps=0.0, step_size=0.1, steps=1), "eps"),
    (dict(eps=-1.0, step_size=0.1, steps=1), "eps"),
    (dict(eps=1.0, step_size=0, steps=1), "step_size"),
    (dict(eps=1.0, step_size=0.1, steps=0), "steps"),
    (dict(eps=1.0, step_size=0.1, steps=2.5), "steps"),
    (dict(eps=1.0, step_size=0.1, steps=2, norm="l1"), "norm"),
])
def test_pgd_bad_hyperparameters(kwargs, name):
    with pytest.raises(InputError, match=re.escape(f"The '{name}' parameter of PGD must be")):
        PGD(**kwargs)


def test_fgsm_bad_eps():
    with pytest.raises(InputError, match=re.escape("The 'eps' parameter of FGSM must be a float in (0, inf)")):
        FGSM(eps=0)


def test_bad_inputs(data):
    x, y = data
    model = trained_model()
    attack = FGSM(eps=0.1)
    with pytest.raises(InputError, match=r"values in \[0, 1\]"):
        attack(model, x * 3, y)
    with pytest.raises(InputError, match=r"shape \(N, C, H, W\)"):
        attack(model, x[0], y)
    with pytest.raises(InputError, match=r"labels of FGSM to have shape \(24,\)"):
        attack(model, x, y[:-1])
    with pytest.raises(InputError, match=r"labels of FGSM to be in \[0, 2\]"):
        attack(model, x, torch.full_like(y, 5))
    with pytest.raises(InputError, match="torch.nn.Module"):
        attack(lambda t: t, x, y)


def test_dtype_follows_images(data):
    x, y = data
    res = FGSM(eps=0.05)(trained_model(), x.double(), y)  # float32 model, float64 images
    assert res.images.dtype == torch.float64 and float((res.images - x.double()).abs().max()) <= 0.05 + 1e-6


def test_evaluate_reports_paper_success_rate(data):
    from geoaudit.attacks import evaluate
    from geoaudit.defenses import JPEG, BitDepth

    x, y = data
    model = trained_model()
    res = PGD(eps=3.0, step_size=0.5, steps=10)(model, x, y)
    ev = evaluate(model, x, res, y, defenses=[JPEG(90), BitDepth(5)])
    with torch.no_grad():
        before, after = model(x).argmax(1) == y, model(res.images).argmax(1) == y
    assert ev.success_rate == pytest.approx(float((before & ~after).sum()) / float(before.sum()))
    assert ev.robust_accuracy == pytest.approx(float(after.float().mean()))
    assert ev.distances["l2"] == pytest.approx(float((res.images - x).flatten(1).norm(dim=1).mean()), rel=1e-5)
    assert ev.distances["linf"] <= 1 and 0 < ev.distances["ssim"] < 1
    # unavailable metrics are reported as such, never as numbers
    assert "ms_ssim" in ev.unavailable and "ms_ssim" not in ev.distances
    assert set(ev.defenses) == {"JPEG(quality=90)", "BitDepth(bits=5)"}
    assert ev.seconds_per_image == pytest.approx(res.seconds / len(y))
    d = ev.to_dict()
    assert d["unavailable"]["lpips"] and d["distances"].get("lpips") is None
    import json
    json.dumps(d)
    # nothing correct before: the paper's rate is undefined, not 0
    wrong = (y + 1) % 3
    assert evaluate(model, x, x, wrong, lpips=False, dists=False).success_rate is None


def test_evaluate_bad_input(data):
    from geoaudit.attacks import evaluate

    x, y = data
    with pytest.raises(InputError, match="shape of images"):
        evaluate(trained_model(), x, x[:, :, :8], y)
    with pytest.raises(InputError, match="The 'lpips' parameter of evaluate"):
        evaluate(trained_model(), x, x, y, lpips="maybe")
