"""JPEG and bit-depth defenses: properties on tiny synthetic images."""
import re

import numpy as np
import pytest
import torch

from geoaudit._errors import InputError
from geoaudit.defenses import JPEG, BitDepth


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    smooth = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(2, 3, 32, 32).clone()
    return (smooth + 0.05 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)


def test_bitdepth_levels_and_idempotent(images):
    out = BitDepth(bits=3)(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    levels = torch.unique(torch.round(out * 7))
    assert torch.allclose(out * 7, torch.round(out * 7), atol=1e-5) and len(levels) <= 8
    assert float((out - images).abs().max()) <= 0.5 / 7 + 1e-6
    torch.testing.assert_close(BitDepth(bits=3)(out), out)
    torch.testing.assert_close(BitDepth(bits=8)(images), torch.round(images * 255) / 255)


def test_jpeg_matches_pillow_and_keeps_type(images, device):
    from PIL import Image
    import io

    x = images.to(device=device, dtype=torch.float64)
    out = JPEG(quality=50)(x)
    assert out.shape == x.shape and out.dtype == torch.float64 and out.device == x.device
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # the same bytes as Pillow's own round trip
    a = (images[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=50)
    ref = np.asarray(Image.open(buf)).astype(np.float64) / 255
    np.testing.assert_allclose(out[0].cpu().permute(1, 2, 0).numpy(), ref)


def test_jpeg_quality_orders_error(images):
    err = [float((JPEG(quality=q)(images) - images).abs().mean()) for q in (10, 50, 95)]
    assert err[0] > err[1] > err[2] > 0


def test_jpeg_grey(images):
    out = JPEG(quality=75)(images[:, :1])
    assert out.shape == (2, 1, 32, 32)
    assert float((out - images[:, :1]).abs().mean()) < 0.05


@pytest.mark.parametrize("factory, name, bad", [
    (JPEG, "quality", 0), (JPEG, "quality", 101), (JPEG, "quality", 7.5), (BitDepth, "bits", 0),
    (BitDepth, "bits", 9),
])
def test_bad_parameters(factory, name, bad):
    with pytest.raises(InputError, match=re.escape(f"The '{name}' parameter of {factory.__name__} must be an int")):
        factory(bad)


def test_bad_images(images):
    with pytest.raises(InputError, match=r"values in \[0, 1\]"):
        JPEG(75)(images * 2)
    with pytest.raises(InputError, match="grey \\(1\\) or RGB \\(3\\)"):
        JPEG(75)(torch.rand(1, 4, 8, 8))
    with pytest.raises(InputError, match=r"shape \(N, C, H, W\)"):
        BitDepth(4)(images[0])
