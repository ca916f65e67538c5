"""PerceptualDRO (Algorithm 1): early stop, step and cost-refresh accounting, batch = per-image loop."""
import re

import piq
import pytest
import torch

from _attack_models import striped_images, trained_model
from geoaudit._errors import InputError
from geoaudit.attacks import PGD, PerceptualDRO, SSIMCost


@pytest.fixture(scope="module")
def data():
    return striped_images(12, seed=11)


def _one_minus_ssim(a, b):
    return 1 - piq.ssim(a, b, data_range=1.0, reduction="none")


class CountingSSIM(SSIMCost):
    """1 - SSIM that counts the rows it differentiates (to check cost_every)."""

    def __init__(self):
        super().__init__()
        self.rows = 0

    def value_and_grad(self, x_adv, ref):
        self.rows += x_adv.shape[0]
        return super().value_and_grad(x_adv, ref)


def test_success_and_early_stop_accounting(data, device):
    x, y = (t.to(device) for t in data)
    model = trained_model(device=device)
    rows = []
    hook = model.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    cost = CountingSSIM()
    # Algorithm 1 read literally: refreshes at steps 0, 5, 10, ..., no scaling
    attack = PerceptualDRO(cost, step_size=0.5, steps=60, confidence=1.0, cost_every=5, cost_schedule="paper",
                           cost_scale="raw", cost_step="explicit")
    res = attack(model, x, y)
    hook.remove()
    assert res.success.all() and (res.margins > 1.0).all()
    assert res.success.dtype == torch.bool and res.steps.dtype == torch.long
    assert (res.steps > 0).all() and (res.steps < 60).all()
    # every sample is checked once per step taken plus the check that stopped it (the label check
    # rides on the first step's forward: no extra pass): finished samples never enter the model again
    assert sum(rows) == int((res.steps + 1).sum())
    # the cost gradient is refreshed at steps 0, 5, 10, ... of each sample
    assert cost.rows == int(((res.steps + 4) // 5).sum())
    assert float(res.images.min()) >= 0 and float(res.images.max()) <= 1


def test_steps_exhausted_are_counted(data):
    x, y = data
    model = trained_model()
    res = PerceptualDRO("ssim", step_size=0.01, steps=3, confidence=5.0)(model, x, y)
    assert res.steps.tolist() == [3] * len(y)
    assert not res.success.any()
    with torch.no_grad():
        logits = model(res.images)
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    torch.testing.assert_close(res.margins, other - true)


def test_misclassified_sample_takes_no_step(data):
    x, y = data
    model = trained_model()
    wrong = (y + 1) % 3
    res = PerceptualDRO("ssim", steps=5)(model, x[:3], wrong[:3])
    assert res.steps.tolist() == [0, 0, 0] and res.success.all()
    torch.testing.assert_close(res.images, x[:3])


def test_batch_equals_per_image_loop(data):
    x, y = data
    model = trained_model()
    # float64: in float32 a different batch size changes the BLAS summation order (and the
    # thread split on a loaded machine), which 40 steps amplify beyond 1e-5
    model, x = model.double(), x.double()
    attack = PerceptualDRO("ssim", step_size=0.5, steps=40, confidence=0.5, cost_every=3)
    batch = attack(model, x[:6], y[:6])
    for i in range(6):
        one = attack(model, x[i:i + 1], y[i:i + 1])
        assert one.steps.item() == batch.steps[i].item()
        torch.testing.assert_close(one.images[0], batch.images[i], atol=1e-9, rtol=0)


def test_raises_loss_and_matched_success_beats_l2_pgd(data):
    x, y = data
    model = trained_model()
    res = PerceptualDRO("ssim", step_size=0.5, steps=80, lam=1.0, cost_scale="raw")(model, x, y)
    assert res.success_rate == 1.0
    ours = float(_one_minus_ssim(res.images, x).mean())
    # the smallest L2 PGD budget (of a doubling grid) that reaches the same success rate
    for eps in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0):
        pgd = PGD(eps=eps, step_size=eps / 4, steps=10)(model, x, y)
        if pgd.success_rate >= res.success_rate:
            break
    assert pgd.success_rate >= res.success_rate
    assert ours < float(_one_minus_ssim(pgd.images, x).mean())


def test_callable_cost_and_lam_zero(data):
    x, y = data
    model = trained_model()
    # lam in squared-L2 units: 0.05 lets an L2 perturbation of about ||grad loss|| / 0.05 pay off
    mse = PerceptualDRO(lambda a, b: ((a - b) ** 2).flatten(1).sum(1), step_size=0.5, steps=30, lam=0.05)
    assert mse(model, x, y).success_rate > 0.5
    assert PerceptualDRO("ssim", lam=0.0, step_size=0.5, steps=30)(model, x, y).success_rate > 0.5


def test_bad_callable_cost_shape(data):
    x, y = data
    with pytest.raises(InputError, match="one value per image"):
        PerceptualDRO(lambda a, b: ((a - b) ** 2).sum(), steps=2)(trained_model(), x, y)


def test_mode_and_grads_restored(data):
    x, y = data
    model = trained_model().train()
    PerceptualDRO("ssim", step_size=0.5, steps=5)(model, x, y)
    assert model.training and all(p.grad is None and p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("kwargs, name", [
    (dict(steps=0), "steps"), (dict(step_size=0.0), "step_size"), (dict(lam=-1.0), "lam"),
    (dict(confidence=-0.5), "confidence"), (dict(cost_every=0), "cost_every"),
    (dict(memory_budget_mb=0), "memory_budget_mb"),
])
def test_bad_hyperparameters(kwargs, name):
    with pytest.raises(InputError, match=re.escape(f"The '{name}' parameter of PerceptualDRO must be")):
        PerceptualDRO("ssim", **kwargs)


def test_bad_cost():
    with pytest.raises(InputError, match="The 'cost' parameter must be 'pieapp', 'ssim'"):
        PerceptualDRO("lpips")


def test_pieapp_needs_64px(data):
    x, y = data
    # the size check comes before any weights are looked for
    with pytest.raises(InputError, match="at least 64x64 pixels, got 16x16"):
        PerceptualDRO("pieapp", steps=1)(trained_model(), x, y)


def _lam_zero_twin(attack):
    return attack.replace(lam=0.0)


@pytest.mark.parametrize("scale", ["ssim", "curvature", "raw"])
def test_cost_acts_from_the_second_step(data, scale):
    x, y = data
    model = trained_model()
    kwargs = dict(step_size=0.5, confidence=50.0, cost_scale=scale, cost_step="explicit")  # nobody stops early
    for steps, differs in ((1, False), (2, True)):
        ours = PerceptualDRO("ssim", steps=steps, **kwargs)(model, x, y)
        plain = PerceptualDRO("ssim", steps=steps, lam=0.0, **kwargs)(model, x, y)
        diff = float((ours.images - plain.images).abs().amax())
        # step 0: the gradient of 1 - SSIM at x is 0, so no method can act there; step 1 must
        assert (diff > 1e-4) == differs, (steps, diff)
    # Algorithm 1 read literally reuses the zero gradient of step 0 for steps 1..4
    literal = PerceptualDRO("ssim", steps=5, cost_schedule="paper", **kwargs)(model, x, y)
    plain = PerceptualDRO("ssim", steps=5, lam=0.0, **kwargs)(model, x, y)
    acting = PerceptualDRO("ssim", steps=5, **kwargs)(model, x, y)
    # equal up to float rounding (the gradient at x is ~1e-8, not 0), which a ReLU or clamp
    # decision can amplify on a few pixels depending on the thread count: compare to what acting does
    gap = (literal.images - plain.images).abs()
    assert float((gap > 1e-5).float().mean()) < 0.01
    assert float(gap.mean()) < 0.05 * float((acting.images - plain.images).abs().mean())


def test_first_step_schedule_counts_refreshes(data):
    x, y = data
    model = trained_model()
    cost = CountingSSIM()
    res = PerceptualDRO(cost, step_size=0.5, steps=60, confidence=1.0, cost_every=5, cost_scale="raw",
                        cost_step="explicit")(model, x, y)
    # refreshes at steps 1, 6, 11, ...: a sample taking s steps gets (s + 3) // 5 of them
    assert cost.rows == int(((res.steps + 3) // 5).sum())
    assert PerceptualDRO(cost, cost_every=5).refresh_steps(12) == [1, 6, 11]
    assert PerceptualDRO(cost, cost_every=5, cost_schedule="paper").refresh_steps(12) == [0, 5, 10]
    # a cost whose gradient at x is not known to vanish is also differentiated at step 0
    mse = PerceptualDRO(lambda a, b: ((a - b) ** 2).flatten(1).sum(1), cost_every=5)
    assert mse.refresh_steps(7) == [0, 1, 6]


def test_curvature_scale_makes_lam_unit_free(data):
    x, y = data
    model = trained_model()
    from geoaudit.attacks._pgd import input_gradient

    _, g = input_gradient(model, x, y)
    mse = PerceptualDRO(lambda a, b: ((a - b) ** 2).flatten(1).sum(1))
    # sum of squares has Hessian 2 I: curvature 2 along any direction
    torch.testing.assert_close(mse.curvature(x, g, mse.cost.prepare(x)), torch.full((len(y),), 2.0), rtol=1e-3,
                               atol=0)
    # a cost and the same cost times 1000 give the same attack under curvature scaling
    kw = dict(step_size=0.5, steps=6, confidence=50.0, lam=0.5, cost_step="explicit")
    one = PerceptualDRO(lambda a, b: _one_minus_ssim(a, b), **kw)(model, x, y)
    big = PerceptualDRO(lambda a, b: 1000 * _one_minus_ssim(a, b), **kw)(model, x, y)
    torch.testing.assert_close(one.images, big.images, atol=1e-4, rtol=0)
    raw = PerceptualDRO(lambda a, b: 1000 * _one_minus_ssim(a, b), cost_scale="raw", **kw)(model, x, y)
    assert float((raw.images - one.images).abs().amax()) > 1e-3
    # "ssim" units: a rescaled 1 - SSIM acts as 1 - SSIM itself does in the paper's form
    kw["lam"] = 1.0
    paper = PerceptualDRO("ssim", cost_scale="raw", **kw)(model, x, y)
    for c in ("ssim", lambda a, b: 1000 * _one_minus_ssim(a, b)):
        torch.testing.assert_close(PerceptualDRO(c, **kw)(model, x, y).images, paper.images, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kwargs, name", [(dict(cost_schedule="every"), "cost_schedule"),
                                          (dict(cost_scale="loss"), "cost_scale"),
                                          (dict(cost_step="newton"), "cost_step"), (dict(cg_iters=0), "cg_iters"),
                                          (dict(step_rule="adam"), "step_rule")])
def test_bad_options(kwargs, name):
    with pytest.raises(InputError, match=f"The '{name}' parameter of PerceptualDRO must be"):
        PerceptualDRO("ssim", **kwargs)


# -- the implicit (proximal) cost step


def _ssim_of(res, x):
    return float(_one_minus_ssim(res.images.clamp(0, 1), x).mean())


def test_hvp_matches_double_backward(data):
    x, _ = data
    x = x[:4].double()
    attack = PerceptualDRO("ssim")
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    with torch.enable_grad():
        delta = torch.zeros_like(x, requires_grad=True)
        (g,) = torch.autograd.grad(attack.cost.autograd_value(x + delta, x).sum(), [delta], create_graph=True)
        (exact,) = torch.autograd.grad(g, [delta], grad_outputs=v)
    fd = attack.hvp(x, attack.cost.prepare(x), v)
    assert float((fd - exact).norm() / exact.norm()) < 1e-2


def test_implicit_step_acts_from_the_first_step(data):
    x, y = data
    model = trained_model()
    kw = dict(step_size=0.5, steps=1, confidence=50.0, lam=100.0)
    ours = PerceptualDRO("ssim", **kw)(model, x, y)
    plain = PerceptualDRO("ssim", **{**kw, "lam": 0.0})(model, x, y)
    explicit = PerceptualDRO("ssim", cost_step="explicit", **kw)(model, x, y)
    # the explicit step cannot act at x (grad of 1 - SSIM is 0 there); the implicit one shrinks
    # the step along directions 1 - SSIM penalizes
    torch.testing.assert_close(explicit.images, plain.images)
    assert float((ours.images - plain.images).abs().amax()) > 1e-3
    assert _ssim_of(ours, x) < 0.8 * _ssim_of(plain, x)


def test_implicit_equals_explicit_in_the_small_step_limit(data):
    x, y = data
    model = trained_model().double()
    x = x.double()
    gaps = []
    for step in (0.2, 0.02):
        # the same path length for both step sizes: steps * step fixed
        kw = dict(step_size=step, steps=round(1.0 / step), confidence=50.0, lam=30.0, cost_every=1, cg_iters=20)
        imp = PerceptualDRO("ssim", **kw)(model, x, y).images
        exp = PerceptualDRO("ssim", cost_step="explicit", **kw)(model, x, y).images
        moved = float((imp - x).flatten(1).norm(dim=1).mean())
        gaps.append(float((imp - exp).flatten(1).norm(dim=1).mean()) / moved)
    # first-order methods for the same flow: the gap shrinks with the step (about linearly)
    assert gaps[1] < 0.3 * gaps[0], gaps
    assert gaps[1] < 0.05, gaps


def test_implicit_step_is_stable_at_large_lambda(data):
    x, y = data
    model = trained_model()
    kw = dict(step_size=4.0, steps=100)
    imp, exp = [], []
    for lam in (0.0, 10.0, 100.0):
        r = PerceptualDRO("ssim", lam=lam, **kw)(model, x, y)
        assert r.success_rate == 1.0
        imp.append(_ssim_of(r, x))
        exp.append(_ssim_of(PerceptualDRO("ssim", lam=lam, cost_step="explicit", **kw)(model, x, y), x))
    # at the same (full) success, a larger penalty makes the implicit attack less visible, by far
    assert imp[1] < 0.5 * imp[0] and imp[2] < 0.5 * imp[1], imp
    # the explicit step on the stiff 1 - SSIM oscillates at large lambda and gets more visible
    assert exp[2] > 10 * imp[2] and exp[2] > exp[1], (imp, exp)
    # the implicit iteration converges to the penalized optimum, whatever the step size
    big = PerceptualDRO("ssim", lam=100.0, step_size=64.0, steps=100)(model, x, y)
    assert big.success_rate == 1.0 and _ssim_of(big, x) < 1.5 * imp[2]


def test_implicit_step_keeps_no_state(data):
    x, y = data
    model = trained_model().double()
    x = x.double()
    attack = PerceptualDRO("ssim", lam=100.0, step_size=0.5, steps=30, confidence=0.5)
    before = dict(vars(attack))
    first = attack(model, x[:6], y[:6])
    again = attack(model, x[:6], y[:6])
    assert vars(attack).keys() == before.keys()
    torch.testing.assert_close(first.images, again.images, atol=0, rtol=0)
    for i in range(6):  # each image alone: the same attack, so nothing is shared across the batch
        one = attack(model, x[i:i + 1], y[i:i + 1])
        assert one.steps.item() == first.steps[i].item()
        torch.testing.assert_close(one.images[0], first.images[i], atol=1e-7, rtol=0)


def test_normalized_step_rule_moves_by_step_size(data):
    x, y = data
    model = trained_model()
    res = PerceptualDRO("ssim", lam=0.0, step_size=0.3, steps=1, confidence=50.0, step_rule="normalized")(model, x, y)
    moved = (res.images - x).flatten(1).norm(dim=1)
    assert float(moved.max()) <= 0.3 + 1e-5 and float(moved.median()) > 0.25
