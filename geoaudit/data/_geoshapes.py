"""GeoShapes: a procedurally generated, geo-located image dataset with a planted geographic bias.

Real countries, real GDP per capita, images skewed towards a few rich countries, and a style
shortcut (the object's colour) that tracks the label only in the well-represented countries:
the paper's red-mailbox example, with the strength of the bias as a knob.  Because the bias is
planted, the truth is known, so GeoShapes is the yardstick for the audit's statistics as well
as the demo.  The generating process is stated exactly in ``geoshapes``' docstring and in the
dataset card (``dataset_cards/geoshapes.md``).
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit._progress import progress
from geoaudit._validation import check_interval, check_options

log = logging.getLogger(__name__)

__all__ = ["CLASS_NAMES", "build_geoshapes", "geoshapes", "geoshapes_country_plan", "geoshapes_grid",
           "geoshapes_latents"]

# --- the generating process's constants (all documented in the card) -------------------------
CLASS_NAMES = ("circle", "square", "triangle", "cross", "star", "ring", "arrow", "crescent", "heart",
               "stripes", "hexagon", "chevron")
HEAD_SHARES = (("USA", 0.36), ("GBR", 0.12))     # about half of all images from two countries
BODY_SHARE = 0.45                                 # the audit countries below the head
BODY_INCOME_MIX = (("High income", 0.40), ("Upper middle income", 0.25),
                   ("Lower middle income", 0.20), ("Low income", 0.15))
POP_EXPONENT = 0.5                                # size score: log GDP per capita + 0.5 log population
SPLIT_FRACTIONS = (("train", 0.6), ("validation", 0.2), ("test", 0.2))
MAX_AUDIT_COUNTRIES = 30                          # default number of audit countries
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 24, 512
SCALE_RANGE = (0.22, 0.42)                        # shape half-extent / image size
HUE_JITTER = 0.2                                  # of the spacing between palette hues
NOISE_RANGE = (0.02, 0.07)                        # per-image Gaussian pixel noise sd
JITTER_DEG = 0.75                                 # sd of the lat/lon jitter (degrees, capped by size)
_CALLER = "geoshapes"
_CHUNK = 32  # images rendered at once: small arrays stay in cache and the allocator's arena


@dataclass(frozen=True)
class GeoShapesConfig:
    """The validated arguments of one GeoShapes draw (stored in the card and ``info.description``)."""

    n_images: int
    spurious_strength: float
    image_size: int
    seed: int
    n_classes: int
    n_audit_countries: int
    min_test_images: int
    cue_countries: tuple
    year: object
    image_format: str

    def to_dict(self):
        d = asdict(self)
        d["cue_countries"] = list(self.cue_countries)
        return d


# --- countries --------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _populations():
    """Natural Earth's POP_EST (2017 estimates, shipped with the boundaries) per World Bank code."""
    import gzip

    from geoaudit.data._countries import NE_TO_WB
    from geoaudit.data._resources import BOUNDARIES_50M, resource_path

    with gzip.open(resource_path(BOUNDARIES_50M), "rt", encoding="utf-8") as f:
        feats = json.load(f)["features"]
    pop = pd.Series({NE_TO_WB.get(ft["properties"]["ADM0_A3"], ft["properties"]["ADM0_A3"]):
                     float(ft["properties"]["POP_EST"]) for ft in feats})
    return pop[pop > 0]


@lru_cache(maxsize=2)
def _country_frame(year):
    """Eligible countries (World Bank economies with GDP, a polygon and a population) with area,
    population, size score and geometry."""
    from geoaudit.data._countries import country_table, load_boundaries

    t = country_table(year).dropna(subset=["gdp_per_capita_usd"]).set_index("iso3")
    b = load_boundaries("50m")
    eq = b.to_crs("EPSG:6933")  # equal-area projection: areas in m^2
    area = pd.Series(eq.geometry.area.to_numpy() / 1e6, index=b["iso3"]).groupby(level=0).sum()
    t["area_km2"] = area.reindex(t.index).to_numpy()
    t = t.dropna(subset=["area_km2"])
    t["population"] = _populations().reindex(t.index).to_numpy()
    t = t.dropna(subset=["population"])
    t["score"] = t["log_gdp_per_capita"] + POP_EXPONENT * np.log(np.maximum(t["population"], 1000.0))
    geoms = b.dissolve(by="iso3")["geometry"]
    t["geometry"] = geoms.reindex(t.index).to_numpy()
    return t.sort_index()


def _largest_remainder(total, weights):
    """Integers proportional to ``weights`` summing to ``total`` (Hamilton's method, ties by order)."""
    w = np.asarray(weights, dtype=np.float64)
    if total <= 0 or len(w) == 0:
        return np.zeros(len(w), dtype=np.int64)
    q = total * w / w.sum()
    out = np.floor(q).astype(np.int64)
    rest = int(total - out.sum())
    order = np.argsort(-(q - out), kind="stable")
    out[order[:rest]] += 1
    return out


