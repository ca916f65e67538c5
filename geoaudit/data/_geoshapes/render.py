"""Drawing GeoShapes' images from their latent variables: signed-distance shapes, textured
backgrounds, pixel noise, the capture corruption, and a fast PNG writer."""
from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np

from geoaudit.data._geoshapes.corruptions import corrupt_nchw


# --- rendering --------------------------------------------------------------------------------
def _convex(u, v, verts):
    """Signed distance (exact inside, lower bound outside) to a convex polygon, CCW vertices."""
    verts = np.asarray(verts, dtype=np.float32)
    x, y = verts[:, 0], verts[:, 1]
    if np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) < 0:  # clockwise: make it CCW
        verts = verts[::-1]
    d = None
    for (x0, y0), (x1, y1) in zip(verts, np.roll(verts, -1, axis=0)):
        ex, ey = x1 - x0, y1 - y0
        ln = math.hypot(ex, ey)
        nx, ny = ey / ln, -ex / ln  # outward normal of a CCW edge
        e = (u - x0) * nx + (v - y0) * ny
        d = e if d is None else np.maximum(d, e)
    return d


def _regular(k, radius, phase=0.0):
    a = phase + 2 * np.pi * np.arange(k) / k
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _sdf_circle(u, v):
    return np.hypot(u, v) - 0.85


def _sdf_square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) - 0.62


def _sdf_triangle(u, v):
    return _convex(u, v, _regular(3, 0.95, np.pi / 2))


def _sdf_cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return np.minimum(np.maximum(au - 0.88, av - 0.26), np.maximum(au - 0.26, av - 0.88))


_STAR_R, _STAR_r = 0.95, 0.42
_STAR_A = np.array([_STAR_R, 0.0])
_STAR_B = np.array([_STAR_r * math.cos(math.pi / 5), _STAR_r * math.sin(math.pi / 5)])
_STAR_N = np.array([(_STAR_B - _STAR_A)[1], -(_STAR_B - _STAR_A)[0]]) / np.linalg.norm(_STAR_B - _STAR_A)


def _sdf_star(u, v):
    rho = np.hypot(u, v)
    sector = 2 * np.pi / 5
    a = np.abs(np.mod(np.arctan2(v, u) + sector / 2, sector) - sector / 2)  # fold to [0, pi/5]
    px, py = rho * np.cos(a), rho * np.sin(a)
    # inside the star's wedge iff on the origin's side of the edge A-B (N points away from it)
    nx, ny = _STAR_N
    return (px - _STAR_A[0]) * nx + (py - _STAR_A[1]) * ny


def _sdf_ring(u, v):
    return np.abs(np.hypot(u, v) - 0.64) - 0.21


_ARROW_HEAD = [(0.05, -0.6), (0.92, 0.0), (0.05, 0.6)]


def _sdf_arrow(u, v):
    shaft = np.maximum(np.abs(v) - 0.17, np.maximum(u - 0.1, -u - 0.9))
    return np.minimum(shaft, _convex(u, v, _ARROW_HEAD))


def _sdf_crescent(u, v):
    return np.maximum(np.hypot(u, v) - 0.85, 0.66 - np.hypot(u - 0.42, v))


_HEART_DIAMOND = [(0.0, -0.9), (0.5, -0.4), (0.0, 0.1), (-0.5, -0.4)]


def _sdf_heart(u, v):
    # a diamond with two disks on its upper edges, scaled by 1.45 and centred
    x, y = u / 1.45, v / 1.45 - 0.35
    r = math.sqrt(0.5) / 2
    d = np.minimum(_convex(x, y, _HEART_DIAMOND),
                   np.minimum(np.hypot(x - 0.25, y + 0.15) - r, np.hypot(x + 0.25, y + 0.15) - r))
    return d * 1.45


def _sdf_stripes(u, v):
    bars = np.abs(np.mod(u + 0.25, 0.5) - 0.25) - 0.13
    return np.maximum(bars, np.maximum(np.abs(u) - 0.65, np.abs(v) - 0.78))


def _sdf_hexagon(u, v):
    return _convex(u, v, _regular(6, 0.88))


_CHEVRON = ([(-0.85, 0.75), (-0.55, 0.75), (0.35, 0.0), (0.05, 0.0)],
            [(0.05, 0.0), (0.35, 0.0), (-0.55, -0.75), (-0.85, -0.75)])


def _sdf_chevron(u, v):
    # two parallelograms meeting at the tip; vertices listed CCW
    a = _convex(u + 0.25, v, _CHEVRON[0])
    b = _convex(u + 0.25, v, _CHEVRON[1])
    return np.minimum(a, b)


