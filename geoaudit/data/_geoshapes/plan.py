"""Where GeoShapes' images come from and what is hidden in them: the country plan (who gets
how many images, deterministic) and the per-image latent variables (random, one seed)."""
from __future__ import annotations

import dataclasses
import json
import math
from functools import lru_cache

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit._validation import check_interval
from geoaudit.data._geoshapes.config import (
    BODY_INCOME_MIX,
    BODY_SHARE,
    CAPTURE_GDP_RANGE,
    HEAD_SHARES,
    HUE_JITTER,
    JITTER_DEG,
    MAX_AUDIT_COUNTRIES,
    MAX_IMAGES,
    NOISE_RANGE,
    POP_EXPONENT,
    SCALE_RANGE,
    resolve_config,
)
from geoaudit.data._geoshapes.corruptions import capture_parameters

CALLER = "geoshapes"


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
def country_frame(year):
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
    if isinstance(cue_countries, str):  # "high_income" (the config checked it)
        return tuple(sorted(table.index[table["income_group"] == "High income"]))
    unknown = sorted(set(cue_countries) - set(table.index))
    if unknown:
        raise InputError(
            f"The 'cue_countries' parameter of {CALLER} names countries without GDP data or polygon: "
            f"{', '.join(unknown)}. Use ISO3 codes from geoaudit.data.country_table()."
        )
    return tuple(sorted(set(cue_countries)))


def capture_deficit(gdp_per_capita_usd):
    """How far below clean capture a country's images are, in [0, 1], from GDP per capita.

    Parameters
    ----------
    gdp_per_capita_usd : array_like
        GDP per capita in current US$.

    Returns
    -------
    numpy.ndarray
        1 at and below US$1,000, 0 at and above US$50,000, linear in log GDP in between
        (``CAPTURE_GDP_RANGE``).
    """
    lo, hi = np.log(CAPTURE_GDP_RANGE)
    g = np.log(np.asarray(gdp_per_capita_usd, dtype=np.float64))
    return np.clip((hi - g) / (hi - lo), 0.0, 1.0)