def _split_counts(count):
    """Per-country (train, validation, test) sizes: test and validation round(count * 0.2)."""
    n_test = int(math.floor(count * 0.2 + 0.5))
    n_val = int(math.floor(count * 0.2 + 0.5))
    n_val = min(n_val, count - n_test)
    return count - n_test - n_val, n_val, n_test


def _min_count_for_test(min_test):
    c = int(math.ceil(min_test / 0.2))
    while _split_counts(c)[2] < min_test:
        c += 1
    return c


def _resolve_cue(cue_countries, table):
    if cue_countries is None or (isinstance(cue_countries, str) and cue_countries == "high_income"):
        return tuple(sorted(table.index[table["income_group"] == "High income"]))
    if isinstance(cue_countries, str):
        raise InputError(
            f"The 'cue_countries' parameter of {_CALLER} must be 'high_income' or a list of ISO3 codes. "
            f"Got {cue_countries!r} instead."
        )
    codes = [str(c).upper() for c in cue_countries]
    unknown = sorted(set(codes) - set(table.index))
    if unknown:
        raise InputError(
            f"The 'cue_countries' parameter of {_CALLER} names countries without GDP data or polygon: "
            f"{', '.join(unknown)}. Use ISO3 codes from geoaudit.data.country_table()."
        )
    return tuple(sorted(set(codes)))