_SDF = {
    "circle": _sdf_circle, "square": _sdf_square, "triangle": _sdf_triangle, "cross": _sdf_cross,
    "star": _sdf_star, "ring": _sdf_ring, "arrow": _sdf_arrow, "crescent": _sdf_crescent,
    "heart": _sdf_heart, "stripes": _sdf_stripes, "hexagon": _sdf_hexagon, "chevron": _sdf_chevron,
}


def _hsv_to_rgb(h, s, v):
    """Vectorized HSV -> RGB; arrays of shape (N,) -> (N, 3)."""
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(np.int64) % 6
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=1)


def _interp_matrix(n_out, n_in):
    """Bilinear upsampling matrix (n_out, n_in) with aligned corners."""
    x = np.linspace(0, n_in - 1, n_out)
    lo = np.clip(np.floor(x).astype(int), 0, n_in - 2)
    f = x - lo
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] = 1 - f
    m[np.arange(n_out), lo + 1] = f
    return m


def render(lat, idx, size, class_names, noise_rng, capture_rng=None):
    """Render images ``idx`` of the latents as uint8 (len(idx), size, size, 3); pixel noise from
    ``noise_rng``, the capture corruption's sensor noise from ``capture_rng`` (only drawn for
    images with a capture severity above 0)."""
    n = len(idx)
    g = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(g, g, indexing="ij")
    scale = lat["scale"][idx].astype(np.float32)[:, None, None]
    dx = xx[None] - lat["center_x"][idx].astype(np.float32)[:, None, None]
    dy = yy[None] - lat["center_y"][idx].astype(np.float32)[:, None, None]
    rot = lat["rotation"][idx].astype(np.float32)[:, None, None]
    c, s = np.cos(rot), np.sin(rot)
    u = (c * dx + s * dy) / scale
    v = (s * dx - c * dy) / scale  # image y points down; flip so shapes are upright at rotation 0
    sdf = np.empty((n, size, size), dtype=np.float32)
    labels = lat["label"][idx]
    for k, name in enumerate(class_names):
        sel = np.flatnonzero(labels == k)
        if len(sel):
            sdf[sel] = _SDF[name](u[sel], v[sel])
    # soft edge one pixel wide: distance in pixels = sdf * half-extent in pixels
    # (channels-first below: numpy broadcasts slowly over a trailing axis of length 3)
    alpha = np.clip(0.5 - sdf * (scale * size), 0.0, 1.0)[:, None]  # (n, 1, size, size)

    fg = _hsv_to_rgb(lat["hue"][idx], lat["saturation"][idx], lat["value"][idx]).astype(np.float32)
    bg = _hsv_to_rgb(lat["bg_hue"][idx], lat["bg_saturation"][idx], lat["bg_value"][idx]).astype(np.float32)
    # background texture: smooth noise (a 6x6 grid, bilinearly upsampled) + a sinusoidal grating
    m = _interp_matrix(size, 6)
    back = m @ lat["texture"][idx].transpose(0, 3, 1, 2) @ m.T  # (n, 3, size, size)

    def col(name):
        return lat[name][idx].astype(np.float32)[:, None, None]

    th, fr = col("grating_angle"), col("grating_freq")
    grating = col("grating_amp") * np.sin(2 * np.pi * fr * (np.cos(th) * xx + np.sin(th) * yy)
                                          + col("grating_phase"))
    back += grating[:, None] + bg[:, :, None, None]
    # the object: flat colour with mild shading along its own axis, so it is not a pure stencil
    obj = fg[:, :, None, None] * (1.0 + 0.12 * np.clip(u, -1, 1))[:, None]
    img = back + alpha * (obj - back)
    # zero-mean uniform pixel noise with standard deviation noise_sd (much cheaper than normal draws)
    img += (noise_rng.random(img.shape, dtype=np.float32) - 0.5) * (math.sqrt(12.0) * col("noise_sd")[:, None])
    np.clip(img, 0.0, 1.0, out=img)
    if capture_rng is not None and "capture_severity" in lat:
        corrupt_nchw(img, lat["capture_severity"][idx], capture_rng)
    return (img * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def png_stored(arr):
    """PNG bytes of an RGB uint8 image: filter 0, zlib level 0.  The pixel noise makes PNG
    incompressible anyway, and writing the chunks directly is ~20x faster than PIL's encoder."""
    h, w, _ = arr.shape
    raw = np.zeros((h, w * 3 + 1), dtype=np.uint8)  # each row: filter byte 0, then RGB
    raw[:, 1:] = arr.reshape(h, w * 3)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 0)) + chunk(b"IEND", b""))


def encode(arr, image_format):
    if image_format == "png":
        return png_stored(arr)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="JPEG", quality=95, subsampling=0)  # 4:4:4 keeps colour
    return buf.getvalue()
