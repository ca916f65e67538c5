"""Reverse geocoding: latitude/longitude -> country, against the shipped Natural Earth boundaries.

Two vectorized passes with geopandas:

1. ``geopandas.sjoin(points, countries, predicate="within")``: a point inside a country
   polygon gets that country (``method="within"``).
2. Points left over (just off a coast: a photo from a boat, a pier, a beach the 1:50m
   coastline cuts off) go to the nearest country if its boundary lies within
   ``tolerance_km`` great-circle kilometres (``method="nearest"``).  Candidates come from
   ``geopandas.sjoin_nearest`` in longitude/latitude degrees with a degree bound wide enough
   for the points' latitude; each candidate is then accepted only if the haversine distance
   from the point to the nearest point of that country's boundary is <= ``tolerance_km``.
   The default, 25 km, is the 12-nautical-mile territorial sea (22.2 km) plus a margin for
   the generalisation of 1:50m coastlines.

Everything else stays unassigned (``method="unassigned"``) and is counted by the caller;
coordinates that are missing or out of range get ``method="invalid"``.  Country codes are
Natural Earth ``ADM0_A3`` mapped onto World Bank codes (``load_boundaries``), so France is
FRA and Norway NOR (their ``ISO_A3`` is -99) and Kosovo is XKX.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit._validation import check_interval

log = logging.getLogger(__name__)

EARTH_RADIUS_KM = 6371.0088
#: Default coastal tolerance: the 12 nautical mile territorial sea (22.2 km) plus margin.
DEFAULT_TOLERANCE_KM = 25.0
METHODS = ("within", "nearest", "unassigned", "invalid")


def haversine_km(lat1, lon1, lat2, lon2):
    """Great-circle distance in km between arrays of points given in degrees."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dlat = p2 - p1
    dlon = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _as_array(name, values):
    try:
        a = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"The {name!r} parameter of reverse_geocode must be numbers (degrees). "
                         f"Got {type(values).__name__} with non-numeric values instead.") from None
    return np.atleast_1d(a)


def reverse_geocode(latitude, longitude, *, tolerance_km=DEFAULT_TOLERANCE_KM, scale="50m") -> pd.DataFrame:
    """Country of each point.

    Parameters
    ----------
    latitude, longitude : array-like of float
        WGS84 degrees, same length.  NaN or out-of-range values are reported as ``"invalid"``.
    tolerance_km : float
        A point outside every polygon goes to the nearest country whose boundary is at most
        this many great-circle km away (0 turns the coastal pass off).
    scale : {"50m", "110m"}
        Natural Earth scale of the boundaries.

    Returns
    -------
    pandas.DataFrame
        One row per point, in input order: ``country_iso3`` (World Bank code or None),
        ``country_name`` (Natural Earth name or None), ``method`` (one of ``"within"``,
        ``"nearest"``, ``"unassigned"``, ``"invalid"``) and ``distance_km`` (0 for
        ``"within"``, the distance to the boundary for ``"nearest"``, NaN otherwise).

    Examples
    --------
    >>> reverse_geocode([48.8566, 59.9139], [2.3522, 10.7522])["country_iso3"].tolist()
    ['FRA', 'NOR']
    """
    import geopandas as gpd
    import shapely

    from geoaudit.data._countries import load_boundaries

    lat = _as_array("latitude", latitude)
    lon = _as_array("longitude", longitude)
    if lat.shape != lon.shape or lat.ndim != 1:
        raise InputError(f"The 'latitude' and 'longitude' parameters of reverse_geocode must be 1-D and of "
                         f"the same length. Got shapes {lat.shape} and {lon.shape} instead.")
    tol = check_interval("tolerance_km", tolerance_km, 0, 1000, caller="reverse_geocode")
    n = len(lat)
    iso = np.full(n, None, dtype=object)
    name = np.full(n, None, dtype=object)
    method = np.full(n, "unassigned", dtype=object)
    dist = np.full(n, np.nan)
    valid = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    method[~valid] = "invalid"
    idx = np.flatnonzero(valid)
    if len(idx):
        countries = load_boundaries(scale)
        pts = gpd.GeoDataFrame({"_i": idx}, geometry=gpd.points_from_xy(lon[idx], lat[idx]), crs="EPSG:4326")
        hit = gpd.sjoin(pts, countries, how="inner", predicate="within")
        # overlapping polygons (rare disputed areas): keep the first country in Natural Earth order
        hit = hit.sort_values(["_i", "index_right"]).drop_duplicates("_i")
        rows = hit["_i"].to_numpy()
        iso[rows] = hit["iso3"].to_numpy()
        name[rows] = hit["name"].to_numpy()
        method[rows] = "within"
        dist[rows] = 0.0
        rest = pts[~pts["_i"].isin(rows)]
        if tol > 0 and len(rest):
            _nearest(rest, countries, tol, iso, name, method, dist, shapely, gpd)
    # object columns keep None for "no country" (pandas would otherwise infer strings with NaN)
    return pd.DataFrame({"country_iso3": pd.Series(iso, dtype=object), "country_name": pd.Series(name, dtype=object),
                         "method": pd.Series(method, dtype=object), "distance_km": dist})


def _nearest(rest, countries, tol, iso, name, method, dist, shapely, gpd):
    """Coastal pass: nearest country in degrees, accepted by great-circle distance."""
    # 1 degree of longitude is 111.32 * cos(lat) km: bound in degrees wide enough at the
    # highest latitude among the points (capped at 85 degrees)
    max_lat = min(float(np.abs(rest.geometry.y).max()) + tol / 111.0, 85.0)
    max_deg = tol / (111.32 * np.cos(np.radians(max_lat)))
    with warnings.catch_warnings():  # "geographic CRS" warning: degrees are only a pre-filter here
        warnings.simplefilter("ignore", UserWarning)
        near = gpd.sjoin_nearest(rest, countries, how="inner", max_distance=max_deg)
    if near.empty:
        return
    near = near.sort_values(["_i", "index_right"]).drop_duplicates("_i")
    polys = countries.geometry.to_numpy()[near["index_right"].to_numpy()]
    pts = near.geometry.to_numpy()
    # nearest point of the boundary to each point (shortest_line goes point -> polygon)
    lines = shapely.shortest_line(pts, polys)
    coords = shapely.get_coordinates(lines).reshape(-1, 2, 2)
    d = haversine_km(coords[:, 0, 1], coords[:, 0, 0], coords[:, 1, 1], coords[:, 1, 0])
    ok = d <= tol
    rows = near["_i"].to_numpy()[ok]
    iso[rows] = near["iso3"].to_numpy()[ok]
    name[rows] = near["name"].to_numpy()[ok]
    method[rows] = "nearest"
    dist[rows] = d[ok]


def reverse_geocode_loop(latitude, longitude, *, scale="50m"):
    """Reference implementation: a plain per-point loop over every polygon (``within`` only).

    Slow on purpose; ``benchmarks/geocode.py`` compares it with :func:`reverse_geocode`.
    """
    from shapely.geometry import Point

    from geoaudit.data._countries import load_boundaries

    countries = load_boundaries(scale)
    geoms = list(countries.geometry)
    codes = list(countries["iso3"])
    out = []
    for la, lo in zip(latitude, longitude):
        p = Point(lo, la)
        out.append(next((c for g, c in zip(geoms, codes) if g.contains(p)), None))
    return out