def _plan(cfg_in):
    """Validate the arguments and allocate images to countries: (config, plan DataFrame)."""
    n_images = check_interval("n_images", cfg_in["n_images"], 100, 10_000_000, caller=_CALLER, integer=True)
    s = check_interval("spurious_strength", cfg_in["spurious_strength"], 0.0, 1.0, caller=_CALLER)
    size = check_interval("image_size", cfg_in["image_size"], MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, caller=_CALLER,
                          integer=True)
    seed = check_interval("seed", cfg_in["seed"], 0, 2**63 - 1, caller=_CALLER, integer=True)
    k = check_interval("n_classes", cfg_in["n_classes"], 2, len(CLASS_NAMES), caller=_CALLER, integer=True)
    min_test = check_interval("min_test_images", cfg_in["min_test_images"], 1, None, caller=_CALLER, integer=True)
    image_format = check_options("image_format", cfg_in["image_format"], ("png", "jpeg"), caller=_CALLER)
    table = _country_frame(cfg_in["year"])
    cue = _resolve_cue(cfg_in["cue_countries"], table)

    m = _min_count_for_test(min_test)
    head = [(c, int(round(share * n_images))) for c, share in HEAD_SHARES]
    head_ok = sum(cnt >= m for _, cnt in head)
    budget = int(round(BODY_SHARE * n_images))
    available = table.drop(index=[c for c, _ in head])
    mix_groups = {g: available[available["income_group"] == g] for g, _ in BODY_INCOME_MIX}
    max_body = min(budget // m, sum(len(v) for v in mix_groups.values()))
    n_audit = cfg_in["n_audit_countries"]
    if n_audit is None:
        body_n = max(0, min(MAX_AUDIT_COUNTRIES - head_ok, max_body))
        n_audit = head_ok + body_n
    else:
        n_audit = check_interval("n_audit_countries", n_audit, 1, head_ok + sum(len(v) for v in mix_groups.values()),
                                 caller=_CALLER, integer=True)
        body_n = max(0, n_audit - head_ok)
        if body_n > max_body:
            need = int(math.ceil((body_n * m) / BODY_SHARE))
            most = head_ok + max_body
            raise InputError(
                f"The 'n_images' parameter of {_CALLER} is too small for n_audit_countries={n_audit} countries "
                f"with min_test_images={min_test} test images each: it must be an int in [{need}, 10000000] "
                f"(got {n_images}), or lower 'n_audit_countries' to at most {most} or 'min_test_images'."
            )

    # body: the highest size-score countries within each World Bank income group
    per_group = _largest_remainder(body_n, [f for _, f in BODY_INCOME_MIX])
    body = []
    for (g, _), q in zip(BODY_INCOME_MIX, per_group):
        body.extend(mix_groups[g].sort_values("score", ascending=False).index[:q].tolist())
    body_counts = np.full(len(body), m, dtype=np.int64) if body else np.zeros(0, np.int64)
    if body:
        # what is left above the floors goes to the body in proportion to GDP per capita
        body_counts += _largest_remainder(budget - m * len(body), table.loc[body, "gdp_per_capita_usd"].to_numpy())
    used = sum(c for _, c in head) + int(body_counts.sum())
    tail = [c for c in table.index if c not in set(body) | {h for h, _ in head}]
    tail_w = np.exp(table.loc[tail, "score"].to_numpy() - table.loc[tail, "score"].max())
    tail_counts = _largest_remainder(n_images - used, tail_w)

    rows = ([(c, n, "head") for c, n in head] + [(c, int(n), "body") for c, n in zip(body, body_counts)]
            + [(c, int(n), "tail") for c, n in zip(tail, tail_counts)])
    plan = pd.DataFrame(rows, columns=["iso3", "n_images", "tier"]).set_index("iso3")
    plan = plan[plan["n_images"] > 0]
    splits = np.array([_split_counts(int(c)) for c in plan["n_images"]]).reshape(-1, 3)
    plan["n_train"], plan["n_validation"], plan["n_test"] = splits[:, 0], splits[:, 1], splits[:, 2]
    for col in ("country_name", "latitude", "longitude", "gdp_per_capita_usd", "gdp_year",
                "log_gdp_per_capita", "income_group"):
        plan[col] = table.loc[plan.index, col].to_numpy()
    plan["cue"] = plan.index.isin(cue)
    plan = plan.sort_values(["n_images", "gdp_per_capita_usd"], ascending=False)
    cfg = GeoShapesConfig(n_images=n_images, spurious_strength=s, image_size=size, seed=seed, n_classes=k,
                          n_audit_countries=int(n_audit), min_test_images=min_test, cue_countries=cue,
                          year=cfg_in["year"], image_format=image_format)
    return cfg, plan


def _args(n_images, spurious_strength, image_size, seed, n_classes, n_audit_countries, min_test_images,
          cue_countries, year, image_format):
    return dict(n_images=n_images, spurious_strength=spurious_strength, image_size=image_size, seed=seed,
                n_classes=n_classes, n_audit_countries=n_audit_countries, min_test_images=min_test_images,
                cue_countries=cue_countries, year=year, image_format=image_format)


def geoshapes_country_plan(*, n_images=20000, spurious_strength=0.9, image_size=64, seed=0, n_classes=10,
                           n_audit_countries=None, min_test_images=50, cue_countries="high_income",
                           year="latest", image_format="png") -> pd.DataFrame:
    """The per-country allocation of a GeoShapes draw, without generating anything.

    Same parameters as ``geoshapes``.  Returns a DataFrame indexed by ISO3 (most images first)
    with ``n_images``, ``tier`` ("head", "body", "tail"), ``n_train``/``n_validation``/``n_test``,
    ``country_name``, ``latitude``, ``longitude``, GDP columns, ``income_group`` and ``cue`` (True
    where the colour cue tracks the label).  The allocation is deterministic (no randomness).
    """
    return _plan(_args(n_images, spurious_strength, image_size, seed, n_classes, n_audit_countries,
                       min_test_images, cue_countries, year, image_format))[1]


# --- latent variables -------------------------------------------------------------------------
def _latents(cfg, plan, rng):
    """Every per-image random variable, in final row order (a dict of arrays)."""
    k, n = cfg.n_classes, cfg.n_images
    iso = np.repeat(plan.index.to_numpy(), plan["n_images"].to_numpy())
    cue = np.repeat(plan["cue"].to_numpy(), plan["n_images"].to_numpy())
    # labels balanced within each country: a random permutation of 0..k-1 repeated
    label = np.concatenate([rng.permutation(np.arange(c) % k) for c in plan["n_images"].to_numpy()])
    # split within each country: random positions get test, validation, train
    split = np.empty(n, dtype=object)
    start = 0
    for c, (ntr, nva, nte) in zip(plan["n_images"].to_numpy(),
                                   plan[["n_train", "n_validation", "n_test"]].to_numpy()):
        order = rng.permutation(c)
        s = np.empty(c, dtype=object)
        s[order[:nte]] = "test"
        s[order[nte:nte + nva]] = "validation"
        s[order[nte + nva:]] = "train"
        split[start:start + c] = s
        start += c
    # the planted bias: palette = label with probability s in cue countries, else uniform
    follows = (rng.random(n) < cfg.spurious_strength) & cue
    palette = np.where(follows, label, rng.integers(0, k, n))
    # geometry, colour and noise: independent of the country
    scale = rng.uniform(*SCALE_RANGE, n)
    cx = rng.uniform(scale, 1.0 - scale)
    cy = rng.uniform(scale, 1.0 - scale)
    lat = {
        "iso3": iso, "cue_country": cue, "label": label, "palette": palette, "split": split,
        "follows_cue": follows,
        "scale": scale, "center_x": cx, "center_y": cy,
        "rotation": rng.uniform(0.0, 2 * np.pi, n),
        "hue": (palette + rng.uniform(-HUE_JITTER / 2, HUE_JITTER / 2, n)) / k % 1.0,
        "saturation": rng.uniform(0.65, 1.0, n),
        "value": rng.uniform(0.7, 1.0, n),
        "bg_hue": rng.random(n),
        "bg_saturation": rng.uniform(0.0, 0.25, n),
        "bg_value": rng.uniform(0.15, 0.5, n),
        "noise_sd": rng.uniform(*NOISE_RANGE, n),
        "grating_angle": rng.uniform(0.0, np.pi, n),
        "grating_freq": rng.uniform(2.0, 8.0, n),
        "grating_phase": rng.uniform(0.0, 2 * np.pi, n),
        "grating_amp": rng.uniform(0.0, 0.08, n),
        "texture": rng.normal(0.0, 0.12, (n, 6, 6, 3)).astype(np.float32),
        "jitter_lat": rng.normal(0.0, 1.0, n),
        "jitter_lon": rng.normal(0.0, 1.0, n),
    }
    # shuffle the rows (countries were laid out in blocks)
    perm = rng.permutation(n)
    return {key: v[perm] for key, v in lat.items()}


def _coordinates(lat, plan, year):
    """Latitude/longitude: the country's interior point jittered when the jittered point stays inside."""
    import shapely

    table = _country_frame(year)
    out_lat = plan.loc[lat["iso3"], "latitude"].to_numpy().astype(np.float64)
    out_lon = plan.loc[lat["iso3"], "longitude"].to_numpy().astype(np.float64)
    for iso in plan.index:
        idx = np.flatnonzero(lat["iso3"] == iso)
        sd = min(JITTER_DEG, 0.1 * math.sqrt(table.at[iso, "area_km2"]) / 111.0)
        jl = out_lat[idx] + sd * lat["jitter_lat"][idx]
        jn = out_lon[idx] + sd * lat["jitter_lon"][idx]
        inside = shapely.contains_xy(table.at[iso, "geometry"], jn, jl)
        out_lat[idx[inside]] = jl[inside]
        out_lon[idx[inside]] = jn[inside]
    return np.round(out_lat, 5), np.round(out_lon, 5)


def geoshapes_latents(*, n_images=20000, spurious_strength=0.9, image_size=64, seed=0, n_classes=10,
                      n_audit_countries=None, min_test_images=50, cue_countries="high_income",
                      year="latest", image_format="png") -> pd.DataFrame:
    """The hidden variables of a GeoShapes draw, one row per image, without rendering images.

    Same parameters as ``geoshapes`` and the same random draws, so row ``image_id`` here is the
    image with that id there.  Columns: image_id, split, label, palette (the colour's class
    index), follows_cue (the palette was set to the label), cue_country, iso3, scale, center_x,
    center_y, rotation, hue, saturation, value, bg_hue, bg_saturation, bg_value, noise_sd.
    This is the truth an audit of a model trained on GeoShapes can be checked against.
    """
    cfg, plan = _plan(_args(n_images, spurious_strength, image_size, seed, n_classes, n_audit_countries,
                            min_test_images, cue_countries, year, image_format))
    lat = _latents(cfg, plan, np.random.default_rng(cfg.seed))
    df = pd.DataFrame({k: v for k, v in lat.items() if k not in ("texture", "jitter_lat", "jitter_lon")})
    df.insert(0, "image_id", _image_ids(cfg))
    return df


def _image_ids(cfg):
    return np.array([f"geoshapes-{cfg.seed}-{i:07d}" for i in range(cfg.n_images)], dtype=object)


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


def _render(lat, idx, size, class_names, noise_rng):
    """Render images ``idx`` of the latents as uint8 (len(idx), size, size, 3); pixel noise from
    ``noise_rng``."""
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
    return (img * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def _png_stored(arr):
    """PNG bytes of an RGB uint8 image: filter 0, zlib level 0.  The pixel noise makes PNG
    incompressible anyway, and writing the chunks directly is ~20x faster than PIL's encoder."""
    h, w, _ = arr.shape
    raw = np.zeros((h, w * 3 + 1), dtype=np.uint8)  # each row: filter byte 0, then RGB
    raw[:, 1:] = arr.reshape(h, w * 3)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 0)) + chunk(b"IEND", b""))


