"""Adaptive attacks on defenses (BPDA, EOT), DDN, and PGD's start / targeted mode / restarts."""
import math

import pytest
import torch
from _attack_models import striped_images, trained_model
from scipy import stats

from geoaudit._errors import InputError
from geoaudit.attacks import (
    BPDA,
    DDN,
    FGSM,
    PGD,
    Defended,
    SSIMNewton,
    evaluate,
    make_attack,
)
from geoaudit.attacks._newton import border_energy_share, damping_cosines
from geoaudit.defenses import JPEG, BitDepth


@pytest.fixture(scope="module")
def data():
    return striped_images(48, seed=5)


@pytest.mark.parametrize("defense", [JPEG(75), BitDepth(3), JPEG(quality_range=(50, 90), random_state=0)])
def test_bpda_forward_is_the_defense_and_backward_the_identity(defense):
    x = striped_images(4, seed=2)[0].double().requires_grad_(True)
    out = BPDA(defense)(x)
    g = torch.randn_like(x)
    out.backward(g)
    torch.testing.assert_close(x.grad, g)
    if not getattr(defense, "randomised", False):
        torch.testing.assert_close(out.detach(), defense(x.detach()))


def test_defended_model_passes_gradients_only_when_adaptive(data):
    x, y = data
    model = trained_model().requires_grad_(False)
    for adaptive, nonzero in ((True, True), (False, False)):
        xi = x[:6].clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(Defended(model, BitDepth(3), adaptive=adaptive)(xi), y[:6])
        if nonzero:
            (g,) = torch.autograd.grad(loss, [xi])
            assert float(g.abs().sum()) > 0
        else:
            assert not loss.requires_grad  # the defense blocks the gradient entirely


def test_eot_averages_draws_of_a_randomised_defense(data):
    x, _ = data
    model = trained_model()
    d = JPEG(quality_range=(30, 90), random_state=0)
    assert d.randomised and not JPEG(75).randomised
    assert not torch.equal(d(x[:4]), d(x[:4]))  # each call draws new qualities
    wrapped = Defended(model, d)
    assert wrapped.eot_samples == 8 and Defended(model, JPEG(75)).eot_samples == 1
    with torch.no_grad():
        logp = wrapped(x[:4])
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(4), atol=1e-5, rtol=0)  # log mean probability


@pytest.mark.parametrize("defense, k", [(BitDepth(2), 1), (JPEG(60), 1),
                                        (JPEG(quality_range=(50, 90), random_state=0), 8)])
def test_bpda_and_eot_beat_the_oblivious_attack(data, defense, k):
    x, y = data
    model = trained_model()
    # A small Linf budget: the oblivious perturbation is partly rounded / compressed away.
    attack = PGD(eps=0.12, step_size=0.03, steps=10, norm="linf")
    adv = attack(model, x, y)
    ev = evaluate(model, x, adv, y, defenses=[defense], adaptive=True, lpips=False, dists=False)
    d = ev.defenses[repr(defense)]
    assert d["success_rate"] == d["oblivious_success_rate"]  # the old key keeps its meaning
    assert d["adaptive_success_rate"] > d["oblivious_success_rate"] + 0.08
    assert d["adaptive_robust_accuracy"] < d["robust_accuracy"]
    assert d["eot_samples"] == k
    assert set(ev.to_dict()["defenses"][repr(defense)]) >= {
        "clean_accuracy", "robust_accuracy", "success_rate", "oblivious_success_rate_undefended_base",
        "adaptive_success_rate_undefended_base"}
    assert "adaptive" in ev.summary()


def test_evaluate_adaptive_rebuilds_the_attack_or_asks_for_it(data):
    x, y = data
    model = trained_model()
    adv = PGD(eps=0.5, steps=3)(model, x[:8], y[:8])
    ev = evaluate(model, x[:8], adv, y[:8], defenses=[BitDepth(4)], adaptive=True, lpips=False, dists=False)
    assert ev.defenses["BitDepth(bits=4)"]["adaptive_success_rate"] is not None
    with pytest.raises(InputError, match="needs the attack"):
        evaluate(model, x[:8], adv.images, y[:8], defenses=[BitDepth(4)], adaptive=True)