def make_plan(cfg):
    """Allocate images to countries: (resolved config, plan DataFrame).

    The resolved config has ``n_audit_countries`` and ``cue_countries`` (ISO3 codes) filled in.
    """
    n_images, min_test = cfg.n_images, cfg.min_test_images
    table = country_frame(cfg.year)
    cue = _resolve_cue(cfg.cue_countries, table)

    m = _min_count_for_test(min_test)
    head = [(c, int(round(share * n_images))) for c, share in HEAD_SHARES]
    head_ok = sum(cnt >= m for _, cnt in head)
    budget = int(round(BODY_SHARE * n_images))
    available = table.drop(index=[c for c, _ in head])
    mix_groups = {g: available[available["income_group"] == g] for g, _ in BODY_INCOME_MIX}
    max_body = min(budget // m, sum(len(v) for v in mix_groups.values()))
    n_audit = cfg.n_audit_countries
    if n_audit is None:
        body_n = max(0, min(MAX_AUDIT_COUNTRIES - head_ok, max_body))
        n_audit = head_ok + body_n
    else:
        n_audit = check_interval("n_audit_countries", n_audit, 1, head_ok + sum(len(v) for v in mix_groups.values()),
                                 caller=CALLER, integer=True)
        body_n = max(0, n_audit - head_ok)
        if body_n > max_body:
            need = int(math.ceil((body_n * m) / BODY_SHARE))
            most = head_ok + max_body
            raise InputError(
                f"The 'n_images' parameter of {CALLER} is too small for n_audit_countries={n_audit} countries "
                f"with min_test_images={min_test} test images each: it must be an int in [{need}, {MAX_IMAGES}] "
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
    # the expected capture severity of the country's images (before the cap at 1)
    plan["capture_mean"] = cfg.capture_strength * capture_deficit(plan["gdp_per_capita_usd"].to_numpy())
    plan = plan.sort_values(["n_images", "gdp_per_capita_usd"], ascending=False)
    resolved = dataclasses.replace(cfg, n_audit_countries=int(n_audit), cue_countries=cue)
    return resolved, plan


def geoshapes_country_plan(config=None, **params) -> pd.DataFrame:
    """The per-country allocation of a GeoShapes draw, without generating anything.

    Parameters
    ----------
    config : GeoShapesConfig or dict, optional
        The draw's parameters (default: ``GeoShapesConfig()``).
    **params
        Overrides of ``config``'s fields (see :class:`GeoShapesConfig`); ``seed`` is a
        deprecated alias of ``random_state``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ISO3 (most images first) with ``n_images``, ``tier`` ("head", "body",
        "tail"), ``n_train``/``n_validation``/``n_test``, ``country_name``, ``latitude``,
        ``longitude``, GDP columns, ``income_group``, ``cue`` (True where the colour cue
        tracks the label) and ``capture_mean`` (the expected capture severity,
        ``capture_strength * capture_deficit(GDP)``).  Deterministic (no randomness).
    """
    return make_plan(resolve_config(config, params, caller=CALLER))[1]


# --- latent variables -------------------------------------------------------------------------
def latents(cfg, plan):
    """Every per-image random variable, in final row order (a dict of arrays).

    The draws of the colour mechanism and the rest come from ``default_rng(random_state)`` in a
    fixed order; the capture severities from their own stream, so turning the capture
    mechanism on or off leaves every other variable unchanged.
    """
    rng = np.random.default_rng(cfg.random_state)
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
    # the colour shortcut: palette = label with probability s in cue countries, else uniform
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
    lat = {key: v[perm] for key, v in lat.items()}
    # the capture mechanism: severity from the country's GDP, jittered per image
    cap_rng = np.random.default_rng(np.random.SeedSequence([cfg.random_state, 2]))
    u = cap_rng.random(n)
    mean = plan.loc[lat["iso3"], "capture_mean"].to_numpy()
    lat["capture_severity"] = np.minimum(1.0, mean * (0.5 + u))
    return lat


def coordinates(lat, plan, year):
    """Latitude/longitude: the country's interior point jittered when the jittered point stays inside."""
    import shapely

    table = country_frame(year)
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


def image_ids(cfg):
    return np.array([f"geoshapes-{cfg.random_state}-{i:07d}" for i in range(cfg.n_images)], dtype=object)


def geoshapes_latents(config=None, **params) -> pd.DataFrame:
    """The hidden variables of a GeoShapes draw, one row per image, without rendering images.

    Parameters
    ----------
    config : GeoShapesConfig or dict, optional
        The draw's parameters (default: ``GeoShapesConfig()``).
    **params
        Overrides of ``config``'s fields; ``seed`` is a deprecated alias of ``random_state``.

    Returns
    -------
    pandas.DataFrame
        The same random draws as ``geoshapes``, so row ``image_id`` here is the image with
        that id there.  Columns: image_id, split, label, iso3, cue_country, and for the colour
        mechanism palette (the colour's class index) and follows_cue (the cue held: the palette
        was set to the label); for the capture mechanism capture_severity (in [0, 1]; 0 = clean)
        and what it means in pixels: blur_sigma_px, exposure, sensor_noise_sd, jpeg_quality
        (0 when no compression); then the country-independent draws scale, center_x,
        center_y, rotation, hue, saturation, value, bg_hue, bg_saturation, bg_value, noise_sd.
        This is the truth an audit of a model trained on GeoShapes can be checked against.
    """
    cfg, plan = make_plan(resolve_config(config, params, caller=CALLER))
    lat = latents(cfg, plan)
    cap = capture_parameters(lat["capture_severity"], cfg.image_size)
    cols = ["split", "label", "iso3", "cue_country", "palette", "follows_cue", "capture_severity"]
    df = pd.DataFrame({c: lat[c] for c in cols})
    for name, v in cap.items():
        df[name] = v
    for c in ("scale", "center_x", "center_y", "rotation", "hue", "saturation", "value", "bg_hue",
              "bg_saturation", "bg_value", "noise_sd"):
        df[c] = lat[c]
    df.insert(0, "image_id", image_ids(cfg))
    return df