def _encode(arr, image_format):
    if image_format == "png":
        return _png_stored(arr)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="JPEG", quality=95, subsampling=0)  # 4:4:4 keeps colour
    return buf.getvalue()


def _columns(cfg, plan, lat, image_ids, coords, rows, images):
    """One split's columns in the shared schema, for rows ``rows``."""
    iso = lat["iso3"][rows]
    meta = plan.loc[iso]
    names = CLASS_NAMES[:cfg.n_classes]
    return {
        "image": [{"bytes": b, "path": None} for b in images],
        "label": lat["label"][rows].astype(np.int64).tolist(),
        "wnid": [f"geoshapes:{names[k]}" for k in lat["label"][rows]],
        "image_id": image_ids[rows].tolist(),
        "flickr_photo_id": [None] * len(rows),
        "latitude": coords[0][rows].tolist(),
        "longitude": coords[1][rows].tolist(),
        "country_iso3": iso.tolist(),
        "country_name": meta["country_name"].astype(str).tolist(),
        "gdp_per_capita_usd": meta["gdp_per_capita_usd"].astype(np.float64).tolist(),
        "gdp_year": meta["gdp_year"].astype(np.int64).tolist(),
        "log_gdp_per_capita": meta["log_gdp_per_capita"].astype(np.float64).tolist(),
    }


