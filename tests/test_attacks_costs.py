"""Perceptual costs: the fused SSIM gradient equals piq's, finite-difference sign checks, and the
PieAPP loading path.

PieAPP's real weights cannot be downloaded here, so these tests build the PieAPP network with
RANDOM weights ON PURPOSE, to test gradients, chunking and the loading path -- never its values
as a perceptual distance.
"""
import urllib.error
from unittest import mock

import piq
import pytest
import torch

from geoaudit._errors import DependencyError, InputError
from geoaudit.attacks import PIEAPP_ENV, PieAPPCost, SSIMCost, load_pieapp_network


def _pair(shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = 0.25 + 0.5 * torch.rand(shape, generator=g, dtype=dtype)
    return (x + 0.05 * torch.randn(shape, generator=g, dtype=dtype)).clamp(0, 1), x


@pytest.mark.parametrize("shape", [(3, 3, 16, 16), (2, 1, 28, 28), (2, 3, 40, 150), (1, 1, 384, 390)])
def test_fused_ssim_equals_piq(shape):
    x_adv, x = _pair(shape)
    cost = SSIMCost(padding="valid")
    value, grad = cost.value_and_grad(x_adv, cost.prepare(x))
    leaf = x_adv.clone().requires_grad_(True)
    ref = 1 - piq.ssim(leaf, x, data_range=1.0, reduction="none")
    (ref_grad,) = torch.autograd.grad(ref.sum(), [leaf])
    torch.testing.assert_close(value, ref.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(cost.autograd_value(x_adv, x), ref.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(cost(x_adv, x), ref.detach())


@pytest.mark.parametrize("shape", [(3, 3, 16, 16), (2, 1, 28, 28), (1, 3, 40, 150), (1, 1, 384, 390)])
def test_reflect_ssim_fast_path_equals_padded_autograd(shape):
    x_adv, x = _pair(shape)
    cost = SSIMCost(padding="reflect")
    value, grad = cost.value_and_grad(x_adv, cost.prepare(x))
    leaf = x_adv.clone().requires_grad_(True)
    f = cost._factor(x)
    a, b = (torch.nn.functional.avg_pool2d(t, f) if f > 1 else t for t in (leaf, x))
    # Independent reference: pad explicitly, then piq's valid-window SSIM.
    ref = 1 - piq.ssim(torch.nn.functional.pad(a, (5,) * 4, mode="reflect"),
                       torch.nn.functional.pad(b, (5,) * 4, mode="reflect"), data_range=1.0, reduction="none",
                       downsample=False)
    (ref_grad,) = torch.autograd.grad(ref.sum(), [leaf])
    torch.testing.assert_close(value, ref.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(cost(x_adv, x), ref.detach(), atol=1e-12, rtol=0)


def test_reflect_ssim_sees_the_border_as_much_as_the_centre():
    # The same perturbation in a 2-pixel corner patch and in a central patch: valid-window
    # SSIM barely sees the corner, reflect-padded SSIM sees it nearly as much as the centre.
    x = torch.full((1, 1, 32, 32), 0.5, dtype=torch.float64)
    corner, centre = x.clone(), x.clone()
    corner[..., :2, :2] += 0.3
    centre[..., 15:17, 15:17] += 0.3
    valid, reflect = SSIMCost(), SSIMCost(padding="reflect")
    assert float(valid(corner, x)) < 0.05 * float(valid(centre, x))
    assert float(reflect(corner, x)) > 0.3 * float(reflect(centre, x))


def test_ssim_select_rows():
    x_adv, x = _pair((4, 3, 16, 16))
    cost = SSIMCost()
    ref = cost.prepare(x)
    idx = torch.tensor([3, 1])
    v_sub, g_sub = cost.value_and_grad(x_adv[idx], cost.select(ref, idx))
    v, g = cost.value_and_grad(x_adv, ref)
    torch.testing.assert_close(v_sub, v[idx])
    torch.testing.assert_close(g_sub, g[idx])


def _fd_sign_check(cost, x_adv, x, h):
    """Central differences agree in sign with grad . v, along the unit gradient (where they
    must be > 0) and along random unit directions."""
    _, grad = cost.value_and_grad(x_adv, cost.prepare(x))
    g = torch.Generator().manual_seed(1)
    directions = [grad] + [torch.randn(x.shape, generator=g, dtype=x.dtype) for _ in range(2)]
    for i, v in enumerate(directions):
        v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        fd = cost(x_adv + h * v, x) - cost(x_adv - h * v, x)
        analytic = (grad * v).flatten(1).sum(1)
        if i == 0:
            assert (fd > 0).all()
        assert torch.equal(torch.sign(fd), torch.sign(analytic))


def test_ssim_gradient_sign_finite_differences():
    x_adv, x = _pair((3, 3, 16, 16))
    _fd_sign_check(SSIMCost(), x_adv, x, h=1e-5)


@pytest.fixture(scope="module")
def random_pieapp(tmp_path_factory):
    """A PieAPP network with random weights, built on purpose, saved like the released file."""
    from piq.pieapp import PieAPPModel

    torch.manual_seed(0)
    net = PieAPPModel()
    state = net.state_dict()
    state["ref_score_subtract.weight"] = state["ref_score_subtract.weight"].squeeze(1)  # as released
    path = tmp_path_factory.mktemp("pieapp") / "PieAPPv0.1.pth"
    torch.save(state, path)
    return net, path


def test_pieapp_equals_piq_and_chunks_agree(random_pieapp):
    net, path = random_pieapp
    sd = net.state_dict()
    with mock.patch("torch.hub.load_state_dict_from_url", return_value={**sd, "ref_score_subtract.weight":
                                                                         sd["ref_score_subtract.weight"].squeeze(1)}):
        reference = piq.PieAPP(reduction="none", data_range=1.0, enable_grad=True)
    x_adv, x = _pair((1, 3, 64, 91), dtype=torch.float32)  # 2 patches
    leaf = x_adv.clone().requires_grad_(True)
    ref = reference(leaf, x)
    (ref_grad,) = torch.autograd.grad(ref.sum(), [leaf])
    # whole images per chunk with cached clean features; then a budget below one patch: two
    # passes per image, one patch per chunk, clean features recomputed
    for cost in (PieAPPCost(network=net), PieAPPCost(network=net, memory_budget_mb=0.1)):
        prepared = cost.prepare(x)
        assert ("feat" in prepared) == (cost.memory_budget_mb > 1)
        value, grad = cost.value_and_grad(x_adv, prepared)
        torch.testing.assert_close(value, ref.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-7)


def test_pieapp_gradient_sign_finite_differences(random_pieapp):
    net, _ = random_pieapp
    x_adv, x = _pair((1, 3, 64, 64), dtype=torch.float32)
    _fd_sign_check(PieAPPCost(network=net), x_adv, x, h=1e-3)


def test_pieapp_loads_from_argument_and_env(random_pieapp, monkeypatch):
    net, path = random_pieapp
    with mock.patch("torch.hub.load_state_dict_from_url", side_effect=AssertionError("no download expected")):
        loaded = load_pieapp_network(path)
        monkeypatch.setenv(PIEAPP_ENV, str(path))
        from_env = PieAPPCost().network()
    for other in (loaded, from_env):
        assert not any(p.requires_grad for p in other.parameters())
        for k, v in net.state_dict().items():
            assert torch.equal(other.state_dict()[k], v)


def test_pieapp_missing_file_says_how(tmp_path, monkeypatch):
    monkeypatch.delenv(PIEAPP_ENV, raising=False)
    with pytest.raises(DependencyError, match="does not exist") as e:
        load_pieapp_network(tmp_path / "nope.pth")
    assert "PieAPPv0.1.pth" in str(e.value) and PIEAPP_ENV in str(e.value) and "--pieapp-weights" in str(e.value)
    monkeypatch.setenv(PIEAPP_ENV, str(tmp_path / "also_nope.pth"))
    with pytest.raises(DependencyError, match="environment variable"):
        load_pieapp_network()


def test_pieapp_offline_raises_never_random(monkeypatch):
    monkeypatch.delenv(PIEAPP_ENV, raising=False)
    with mock.patch("torch.hub.load_state_dict_from_url", side_effect=urllib.error.URLError("offline")):
        with pytest.raises(DependencyError, match="could not be downloaded"):
            PieAPPCost().network()


def test_pieapp_bad_file(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(DependencyError, match="not a PieAPP state dict"):
        load_pieapp_network(bad)


def test_pieapp_small_images():
    cost = PieAPPCost(network=torch.nn.Identity())
    with pytest.raises(InputError, match="at least 64x64 pixels, got 32x32"):
        cost.prepare(torch.rand(1, 3, 32, 32))
