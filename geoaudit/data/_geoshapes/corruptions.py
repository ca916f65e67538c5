"""Image capture quality: the corruption behind GeoShapes' capture-quality bias, public so that
training can use it as augmentation (the oracle that removes that bias).

One severity in [0, 1] sets four degradations of a cheap camera, applied in this order:
blur (optics, focus, motion), under-exposure (low light), sensor noise, and JPEG-style
compression.  Severity 0 returns the input unchanged.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from geoaudit._errors import InputError

#: At severity 1: Gaussian blur sd in pixels per 32 pixels of image side, the fraction of the
#: light lost, the sensor noise sd (on [0, 1] intensities), and the JPEG quality.
MAX_BLUR_PER_32PX = 1.0
MAX_DARKENING = 0.5
MAX_SENSOR_NOISE = 0.08
JPEG_QUALITY_RANGE = (90, 20)  # quality at severity -> 0 and at severity 1

_CALLER = "capture_corruption"

# the IJG (libjpeg) base quantization tables, JPEG standard Annex K
_Q_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float32).reshape(8, 8)
_Q_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=np.float32).reshape(8, 8)
_k = np.arange(8)
_DCT = (np.sqrt(np.where(_k == 0, 1.0, 2.0) / 8)[:, None]
        * np.cos((2 * _k[None, :] + 1) * _k[:, None] * np.pi / 16)).astype(np.float32)  # orthonormal DCT-II
_RGB2YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                    dtype=np.float32)
_YCC2RGB = np.linalg.inv(_RGB2YCC).astype(np.float32)
_DCT2 = np.kron(_DCT, _DCT)  # the 2-D DCT of a flattened 8x8 block


def capture_parameters(severity, image_size):
    """What a capture severity means in pixels.

    Parameters
    ----------
    severity : float or array_like
        Severity in [0, 1].
    image_size : int
        Image side in pixels (the blur scales with it, so a severity looks alike at any size).

    Returns
    -------
    dict of numpy.ndarray
        ``blur_sigma_px`` (Gaussian blur sd in pixels, ``severity * image_size / 32``),
        ``exposure`` (intensity multiplier, ``1 - 0.5 severity``), ``sensor_noise_sd``
        (Gaussian sd on [0, 1] intensities, ``0.08 severity``) and ``jpeg_quality``
        (``round(90 - 70 severity)``, 0 meaning no compression at severity 0).
    """
    s = np.asarray(severity, dtype=np.float64)
    q0, q1 = JPEG_QUALITY_RANGE
    return {
        "blur_sigma_px": MAX_BLUR_PER_32PX * s * image_size / 32.0,
        "exposure": 1.0 - MAX_DARKENING * s,
        "sensor_noise_sd": MAX_SENSOR_NOISE * s,
        "jpeg_quality": np.where(s > 0, np.rint(q0 + (q1 - q0) * s), 0).astype(np.int64),
    }


def _rng(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    if type(random_state).__module__.startswith("torch") and type(random_state).__name__ == "Generator":
        import torch

        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=random_state).item()))
    if random_state is None or (isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)
                                and random_state >= 0):
        return np.random.default_rng(random_state)
    raise InputError(f"The 'random_state' parameter of {_CALLER} must be a non-negative int, a "
                     f"numpy.random.Generator, a torch.Generator or None. Got {random_state!r} instead.")


def _blur_matrices(sigma, n_px):
    """(n, n_px, n_px) Gaussian blur operators, one per sd, with reflect padding folded in."""
    r = max(1, int(math.ceil(3.0 * float(sigma.max()))))
    t = np.arange(-r, r + 1)
    w = np.exp(-0.5 * (t[None, :] / np.maximum(sigma, 1e-3)[:, None]) ** 2).astype(np.float32)
    w /= w.sum(axis=1, keepdims=True)
    src = np.arange(n_px)[:, None] + t[None, :]  # (n_px, taps): the pixel each tap reads
    period = max(2 * (n_px - 1), 1)
    src = np.abs(np.mod(src, period))
    src = np.where(src >= n_px, period - src, src)  # reflect about the edge pixels
    m = np.zeros((len(sigma), n_px, n_px), dtype=np.float32)
    rows = np.arange(n_px)
    for k in range(len(t)):
        np.add.at(m, (slice(None), rows, src[:, k]), w[:, k][:, None])
    return m


def _blur(x, sigma):
    """Separable Gaussian blur of (n, c, h, w) float32 with one sd per image: two batched
    matrix products (much faster than shifted sums for small images)."""
    h, w = x.shape[-2:]
    mv = _blur_matrices(sigma, h)
    mh = mv if w == h else _blur_matrices(sigma, w)
    return (mv[:, None] @ x) @ mh[:, None].transpose(0, 1, 3, 2)


def _sandwich(op, blocks):
    """``m @ B @ m.T`` for every 8x8 block B of ``blocks`` (..., 8, 8), given ``op`` =
    kron(m, m): one GEMM on the flattened blocks."""
    shape = blocks.shape
    return (np.ascontiguousarray(blocks).reshape(-1, 64) @ op.T).reshape(shape)


def _jpeg(x, quality):
    """JPEG's lossy step on (n, 3, h, w) float32 in [0, 1]: YCbCr, 8x8 DCT, quantization with
    the IJG tables scaled to ``quality`` (one per image), and back (no chroma subsampling)."""
    n, c, h, w = x.shape
    ph, pw = -h % 8, -w % 8
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
    hh, ww = x.shape[-2:]
    y = (_RGB2YCC @ (x * 255.0).reshape(n, 3, -1)).reshape(n, 3, hh, ww)
    y[:, 0] -= 128.0
    q = quality.astype(np.float32)
    scale = np.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)[:, None, None]  # IJG quality scaling
    tables = np.stack([np.maximum(np.floor((base[None] * scale + 50.0) / 100.0), 1.0)
                       for base in (_Q_LUMA, _Q_CHROMA, _Q_CHROMA)], axis=1)  # (n, 3, 8, 8)
    b = y.reshape(n, 3, hh // 8, 8, ww // 8, 8).transpose(0, 1, 2, 4, 3, 5)  # (n, 3, bh, bw, 8, 8)
    coef = _sandwich(_DCT2, b)
    tq = tables[:, :, None, None]
    coef = np.rint(coef / tq) * tq
    b = _sandwich(_DCT2.T, coef)
    y = b.transpose(0, 1, 2, 4, 3, 5).reshape(n, 3, hh, ww)
    y[:, 0] += 128.0
    out = (_YCC2RGB @ y.reshape(n, 3, -1)).reshape(n, 3, hh, ww) / 255.0
    return out[:, :, :h, :w].astype(np.float32, copy=False)


def corrupt_nchw(x, severity, rng):
    """Apply the capture corruption in place to float32 (n, c, h, w) images in [0, 1] whose
    severity is > 0 (others untouched); returns ``x``."""
    sev = np.asarray(severity, dtype=np.float64)
    idx = np.flatnonzero(sev > 0)
    if len(idx) == 0:
        return x
    s = sev[idx]
    p = capture_parameters(s, x.shape[-2])
    y = _blur(x[idx], p["blur_sigma_px"])
    y *= p["exposure"].astype(np.float32)[:, None, None, None]
    y += rng.standard_normal(y.shape, dtype=np.float32) * p["sensor_noise_sd"].astype(np.float32)[:, None, None, None]
    np.clip(y, 0.0, 1.0, out=y)
    if y.shape[1] == 3:
        y = _jpeg(y, p["jpeg_quality"])
    else:  # grey images: the luminance table on each channel
        y = np.concatenate([_jpeg(np.repeat(y[:, i:i + 1], 3, axis=1), p["jpeg_quality"])[:, :1]
                            for i in range(y.shape[1])], axis=1)
    np.clip(y, 0.0, 1.0, out=y)
    x[idx] = y
    return x


def capture_corruption(images, severity, *, random_state=None):
    """Degrade images as a poor camera would: blur, low light, sensor noise, JPEG compression.

    The corruption behind GeoShapes' capture-quality bias (``capture_strength``), public so
    that training can use it as augmentation: draw a severity per image, e.g.
    ``torch.rand(n)``, and train on the corrupted batch.

    Parameters
    ----------
    images : numpy.ndarray or torch.Tensor
        uint8 (0-255) or float (in [0, 1]) images.  numpy arrays are channels-last,
        (N, H, W, C) or one (H, W, C) image (PIL's and ``datasets``' layout); torch tensors are
        channels-first, (N, C, H, W) or (C, H, W) (geoaudit's model input).  C is 1 or 3.
    severity : float or array_like of shape (N,)
        In [0, 1], one for all images or one per image.  At severity ``s`` the image is
        blurred by a Gaussian of sd ``s * H / 32`` pixels, multiplied by ``1 - 0.5 s``, given
        Gaussian noise of sd ``0.08 s``, clipped, and passed through JPEG's lossy step
        (8x8 DCT in YCbCr quantized with the IJG tables at quality ``round(90 - 70 s)``, no
        chroma subsampling).  0 returns the image unchanged.  See ``capture_parameters``.
    random_state : int, numpy.random.Generator, torch.Generator or None
        Source of the sensor noise (the only random step): the same value gives the same output.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        The corrupted images: same type, shape, dtype (uint8 rounded) and device as ``images``.

    Raises
    ------
    InputError
        Wrong type, shape, dtype or value range of ``images``, or ``severity`` outside [0, 1]
        or of the wrong length.
    """
    is_torch = type(images).__module__.startswith("torch")
    if is_torch:
        arr = images.detach().cpu().numpy()
        layout = "nchw"
    elif isinstance(images, np.ndarray):
        arr = images
        layout = "nhwc"
    else:
        raise InputError(f"The 'images' parameter of {_CALLER} must be a numpy array or a torch tensor. "
                         f"Got {type(images).__name__} instead.")
    if arr.ndim not in (3, 4):
        raise InputError(f"The 'images' parameter of {_CALLER} must have 3 or 4 dimensions "
                         f"({'(N, C, H, W)' if is_torch else '(N, H, W, C)'}). Got shape {tuple(arr.shape)} instead.")
    single = arr.ndim == 3
    a = arr[None] if single else arr
    a = a if layout == "nchw" else a.transpose(0, 3, 1, 2)
    if a.shape[1] not in (1, 3):
        raise InputError(f"The 'images' parameter of {_CALLER} must have 1 or 3 channels "
                         f"({'channels-first' if is_torch else 'channels-last'}). Got shape {tuple(arr.shape)} instead.")
    if arr.dtype == np.uint8:
        x = a.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        x = a.astype(np.float32, copy=True)
        if x.size and (not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0):
            raise InputError(f"The 'images' parameter of {_CALLER} must hold floats in [0, 1] (or uint8). "
                             f"Got values in [{float(np.nanmin(x)):.4g}, {float(np.nanmax(x)):.4g}] instead.")
    else:
        raise InputError(f"The 'images' parameter of {_CALLER} must be uint8 or float. Got dtype {arr.dtype} instead.")
    n = x.shape[0]
    sev = np.asarray(severity, dtype=np.float64)
    if sev.ndim == 0:
        sev = np.full(n, float(sev))
    if sev.shape != (n,):
        raise InputError(f"The 'severity' parameter of {_CALLER} must be a float or one value per image ({n}). "
                         f"Got shape {sev.shape} instead.")
    if not np.isfinite(sev).all() or (n and (sev.min() < 0.0 or sev.max() > 1.0)):
        raise InputError(f"The 'severity' parameter of {_CALLER} must be in [0, 1]. Got values in "
                         f"[{float(np.nanmin(sev)):.4g}, {float(np.nanmax(sev)):.4g}] instead.")
    rng = _rng(random_state)
    if not (sev > 0).any():
        return images.clone() if is_torch else images.copy()
    y = corrupt_nchw(x, sev, rng)
    if arr.dtype == np.uint8:
        y = np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)
        keep = sev == 0  # exact identity where nothing was done
        y[keep] = a[keep]
    else:
        y = y.astype(arr.dtype, copy=False)
        y[sev == 0] = a[sev == 0]
    if layout == "nhwc":
        y = y.transpose(0, 2, 3, 1)
    y = np.ascontiguousarray(y[0] if single else y)
    if is_torch:
        import torch

        return torch.from_numpy(y).to(device=images.device, dtype=images.dtype)
    return y