def _iter_split_batches(cfg, plan, lat, coords, split, batch_rows, bar=None):
    """Yield (columns dict) batches of one split, rendering as it goes (memory bounded)."""
    rows_all = np.flatnonzero(lat["split"] == split)
    image_ids = _image_ids(cfg)
    batch_rows = -(-batch_rows // _CHUNK) * _CHUNK  # whole chunks: the noise streams do not depend on it
    names = CLASS_NAMES[:cfg.n_classes]
    for start in range(0, len(rows_all), batch_rows):
        rows = rows_all[start:start + batch_rows]
        images = []
        for c0 in range(0, len(rows), _CHUNK):
            chunk = rows[c0:c0 + _CHUNK]
            # pixel noise: its own stream per chunk, keyed by the seed and the chunk's first row
            noise_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, int(chunk[0])]))
            arr = _render(lat, chunk, cfg.image_size, names, noise_rng)
            images.extend(_encode(a, cfg.image_format) for a in arr)
            if bar is not None:
                bar.update(len(arr))
        yield _columns(cfg, plan, lat, image_ids, coords, rows, images)


def _description(cfg):
    return "GeoShapes (geoaudit): " + json.dumps(cfg.to_dict(), default=str)


def geoshapes(*, n_images=20000, spurious_strength=0.9, image_size=64, seed=0, n_classes=10,
              n_audit_countries=None, min_test_images=50, cue_countries="high_income", year="latest",
              image_format="png"):
    """Generate GeoShapes: geo-located shape images with a planted geographic bias.

    Parameters
    ----------
    n_images : int
        Total number of images, in [100, 10_000_000].
    spurious_strength : float
        Strength ``s`` of the planted colour shortcut, in [0, 1].  In a cue country the object's
        colour comes from its own class's palette with probability ``s`` and from a uniformly
        random class's palette otherwise, so the colour names the label with probability
        ``s + (1 - s) / n_classes``; elsewhere always uniformly at random (``1 / n_classes``).
        ``s = 0``: no country effect at all (the audit's null hypothesis is true by construction).
    image_size : int
        Side of the square RGB images in pixels, in [24, 512] (below 24 px the star, stripes
        and crescent are no longer told apart; PieAPP needs >= 64).
    seed : int
        Seed of the ``numpy.random.Generator`` every random draw comes from.  The same arguments
        give byte-identical data.
    n_classes : int
        Number of shape classes, in [2, 12]; the first ``n_classes`` of ``CLASS_NAMES``
        (circle, square, triangle, cross, star, ring, arrow, crescent, heart, stripes, hexagon,
        chevron).
    n_audit_countries : int, optional
        How many countries are guaranteed ``min_test_images`` test images (the groups an audit
        with ``min_group_size=min_test_images`` keeps).  Default: as many as ``n_images`` allows,
        at most 30 (30 at the default size).  An explicit value that ``n_images`` cannot give
        raises an InputError stating the smallest ``n_images`` that can.
    min_test_images : int
        The per-country test-set minimum behind ``n_audit_countries`` (default 50, the audit's
        default ``min_group_size``).
    cue_countries : "high_income" or list of str
        Countries where the colour tracks the label: by default the World Bank's high-income
        economies (the well-represented ones: about 3/4 of the images at default size), or
        explicit ISO3 codes.
    year : "latest" or int
        GDP year passed to ``country_table`` (each country's latest value by default).
    image_format : {"png", "jpeg"}
        How images are stored: lossless PNG (default; about 12 KB each at 64 px, the pixel
        noise is incompressible) or JPEG quality 95 with 4:4:4 chroma (about 3.5 KB, faster).

    Returns
    -------
    datasets.DatasetDict
        Splits "train", "validation", "test" (60/20/20 within every country) with features
        exactly ``geo_features(CLASS_NAMES[:n_classes])``.  ``wnid`` is ``"geoshapes:<class>"``,
        ``flickr_photo_id`` is None, ``image_id`` is ``"geoshapes-<seed>-<index>"``.  The
        configuration is in each split's ``info.description`` (JSON).

    Notes
    -----
    The generating process, exactly (constants are module attributes):

    1. *Countries.* Eligible: World Bank economies with GDP per capita and a Natural Earth
       polygon.  Size score = log GDP per capita + 0.5 log population (Natural Earth's 2017
       POP_EST, shipped with the boundaries).
       Head: USA gets ``round(0.36 n)`` images and GBR ``round(0.12 n)``.  Body:
       ``n_audit_countries`` minus the head countries meeting the minimum, split over World Bank
       income groups 40/25/20/15 % (high / upper-middle / lower-middle / low, largest
       remainder), the top size scores in each; each gets the smallest count whose test share
       is ``min_test_images`` (250 for 50) and the rest of ``round(0.45 n)`` in proportion to
       GDP per capita.  Tail: every other country shares the remaining images in proportion to
       ``exp(size score)`` = GDP per capita x sqrt(population).  No randomness: the counts are a
       modelling choice (shaped like ImageNet's reported skew), not ImageNet's real counts.
    2. *Labels and splits.* Within a country, labels are a random permutation of
       ``0..K-1`` repeated (balanced); test and validation get ``round(0.2 count)`` random
       images each, train the rest.
    3. *The cue.* ``palette = label`` with probability ``s`` if the country is a cue country,
       else ``palette ~ Uniform{0..K-1}``.  The object's hue is ``(palette + U(-0.1, 0.1)) / K``,
       saturation ``U(0.65, 1)``, value ``U(0.7, 1)``.
    4. *Everything else is independent of the country:* shape = the label's class, half-extent
       ``U(0.22, 0.42)`` of the image, centre uniform where the shape fits, rotation
       ``U(0, 2 pi)``; background a low-saturation colour (hue ``U(0,1)``, saturation
       ``U(0, 0.25)``, value ``U(0.15, 0.5)``) plus smooth noise (a 6x6 Gaussian grid, sd 0.12,
       bilinearly upsampled) and a sinusoidal grating (amplitude ``U(0, 0.08)``); the object
       is shaded by +-12 % along its own axis with a one-pixel soft edge; then Gaussian pixel
       noise with sd ``U(0.02, 0.07)``; clipped and quantized to uint8 PNG.
    5. *Location.* The country's interior point (``country_table``), moved by a Gaussian
       jitter of sd ``min(0.75 deg, 0.1 sqrt(area) / 111 km)`` when the moved point is still
       inside the country (else the point itself).
    6. Rows are shuffled; the order of random draws is fixed, so a seed gives one dataset.

    Examples
    --------
    >>> dd = geoshapes(n_images=2000, spurious_strength=0.9, image_size=32, seed=0)  # doctest: +SKIP
    >>> dd["test"].features == geo_features(CLASS_NAMES[:10])                        # doctest: +SKIP
    True
    """
    import datasets

    from geoaudit.data._schema import geo_features

    cfg, plan = _plan(_args(n_images, spurious_strength, image_size, seed, n_classes, n_audit_countries,
                            min_test_images, cue_countries, year, image_format))
    lat = _latents(cfg, plan, np.random.default_rng(cfg.seed))
    coords = _coordinates(lat, plan, cfg.year)
    features = geo_features(CLASS_NAMES[:cfg.n_classes])
    out = {}
    with progress(total=cfg.n_images, desc="geoshapes", unit="img") as bar:
        for split, _ in SPLIT_FRACTIONS:
            cols = None
            for batch in _iter_split_batches(cfg, plan, lat, coords, split, cfg.n_images, bar):
                cols = batch
            info = datasets.DatasetInfo(description=_description(cfg), features=features)
            out[split] = datasets.Dataset.from_dict(cols, features=features, info=info, split=split)
    log.debug("geoshapes: %d images, %d countries (%d with >= %d test images), spurious_strength=%g",
             cfg.n_images, len(plan), cfg.n_audit_countries, cfg.min_test_images, cfg.spurious_strength)
    return datasets.DatasetDict(out)