def test_both_denominators_are_named(data):
    x, y = data
    model = trained_model()
    adv = PGD(eps=0.6, steps=5)(model, x, y)
    d = evaluate(model, x, adv, y, defenses=[BitDepth(1)], lpips=False, dists=False).defenses["BitDepth(bits=1)"]
    ev = evaluate(model, x, adv, y, lpips=False, dists=False)
    cb_undefended = ev.per_image["correct_before"]
    with torch.no_grad():
        ca = model(BitDepth(1)(adv.images)).argmax(1) == y
    expected = float((cb_undefended & ~ca).sum()) / int(cb_undefended.sum())
    assert d["oblivious_success_rate_undefended_base"] == pytest.approx(expected)


def test_ddn_finds_smaller_l2_than_pgd_at_equal_success(data):
    x, y = data
    model = trained_model()
    ddn = DDN(steps=60)(model, x, y)
    assert ddn.success_rate > 0.9
    l2_ddn = float((ddn.images - x).flatten(1).norm(dim=1).mean())
    for eps in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0):  # smallest PGD budget reaching DDN's success
        pgd = PGD(eps=eps, steps=20)(model, x, y)
        if pgd.success_rate >= ddn.success_rate:
            break
    l2_pgd = float((pgd.images - x).flatten(1).norm(dim=1).mean())
    assert l2_ddn < 0.8 * l2_pgd
    assert make_attack("ddn").steps == 100


def test_ddn_max_norm_and_bad_parameters(data):
    x, y = data
    res = DDN(steps=20, max_norm=0.2)(trained_model(), x[:8], y[:8])
    assert float((res.images - x[:8]).flatten(1).norm(dim=1).max()) <= 0.2 + 1e-5
    with pytest.raises(InputError, match="gamma"):
        DDN(gamma=1.5)


def test_l2_random_start_is_uniform_in_the_ball():
    x = torch.full((4000, 1, 4, 4), 0.5, dtype=torch.float64)
    attack = PGD(eps=0.1, norm="l2", random_start=True, random_state=0)
    r = (attack._start(x) - x).flatten(1).norm(dim=1) / 0.1
    d = 16
    # Uniform in the ball: P(r <= t) = t^d, so r^d is uniform on [0, 1].
    assert stats.kstest((r**d).numpy(), "uniform").pvalue > 0.01
    assert float(r.median()) == pytest.approx(0.5 ** (1 / d), abs=0.01)


def test_targeted_pgd_hits_the_target(data):
    x, y = data
    target = (y + 1) % 3
    res = PGD(eps=4.0, step_size=1.0, steps=20, targeted=True)(trained_model(), x, target)
    assert res.success_rate > 0.9
    with torch.no_grad():
        pred = trained_model()(res.images).argmax(1)
    assert torch.equal(pred == target, res.success)


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_restarts_are_never_worse(data, loss):
    x, y = data
    model = trained_model()
    one = PGD(eps=0.3, steps=5, loss=loss, random_state=0)(model, x, y)
    three = PGD(eps=0.3, steps=5, loss=loss, restarts=3, random_state=0)(model, x, y)
    assert bool((three.margins >= one.margins).all())
    assert three.success_rate >= one.success_rate
    assert int(three.steps[0]) == 15


def test_fgsm_without_scoring_spends_one_forward(data):
    x, y = data
    model = trained_model()
    calls = []
    hook = model.register_forward_hook(lambda m, i, o: calls.append(1))
    res = FGSM(eps=0.05, score=False)(model, x, y)
    hook.remove()
    assert len(calls) == 1
    assert bool(res.margins.isnan().all())
    torch.testing.assert_close(res.images, FGSM(eps=0.05)(model, x, y).images)
    with pytest.raises(InputError, match="labels"):
        FGSM(score=False)(model, x, torch.full_like(y, 7))


def test_reflect_padding_keeps_ssim_newton_off_the_border():
    x, y = striped_images(12, size=32, seed=3)
    model = trained_model(size=32)
    shares = {}
    for padding in ("valid", "reflect"):
        res = SSIMNewton(eps=1.0, padding=padding, cg_iters=100)(model, x, y)
        share, pixel_share = border_energy_share(res.images - x)
        shares[padding] = float(share.median())
    assert math.isclose(pixel_share, 1 - 28**2 / 32**2)
    assert shares["valid"] > 2 * pixel_share  # the frame valid-window SSIM cannot see
    assert shares["reflect"] < 1.5 * pixel_share


def test_damping_cosines_are_cosines(data):
    x, y = data
    cos = damping_cosines(SSIMNewton(cg_iters=50), trained_model(), x[:4], y[:4])
    assert cos.shape == (4,) and bool(((cos > -1.0001) & (cos < 1.0001)).all())
