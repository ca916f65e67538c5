"""The attack loops read the device rarely: one read for the input checks, the label check on
the first step's forward, and the perceptual loop's compactions every few steps on a GPU (masks
in between) with the same adversarial examples as compacting every step (to float rounding); a
working batch refilled from waiting samples gives them too."""
import collections
import contextlib

import pytest
import torch
from _attack_models import striped_images, trained_model

from geoaudit._errors import InputError
from geoaudit.attacks import FGSM, PGD, PerceptualDRO, _perceptual, make_attack

READS = ("__bool__", "__int__", "__float__", "item", "tolist", "numpy", "nonzero")


@contextlib.contextmanager
def count_reads():
    counts = collections.Counter()
    saved = {n: getattr(torch.Tensor, n) for n in READS}

    def wrap(n, fn):
        def inner(self, *a, **k):
            counts[n] += 1
            return fn(self, *a, **k)
        return inner

    try:
        for n in READS:
            setattr(torch.Tensor, n, wrap(n, saved[n]))
        yield counts
    finally:
        for n, fn in saved.items():
            setattr(torch.Tensor, n, fn)


@pytest.fixture(scope="module")
def data():
    x, y = striped_images(24, seed=4)
    return trained_model(), x, y


ATTACKS = {
    "implicit": dict(cost="ssim", step_size=2.0, steps=30, confidence=0.5),
    "explicit": dict(cost="ssim", step_size=2.0, steps=30, confidence=0.5, cost_step="explicit", cost_every=2),
    "paper": dict(cost="ssim", step_size=2.0, steps=30, confidence=0.5, cost_step="explicit",
                  cost_schedule="paper", cost_scale="raw"),
    "normalized": dict(cost="ssim", step_size=0.5, steps=30, confidence=0.5, step_rule="normalized", lam=0.5),
    "lam0": dict(cost="ssim", step_size=2.0, steps=30, confidence=0.5, lam=0.0),
    "curvature": dict(cost=lambda a, b: ((a - b) ** 2).flatten(1).sum(1), step_size=2.0, steps=12,
                      confidence=0.5, lam=0.02, cost_scale="curvature"),
    "budget": dict(cost="ssim", step_size=2.0, steps=7, confidence=0.5),  # some run out of steps
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("every", [2, 4, 7])
def test_compacting_every_few_steps_gives_the_same_attack(data, name, every):
    model, x, y = data
    attack = PerceptualDRO(**ATTACKS[name])
    ref = attack(model, x, y)
    assert 0 < int(ref.steps.min()) < int(ref.steps.max())  # samples finish at different steps
    attack._compact_every = every
    got = attack(model, x, y)
    # the same steps and successes; images and margins up to the float rounding of kernels whose
    # result depends on the batch size (as it already did when finished samples left the batch)
    assert torch.equal(ref.steps, got.steps) and torch.equal(ref.success, got.success)
    torch.testing.assert_close(got.images, ref.images, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.margins, ref.margins, atol=1e-5, rtol=1e-5)


def test_reads_per_call(data):
    model, x, y = data
    with count_reads() as c:
        PGD(eps=0.5, step_size=0.1, steps=10)(model, x, y)
    assert sum(c.values()) == 1  # the input check's one transfer; was 5 (+ none per step)
    with count_reads() as c:
        FGSM(eps=0.1)(model, x, y)
    assert sum(c.values()) == 1
    attack = PerceptualDRO(**ATTACKS["implicit"])
    with count_reads() as c:
        res = attack(model, x, y)
    steps = int(res.steps.max())
    # CPU default: one compaction per step, and CG may stop early (reads cost nothing here)
    assert c["nonzero"] == (steps + 1 if steps < attack.steps else attack.steps) and c["tolist"] == 1
    attack._compact_every = 4
    with count_reads() as c:
        res4 = attack(model, x, y)
    assert torch.equal(res4.steps, res.steps)
    assert c["__bool__"] == 0 and c["tolist"] == 1 and c["nonzero"] <= steps // 4 + 1
    assert sum(c.values()) <= steps // 4 + 2


def test_the_gpu_default_compacts_every_few_steps():
    attack = PerceptualDRO("ssim")
    assert attack._compact_period("cpu") == 1 and attack._compact_period("cuda") == _perceptual.COMPACT_EVERY["default"] > 1
    assert make_attack("perceptual", cost="ssim")._compact_period("mps") > 1


def test_no_one_image_forward_and_checks_still_raise(data):
    model, x, y = data
    rows = []
    hook = model.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    PerceptualDRO(**ATTACKS["lam0"])(model, x, y)
    hook.remove()
    assert 1 not in rows[:1]  # the label check rides on the first step's forward
    attack = PerceptualDRO(**ATTACKS["implicit"])
    with pytest.raises(InputError, match=r"labels of PerceptualDRO to be in \[0, 2\]"):
        attack(model, x, torch.full_like(y, 3))
    with pytest.raises(InputError, match=r"values in \[0, 1\]"):
        attack(model, x * 2, y)
    with pytest.raises(InputError, match=r"values in \[0, 1\]"):
        attack(model, torch.full_like(x, float("nan")), y)
    with pytest.raises(InputError, match=r"in \[0, inf\)"):
        attack(model, x, y - 1)
    with pytest.raises(InputError, match="integer class indices"):
        attack(model, x, y.float())
    with pytest.raises(InputError, match=r"at least 11x11 pixels.*Use cost='ssim'|at least 11x11"):
        PerceptualDRO("ssim")(model, x[..., :8, :8], y)
    assert "_label_max" not in vars(attack)  # no state kept between calls


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_loop_reads_only_at_compactions(data):
    import warnings

    model, x, y = data
    model = model.cuda()
    attack = PerceptualDRO(**{**ATTACKS["implicit"], "steps": 8})
    attack(model, x.cuda(), y.cuda())  # warm-up
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            res = attack(model, x.cuda(), y.cuda())
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [m for m in w if "synchroniz" in str(m.message)]
    # the input check, a compaction every 4 steps, the result's transfer back
    assert len(syncs) <= 8 // 4 + 6, [str(m.message) for m in syncs]
    ref = PerceptualDRO(**{**ATTACKS["implicit"], "steps": 8})
    ref._compact_every = 1
    torch.testing.assert_close(ref(model, x.cuda(), y.cuda()).images, res.images)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_refilled_working_batch_gives_the_same_attack(data, name):
    model, x, y = data
    attack = PerceptualDRO(**ATTACKS[name])
    ref = attack(model, x, y)
    rows = []
    hook = model.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    for window in (1, 5):
        rows.clear()
        attack._window = window
        got = attack(model, x, y)
        assert max(rows) <= window  # never more than the window at once
        assert torch.equal(ref.steps, got.steps) and torch.equal(ref.success, got.success)
        torch.testing.assert_close(got.images, ref.images, atol=5e-5, rtol=0)
        torch.testing.assert_close(got.margins, ref.margins, atol=1e-5, rtol=1e-5)
    hook.remove()
    attack._window = None
    # each sample passes through the model once per step and once for its last check: no extra work
    assert sum(rows) == int((ref.steps + 1).sum())


@pytest.mark.parametrize("padding", ["valid", "reflect"])
def test_ssim_value_fused_equals_piq_without_reads(padding):
    from geoaudit.attacks import SSIMCost

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 20, 20, generator=g, dtype=torch.float64)
    a = (x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    cost = SSIMCost(padding=padding)
    with count_reads() as c:
        v = cost.value(a, x)
    assert sum(c.values()) == 0 and v.shape == (3,)
    torch.testing.assert_close(v, cost(a, x), atol=1e-12, rtol=0)
    if padding == "valid":
        torch.testing.assert_close(v, cost.value_and_grad(a, cost.prepare(x))[0], atol=1e-12, rtol=0)