# --- export -----------------------------------------------------------------------------------
# The card source is dataset_cards/geoshapes.md; geoaudit/data/cards links to it so wheels ship it.
CARD_TEMPLATE = Path(__file__).resolve().parent / "cards" / "geoshapes.md"


@dataclass(frozen=True)
class GeoShapesBuild:
    """What ``build_geoshapes`` wrote."""

    out_dir: str
    config: dict
    num_examples: dict
    num_countries: int
    n_audit_countries: int
    cue_share: float
    top_countries: dict
    files: tuple

    def to_dict(self):
        d = asdict(self)
        d["files"] = list(self.files)
        return d


def _card_template():
    from geoaudit._errors import DependencyError

    if not CARD_TEMPLATE.is_file():
        raise DependencyError(
            f"The GeoShapes dataset card source {str(CARD_TEMPLATE)!r} is missing; it ships in the "
            "repository's dataset_cards/ folder."
        )
    return CARD_TEMPLATE


def _country_markdown(plan, limit=40):
    lines = ["| country | ISO3 | GDP per capita (US$, year) | images | test | cue |",
             "|---|---|---|---:|---:|---|"]
    for iso, r in plan.head(limit).iterrows():
        lines.append(f"| {r['country_name']} | {iso} | {r['gdp_per_capita_usd']:,.0f} ({int(r['gdp_year'])}) "
                     f"| {int(r['n_images'])} | {int(r['n_test'])} | {'yes' if r['cue'] else 'no'} |")
    if len(plan) > limit:
        rest = plan.iloc[limit:]
        lines.append(f"| ... {len(rest)} more countries | | | {int(rest['n_images'].sum())} "
                     f"| {int(rest['n_test'].sum())} | |")
    return "\n".join(lines)


def build_geoshapes(out_dir, *, n_images=20000, spurious_strength=0.9, image_size=64, seed=0, n_classes=10,
                    n_audit_countries=None, min_test_images=50, cue_countries="high_income", year="latest",
                    image_format="png", rows_per_shard=5000):
    """Generate GeoShapes and write it as a dataset folder: Parquet shards + dataset card.

    ``datasets.load_dataset(out_dir)`` then loads it with no geoaudit code, and
    ``geoaudit dataset info out_dir`` describes it.  The folder is built in a temporary folder
    beside ``out_dir`` and moved into place at the end (replacing an older one), so a killed
    build never leaves a half-written dataset.

    Parameters
    ----------
    out_dir : str or Path
        The dataset folder to write.
    n_images, spurious_strength, image_size, seed, n_classes, n_audit_countries, min_test_images, cue_countries, year, image_format
        As in ``geoshapes`` (the same arguments give the same rows, byte for byte).
    rows_per_shard : int
        Rows per Parquet shard (memory is bounded by about 1,000 rendered images at a time).

    Returns
    -------
    GeoShapesBuild
        ``out_dir``, ``config`` (the arguments), ``num_examples`` per split, ``num_countries``,
        ``n_audit_countries``, ``cue_share`` (share of images from cue countries),
        ``top_countries`` (the five largest, with counts) and ``files``; ``to_dict()``.

    Files written
    -------------
    ``README.md`` (card: YAML header with ``configs``/``dataset_info``, then the card body with
    the exact generating process and the per-country counts) and
    ``data/{train,validation,test}-0000i-of-0000N.parquet``.
    """
    from geoaudit._io import replace_dir
    from geoaudit.data._export import ParquetShardWriter, write_dataset_card
    from geoaudit.data._schema import geo_features

    cfg, plan = _plan(_args(n_images, spurious_strength, image_size, seed, n_classes, n_audit_countries,
                            min_test_images, cue_countries, year, image_format))
    rows_per_shard = check_interval("rows_per_shard", rows_per_shard, 1, None, caller="build_geoshapes",
                                    integer=True)
    template = _card_template()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"The 'out_dir' parameter of build_geoshapes must be a folder. Got the file {str(out_dir)!r}.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lat = _latents(cfg, plan, np.random.default_rng(cfg.seed))
    coords = _coordinates(lat, plan, cfg.year)
    names = CLASS_NAMES[:cfg.n_classes]
    features = geo_features(names)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset folder is an ordinary one
    try:
        globs, num_examples, num_bytes, files = {}, {}, {}, []
        with progress(total=cfg.n_images, desc="geoshapes", unit="img") as bar:
            for split, _ in SPLIT_FRACTIONS:
                with ParquetShardWriter(tmp, split, features, rows_per_shard=rows_per_shard) as w:
                    for batch in _iter_split_batches(cfg, plan, lat, coords, split, 1024, bar):
                        w.write_batch(batch)
                globs[split], num_examples[split], num_bytes[split] = w.glob, w.num_rows, w.num_bytes
                files.extend(str(p.relative_to(tmp)) for p in w.paths)
        cue_share = float(plan.loc[plan["cue"], "n_images"].sum() / cfg.n_images)
        write_dataset_card(
            tmp, template=template, features=features, configs={"default": globs},
            num_examples=num_examples, num_bytes=num_bytes,
            values={
                "config_json": json.dumps(cfg.to_dict(), default=str),
                "n_images": cfg.n_images, "spurious_strength": cfg.spurious_strength,
                "image_size": cfg.image_size, "seed": cfg.seed, "n_classes": cfg.n_classes,
                "class_names": ", ".join(names), "n_countries": len(plan),
                "n_audit_countries": cfg.n_audit_countries, "min_test_images": cfg.min_test_images,
                "n_cue_countries": int(plan["cue"].sum()), "cue_share": f"{100 * cue_share:.1f}",
                "cue_accuracy": f"{cfg.spurious_strength + (1 - cfg.spurious_strength) / cfg.n_classes:.3f}",
                "chance": f"{1 / cfg.n_classes:.3f}",
                "head_share": f"{100 * plan.loc[[c for c, _ in HEAD_SHARES], 'n_images'].sum() / cfg.n_images:.1f}",
                "country_counts": _country_markdown(plan),
                "image_format": cfg.image_format.upper(),
            },
        )
        files.insert(0, "README.md")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.debug("wrote GeoShapes (%d images) to %s", cfg.n_images, out_dir)
    return GeoShapesBuild(
        out_dir=str(out_dir), config=cfg.to_dict(), num_examples=dict(num_examples),
        num_countries=int(len(plan)), n_audit_countries=cfg.n_audit_countries, cue_share=cue_share,
        top_countries={iso: int(c) for iso, c in plan.head(5)["n_images"].items()}, files=tuple(files),
    )


# --- picture ----------------------------------------------------------------------------------
def _cue_set(ds):
    """Cue countries of a GeoShapes split (from its description), else the high-income economies."""
    desc = getattr(getattr(ds, "info", None), "description", None) or ""
    if desc.startswith("GeoShapes (geoaudit): "):
        try:
            return set(json.loads(desc.split(": ", 1)[1])["cue_countries"])
        except (ValueError, KeyError):
            pass
    from geoaudit.data._countries import country_table

    t = country_table()
    return set(t.loc[t["income_group"] == "High income", "iso3"])


def geoshapes_grid(dd, path, *, split="test", per_group=4, seed=0, cue_countries=None):
    """Save a PNG of sample images: one row per class, ``per_group`` images from the
    well-represented (cue) countries on the left and ``per_group`` from the other countries on
    the right, each captioned with its country's ISO3 code.

    Parameters
    ----------
    dd : datasets.DatasetDict or datasets.Dataset
        GeoShapes (or any dataset with the shared schema; then "well-represented" means the
        World Bank's high-income economies).
    path : str or Path
        PNG to write (atomically).
    split : str
        Split to draw from when ``dd`` is a DatasetDict.
    per_group : int
        Images per class and country group, in [1, 16].
    seed : int
        Which images are drawn.
    cue_countries : list of str, optional
        ISO3 codes of the cue countries; default: from the dataset's description when it came
        from ``geoshapes``, else the World Bank's high-income economies.

    Returns
    -------
    Path
        The PNG's path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geoaudit._io import atomic_save
    from geoaudit.data._load import _to_array

    per_group = check_interval("per_group", per_group, 1, 16, caller="geoshapes_grid", integer=True)
    ds = dd[split] if hasattr(dd, "keys") else dd
    names = ds.features["label"].names
    cue = set(cue_countries) if cue_countries is not None else _cue_set(ds)
    labels = np.asarray(ds["label"])
    in_cue = np.isin(np.asarray(ds["country_iso3"], dtype=object), list(cue))
    rng = np.random.default_rng(seed)
    size = None
    tiles, captions = [], []
    for k in range(len(names)):
        row, cap = [], []
        for group in (True, False):
            idx = np.flatnonzero((labels == k) & (in_cue == group))
            pick = rng.choice(idx, size=min(per_group, len(idx)), replace=False) if len(idx) else []
            for i in list(pick) + [None] * (per_group - len(pick)):
                if i is None:
                    row.append(None)
                    cap.append("")
                    continue
                ex = ds[int(i)]
                a = _to_array(ex["image"], "RGB", None)
                size = size or a.shape[0]
                row.append(a)
                cap.append(ex["country_iso3"])
        tiles.append(row)
        captions.append(cap)
    size = size or 32
    cols = 2 * per_group
    gap = max(2, size // 8)
    mid = size // 2
    h = len(names) * (size + gap)
    w = cols * (size + gap) + mid
    canvas = np.full((h, w, 3), 255, dtype=np.uint8)
    for r, row in enumerate(tiles):
        for c, a in enumerate(row):
            if a is None:
                continue
            x = c * (size + gap) + (mid if c >= per_group else 0)
            canvas[r * (size + gap): r * (size + gap) + size, x:x + size] = a[:size, :size]
    fig_w = max(4.0, w / 60)
    fig, ax = plt.subplots(figsize=(fig_w + 1.2, fig_w * h / w + 0.8), dpi=100)
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(r + 0.5) * (size + gap) - gap / 2 for r in range(len(names))])
    ax.set_yticklabels(names, fontsize=8)
    for r, cap in enumerate(captions):
        for c, t in enumerate(cap):
            x = c * (size + gap) + (mid if c >= per_group else 0) + size / 2
            ax.text(x, r * (size + gap) + size + gap * 0.1, t, ha="center", va="top", fontsize=5, color="0.3")
    half = per_group * (size + gap)
    for x0, label in ((0, "well-represented (cue) countries"), (half + mid, "other countries")):
        ax.text(x0 + half / 2 - gap / 2, -gap, label, ha="center", va="bottom", fontsize=9)
    ax.axvline(half + mid / 2 - gap / 2, color="0.5", lw=0.8)
    for s in ax.spines.values():
        s.set_visible(False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda t: fig.savefig(t, format="png"))
    plt.close(fig)
    return path
