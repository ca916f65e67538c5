"""Reverse geocoding: latitude/longitude -> country, against the shipped Natural Earth boundaries.

Five vectorized passes:

1. ``within``: a point inside a country polygon gets that country (a ``geopandas.sjoin`` on
   the polygons' 4,254 parts at 1:10m).
2. ``nearest``: a point outside every polygon (a photo from a boat, a pier, a beach that the
   coastline generalises away) goes to the country whose boundary is nearest, if that is at
   most ``tolerance_km`` true great-circle kilometres away.  The boundaries are cut into
   pieces of at most 32 vertices held in an R-tree; each point queries a box of
   ``tolerance_km`` (in degrees of its own latitude, and on both sides of the antimeridian)
   and the distance to each segment is measured in a local equirectangular frame around
   the point, then the nearest point is measured again with the haversine formula.  The
   default, 25 km, is the 12-nautical-mile territorial sea (22.2 km) plus a margin.
3. ``border``: within ``border_km`` (3 km) of another country, a finer border line decides
   which side of the border a point is on: the OpenStreetMap land borders
   (``resources/osm_land_borders.npz``, ODbL 1.0, the default, after a side test against the
   OpenStreetMap polygons clipped to the border zone, ``resources/osm_border_polygons.npz``)
   or the GSHHG full-resolution
   WDBII borders (``resources/gshhg_wdb_borders.npz``, ``borders="wdb"``); the 1:10m line is
   placed to about 1 km, and border towns sit on it (e.g. Konstanz, Goerlitz, Narva).  See
   ``_apply_borders``.
4. ``place``: GeoNames populated places shipped for the spots where the polygons are unsure
   (``geoaudit.data._places``).  A point within ``place_km`` of such a place takes the
   place's country if the point is in no polygon (small islands the 1:10m coastline leaves
   out, e.g. Ponza or Matsu) or if the place's country boundary is within ``place_km`` too
   (a town on a border river the 1:10m line cuts), unless the border pass's line confirmed
   the polygon's side.  A point still farther than
   ``tolerance_km`` from every polygon takes the country of the nearest such place within
   ``island_km`` that is itself far from every polygon (atolls of the Marshall Islands).
5. ``hint``: where a second source names a country (Flickr's own reverse-geocoded country),
   a point whose polygon country differs goes to the named country if that country's
   boundary lies within ``hint_km`` (a photo on the border, where the polygon is unsure),
   or within ``tolerance_km`` for a point outside every polygon.

Everything else stays unassigned (``method="unassigned"``); coordinates that are missing or
out of range get ``method="invalid"``.  Country codes are Natural Earth ``ADM0_A3`` mapped onto
World Bank codes (``load_boundaries``), so France is FRA, Kosovo XKX, Jersey CHI.
"""
from __future__ import annotations

import json
import logging
from functools import lru_cache

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit._validation import check_interval, check_options

log = logging.getLogger(__name__)

EARTH_RADIUS_KM = 6371.0088
#: Default coastal tolerance: the 12 nautical mile territorial sea (22.2 km) plus margin.
DEFAULT_TOLERANCE_KM = 25.0
#: Default reach of a second source's country across a border (see ``reverse_geocode``).
DEFAULT_HINT_KM = 5.0
#: Default reach of a populated place (a town's extent around its GeoNames point).
DEFAULT_PLACE_KM = 1.0
#: Default width of the zone along a border where the finer border line decides.
DEFAULT_BORDER_KM = 3.0
#: How far past the point the rays of the border pass reach (chosen with the zone width).
BORDER_REACH_KM = 3.0
#: Default reach of a populated place on an island the polygons leave out (archipelago scale).
DEFAULT_ISLAND_KM = 150.0
DEFAULT_SCALE = "10m"
#: Border lines the ``border`` pass can use.
BORDER_LINES = ("osm", "osm-rays", "wdb")
METHODS = ("within", "nearest", "border", "place", "hint", "unassigned", "invalid")
_PIECE = 32  # vertices per boundary piece in the R-tree
_MAX_SEGMENTS = 4_000_000  # segments measured at once (memory bound of the coastal pass)


def haversine_km(lat1, lon1, lat2, lon2):
    """Great-circle distance in km between arrays of points given in degrees.

    Parameters
    ----------
    lat1, lon1, lat2, lon2 : array-like of float
        Degrees; broadcast together.

    Returns
    -------
    numpy.ndarray
        Distances in km (mean Earth radius 6,371.0088 km).
    """
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


class _Index:
    """Polygon parts for the within pass and boundary pieces for the distance passes."""

    def __init__(self, scale):
        import shapely

        from geoaudit.data._countries import load_boundaries

        b = load_boundaries(scale)
        geoms = shapely.make_valid(b.geometry.to_numpy())  # one 1:10m ring self-touches (Egypt)
        self.countries = b.assign(geometry=geoms)
        parts, owner = shapely.get_parts(geoms, return_index=True)
        sub, k = shapely.get_parts(parts, return_index=True)  # a collection from make_valid holds a multipolygon
        parts, owner = sub, owner[k]
        keep = shapely.get_type_id(parts) == 3  # polygons only (make_valid may leave a stray line)
        parts, owner = parts[keep], owner[keep]
        self.part_iso = b["iso3"].to_numpy()[owner]
        self.part_name = b["name"].to_numpy()[owner]
        self.parts = parts
        # boundary pieces: every ring cut into runs of _PIECE vertices sharing end points
        rings = shapely.get_rings(parts, return_index=True)
        coords, ring_of = shapely.get_coordinates(rings[0], return_index=True)
        ring_part = rings[1]
        starts = np.flatnonzero(np.r_[True, ring_of[1:] != ring_of[:-1]])
        ends = np.r_[starts[1:], len(coords)]
        p_start, p_end, p_part = [], [], []
        for s, e, r in zip(starts, ends, ring_of[starts]):
            k = np.arange(s, e - 1, _PIECE - 1)
            p_start.append(k)
            p_end.append(np.minimum(k + _PIECE, e))
            p_part.append(np.full(len(k), ring_part[r]))
        self.coords = coords
        self.piece_start = np.concatenate(p_start)
        self.piece_end = np.concatenate(p_end)
        self.piece_part = np.concatenate(p_part)
        lines = shapely.linestrings(coords[np.concatenate([np.arange(s, e) for s, e in
                                                             zip(self.piece_start, self.piece_end)])],
                                    indices=np.repeat(np.arange(len(self.piece_start)),
                                                      self.piece_end - self.piece_start))
        self.tree = shapely.STRtree(lines)
        self.iso_codes = np.unique(self.part_iso)

    def within(self, lon, lat):
        """(rows, part index) of points inside a polygon part (first part if several)."""
        import geopandas as gpd

        pts = gpd.GeoDataFrame({"_i": np.arange(len(lon))}, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
        parts = gpd.GeoDataFrame({"_p": np.arange(len(self.parts))}, geometry=self.parts, crs="EPSG:4326")
        hit = gpd.sjoin(pts, parts, how="inner", predicate="within")
        hit = hit.sort_values(["_i", "_p"]).drop_duplicates("_i")
        return hit["_i"].to_numpy(), hit["_p"].to_numpy()

    def distances(self, lat, lon, radius_km, return_points=False):
        """Every (point, part, km) with the part's boundary within ``radius_km`` of the point.

        The minimum over each part's segments, measured in a local equirectangular frame
        (exact to well under 1% within 100 km), so across the antimeridian too.  With
        ``return_points`` the nearest boundary point's latitude and longitude follow.
        """
        import shapely

        n = len(lat)
        empty = (np.empty(0, int), np.empty(0, int), np.empty(0))
        if n == 0:
            return empty + (np.empty(0), np.empty(0)) if return_points else empty
        dlat = radius_km / 110.5 + 1e-6
        coslat = np.cos(np.radians(np.minimum(np.abs(lat) + dlat, 89.99)))
        dlon = np.minimum(radius_km / (111.3 * coslat) + 1e-6, 180.0)
        ymin, ymax = np.maximum(lat - dlat, -90), np.minimum(lat + dlat, 90)
        box_pt, boxes = [], []
        for shift in (0.0, 360.0, -360.0):
            x0, x1 = lon - dlon + shift, lon + dlon + shift
            keep = (x1 >= -180) & (x0 <= 180) if shift else np.ones(n, bool)
            if shift:
                keep &= (x0 < -180 + shift) if shift > 0 else (x1 > 180 + shift)
            idx = np.flatnonzero(keep)
            box_pt.append(idx)
            boxes.append(shapely.box(np.maximum(x0[idx], -180), ymin[idx], np.minimum(x1[idx], 180), ymax[idx]))
        box_pt = np.concatenate(box_pt)
        q = self.tree.query(np.concatenate(boxes), predicate="intersects")
        if q.shape[1] == 0:
            return empty + (np.empty(0), np.empty(0)) if return_points else empty
        pair_pt = box_pt[q[0]]
        pair_piece = q[1]
        out_pt, out_part, out_d, out_lat, out_lon = [], [], [], [], []
        nseg = self.piece_end[pair_piece] - self.piece_start[pair_piece] - 1
        # chunks of pairs with a bounded number of segments
        cum = np.cumsum(nseg)
        bounds = np.searchsorted(cum, np.arange(_MAX_SEGMENTS, cum[-1] + _MAX_SEGMENTS, _MAX_SEGMENTS), side="right")
        lo = 0
        for hi in np.unique(np.r_[bounds, len(pair_pt)]):
            if hi <= lo:
                continue
            sl = slice(lo, hi)
            lo = hi
            pp, pc, ns = pair_pt[sl], pair_piece[sl], nseg[sl]
            pair_of_seg = np.repeat(np.arange(len(pp)), ns)
            first = np.repeat(self.piece_start[pc] - np.r_[0, np.cumsum(ns)[:-1]], ns) + np.arange(ns.sum())
            a, b = self.coords[first], self.coords[first + 1]
            plat, plon = lat[pp][pair_of_seg], lon[pp][pair_of_seg]
            kx = np.radians(1.0) * EARTH_RADIUS_KM * np.cos(np.radians(plat))
            ky = np.radians(1.0) * EARTH_RADIUS_KM

            def local(c):  # km east/north of the point; longitudes wrapped across 180 degrees
                return ((c[:, 0] - plon + 180.0) % 360.0 - 180.0) * kx, (c[:, 1] - plat) * ky

            ax, ay = local(a)
            bx, by = local(b)
            vx, vy = bx - ax, by - ay
            vv = vx * vx + vy * vy
            t = np.clip(np.where(vv > 0, -(ax * vx + ay * vy) / np.where(vv > 0, vv, 1), 0), 0, 1)
            cx, cy = ax + t * vx, ay + t * vy
            d2 = cx * cx + cy * cy
            # the nearest segment of each pair, then the exact great-circle distance to it
            order = np.lexsort((d2, pair_of_seg))
            firsts = order[np.r_[True, pair_of_seg[order][1:] != pair_of_seg[order][:-1]]]
            near_lat = plat[firsts] + cy[firsts] / ky
            near_lon = plon[firsts] + cx[firsts] / kx[firsts]
            d = haversine_km(plat[firsts], plon[firsts], near_lat, near_lon)
            pi = pair_of_seg[firsts]
            out_pt.append(pp[pi])
            out_part.append(self.piece_part[pc[pi]])
            out_d.append(d)
            out_lat.append(near_lat)
            out_lon.append(near_lon)
        pt, part, d = np.concatenate(out_pt), np.concatenate(out_part), np.concatenate(out_d)
        nlat, nlon = np.concatenate(out_lat), np.concatenate(out_lon)
        ok = d <= radius_km
        pt, part, d, nlat, nlon = pt[ok], part[ok], d[ok], nlat[ok], nlon[ok]
        # one row per (point, part): the nearest of its pieces
        order = np.lexsort((d, part, pt))
        pt, part, d, nlat, nlon = pt[order], part[order], d[order], nlat[order], nlon[order]
        first = np.r_[True, (pt[1:] != pt[:-1]) | (part[1:] != part[:-1])][:len(pt)]
        if return_points:
            return pt[first], part[first], d[first], nlat[first], ((nlon[first] + 180.0) % 360.0) - 180.0
        return pt[first], part[first], d[first]


@lru_cache(maxsize=3)
def _index(scale) -> _Index:
    return _Index(scale)


def _unpack_runs(delta, start):
    """Vertices (degrees) and the run (line or ring) of each, from a shipped border file: int
    steps of 1e-5 degree that run on across runs from (0, 0), and each run's first vertex."""
    xy = np.cumsum(delta.astype(np.int64), axis=0) / 1e5
    run = np.zeros(len(xy), np.int64)
    run[start[1:]] = 1
    return xy, np.cumsum(run)


class _Borders:
    """Shipped national border lines in an R-tree, for the ``border`` pass: the OpenStreetMap
    land borders (``"osm"``) or the GSHHG WDBII borders (``"wdb"``)."""

    def __init__(self, which="osm"):
        import shapely

        from geoaudit.data._resources import OSM_BORDERS, WDB_BORDERS, resource_path

        with np.load(resource_path(OSM_BORDERS if which == "osm" else WDB_BORDERS)) as z:
            xy, line = _unpack_runs(z["delta"], z["start"])
        self.lines = shapely.linestrings(xy, indices=line)
        self.tree = shapely.STRtree(self.lines)

    def crossings(self, x0, y0, x1, y1):
        """How many times each segment (x0, y0)-(x1, y1), in degrees, crosses a border line."""
        import shapely

        seg = shapely.linestrings(np.stack([np.column_stack([x0, y0]), np.column_stack([x1, y1])], axis=1))
        n = np.zeros(len(x0), int)
        if not len(x0):
            return n
        q = self.tree.query(seg, predicate="intersects")
        if q.shape[1]:
            np.add.at(n, q[0], shapely.get_num_geometries(shapely.intersection(seg[q[0]], self.lines[q[1]])))
        return n


@lru_cache(maxsize=2)
def _borders(which="osm") -> _Borders:
    return _Borders(which)


class _BorderPolygons:
    """The OpenStreetMap country polygons clipped to a few km along the land borders
    (``resources/osm_border_polygons.npz``), for the side test of the ``border`` pass."""

    def __init__(self):
        import shapely

        from geoaudit.data._resources import OSM_BORDER_POLYGONS, resource_path

        with np.load(resource_path(OSM_BORDER_POLYGONS)) as z:
            xy, ring_of = _unpack_runs(z["delta"], z["ring_start"])
            poly_ring, poly_country = z["poly_ring"], z["poly_country"]
            codes = json.loads(bytes(z["codes"]).decode())
        rings = shapely.linearrings(xy, indices=ring_of)
        poly_of_ring = np.cumsum(np.isin(np.arange(len(rings)), poly_ring)) - 1
        self.polygons = shapely.polygons(rings, indices=poly_of_ring)
        self.country = np.asarray(codes, dtype=object)[poly_country]
        self.tree = shapely.STRtree(self.polygons)

    def holders(self, x, y):
        """(point, polygon) pairs: the clipped polygons that contain each point (x, y in degrees)."""
        import shapely

        q = self.tree.query(shapely.points(x, y), predicate="within")
        return q[0], q[1]


@lru_cache(maxsize=1)
def _border_polygons() -> _BorderPolygons:
    return _BorderPolygons()


def reverse_geocode(latitude, longitude, *, tolerance_km=DEFAULT_TOLERANCE_KM, scale=DEFAULT_SCALE,
                    hint_iso3=None, hint_km=DEFAULT_HINT_KM, places="geonames",
                    place_km=DEFAULT_PLACE_KM, borders="osm", border_km=DEFAULT_BORDER_KM,
                    island_km=DEFAULT_ISLAND_KM) -> pd.DataFrame:
    """Country of each point.

    Parameters
    ----------
    latitude, longitude : array-like of float
        WGS84 degrees, same length.  NaN or out-of-range values are reported as ``"invalid"``.
    tolerance_km : float
        A point outside every polygon goes to the nearest country whose boundary is at most
        this many great-circle km away (0 turns the coastal pass off).
    scale : {"10m", "50m", "110m"}
        Natural Earth scale of the boundaries (1:10m by default).
    hint_iso3 : array-like of str or None, optional
        A second opinion per point (Flickr's own country, as a World Bank code; None where
        there is none).  It wins where its country's boundary is within ``hint_km`` of a
        point inside another country, or within ``tolerance_km`` of a point in no country.
    hint_km : float
        How far across a border a hint (or a populated place) is believed (default 5 km).
    places : "geonames", PopulatedPlaces or None
        The populated places of the ``place`` pass: the shipped GeoNames places (default),
        another :class:`~geoaudit.data._places.PopulatedPlaces`, or None to skip the pass.
    place_km : float
        How far from a place's point a photo counts as taken in that place (default 1 km).
    borders : "osm", "osm-rays", "wdb" or None
        The ``border`` pass (with ``scale="10m"`` only, where the zone was tuned): within
        ``border_km`` of another country, finer shipped data decide which side a point is on:
        "osm" (the default), the OpenStreetMap country polygons clipped to 5 km around the land
        borders, and where neither or both of the two countries' polygons hold the point, the
        rays against the OpenStreetMap land-border line (2017 data of the npm package
        ``@geo-maps/countries-land-100m``, ODbL 1.0, (c) OpenStreetMap contributors);
        "osm-rays", that line's rays alone (the default before); "wdb", the rays against the
        GSHHG full-resolution WDBII borders; or None to skip the pass.
    border_km : float
        Width of the zone along a border where the finer line decides (default 3 km).
    island_km : float
        A point farther than ``tolerance_km`` from every polygon takes the country of the
        nearest of ``places`` that is itself that far from every polygon, if it is within
        ``island_km`` (default 150 km: atolls the 1:10m coastline leaves out; 0 turns it off,
        and so does ``tolerance_km=0``).

    Returns
    -------
    pandas.DataFrame
        One row per point, in input order: ``country_iso3`` (World Bank code or None),
        ``country_name`` (Natural Earth name or None), ``method`` (one of ``"within"``,
        ``"nearest"``, ``"border"``, ``"place"``, ``"hint"``, ``"unassigned"``, ``"invalid"``)
        and ``distance_km`` (0 for ``"within"``, the distance to the country's boundary for
        ``"nearest"``, ``"border"`` and ``"hint"``, to the place for ``"place"``, NaN otherwise).

    Examples
    --------
    >>> reverse_geocode([48.8566, 59.9139], [2.3522, 10.7522])["country_iso3"].tolist()
    ['FRA', 'NOR']
    """
    lat = _as_array("latitude", latitude)
    lon = _as_array("longitude", longitude)
    if lat.shape != lon.shape or lat.ndim != 1:
        raise InputError(f"The 'latitude' and 'longitude' parameters of reverse_geocode must be 1-D and of "
                         f"the same length. Got shapes {lat.shape} and {lon.shape} instead.")
    tol = check_interval("tolerance_km", tolerance_km, 0, 1000, caller="reverse_geocode")
    hint_km = check_interval("hint_km", hint_km, 0, 1000, caller="reverse_geocode")
    check_options("scale", scale, ("10m", "50m", "110m"), caller="reverse_geocode")
    place_km = check_interval("place_km", place_km, 0, 100, caller="reverse_geocode")
    border_km = check_interval("border_km", border_km, 0, 100, caller="reverse_geocode")
    island_km = check_interval("island_km", island_km, 0, 2000, caller="reverse_geocode")
    if borders is not None:
        check_options("borders", borders, BORDER_LINES, caller="reverse_geocode")
    places = _resolve_places(places)
    n = len(lat)
    hints = None
    if hint_iso3 is not None:
        hints = np.asarray([h if isinstance(h, str) and h else None for h in hint_iso3], dtype=object)
        if hints.shape != (n,):
            raise InputError(f"The 'hint_iso3' parameter of reverse_geocode must have one entry per point "
                             f"({n}). Got {len(hints)} instead.")
    iso = np.full(n, None, dtype=object)
    name = np.full(n, None, dtype=object)
    method = np.full(n, "unassigned", dtype=object)
    dist = np.full(n, np.nan)
    valid = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    method[~valid] = "invalid"
    idx = np.flatnonzero(valid)
    if len(idx):
        ix = _index(scale)
        rows, part = ix.within(lon[idx], lat[idx])
        g = idx[rows]
        iso[g], name[g], method[g], dist[g] = ix.part_iso[part], ix.part_name[part], "within", 0.0
        rest = idx[method[idx] == "unassigned"]
        if tol > 0 and len(rest):
            pt, part, d = ix.distances(lat[rest], lon[rest], tol)
            if len(pt):
                order = np.lexsort((d, pt))
                first = order[np.r_[True, pt[order][1:] != pt[order][:-1]]]
                g = rest[pt[first]]
                iso[g], name[g], method[g], dist[g] = (ix.part_iso[part[first]], ix.part_name[part[first]],
                                                       "nearest", d[first])
        if borders is not None and border_km > 0 and scale == "10m":
            settled = _apply_borders(ix, lat, lon, iso, name, method, dist, border_km, which=borders)
        else:
            settled = None
        if places is not None and place_km > 0:
            _apply_places(ix, places, lat, lon, iso, name, method, dist, hint_km, place_km, settled=settled)
        if places is not None and island_km > 0 and tol > 0:
            _apply_islands(ix, places, lat, lon, iso, name, method, dist, tol, island_km)
        if hints is not None:
            _apply_hints(ix, lat, lon, hints, iso, name, method, dist, tol, hint_km)
    # object columns keep None for "no country" (pandas would otherwise infer strings with NaN)
    return pd.DataFrame({"country_iso3": pd.Series(iso, dtype=object), "country_name": pd.Series(name, dtype=object),
                         "method": pd.Series(method, dtype=object), "distance_km": dist})


def _resolve_places(places):
    from geoaudit.data._places import PopulatedPlaces

    if places is None or isinstance(places, PopulatedPlaces):
        return places
    if isinstance(places, str) and places == "geonames":
        return PopulatedPlaces.shipped()
    raise InputError(f"The 'places' parameter of reverse_geocode must be 'geonames', a PopulatedPlaces or None. "
                     f"Got {places!r} instead.")


def _apply_places(ix, places, lat, lon, iso, name, method, dist, hint_km, place_km, settled=None):
    """A point near a populated place the polygons are unsure about takes the place's country."""
    known = set(ix.iso_codes)
    idx = np.flatnonzero(method != "invalid")
    code, d = places.nearest(lat[idx], lon[idx], place_km)
    differs = np.array([c is not None and c in known and c != i for c, i in zip(code, iso[idx])], dtype=bool)
    idx, code, d = idx[differs], code[differs], d[differs]
    if not len(idx):
        return
    # in no polygon or only near one: the place decides (islands the coastline leaves out)
    off = method[idx] != "within"
    g = idx[off]
    if len(g):
        names = dict(zip(ix.part_iso, ix.part_name))
        iso[g], method[g], dist[g] = code[off], "place", d[off]
        name[g] = [names.get(c) for c in code[off]]
    # inside a polygon: only where the place's own country is within place_km too (a border
    # town the 1:10m line cuts); a wider reach moved more right towns than wrong ones
    # (benchmarks/geocode.py)
    on = ~off
    if settled is not None:  # the border line confirmed the polygon's side (chosen on the even half)
        on &= ~np.isin(idx, settled)
    if on.any():
        cand = idx[on]
        before = method[cand].copy()
        sub_hints = np.full(len(lat), None, dtype=object)
        sub_hints[cand] = code[on]
        _apply_hints(ix, lat, lon, sub_hints, iso, name, method, dist, 0.0, place_km, only=cand)
        moved = cand[(method[cand] == "hint") & (before != "hint")]
        method[moved] = "place"


def _apply_borders(ix, lat, lon, iso, name, method, dist, border_km, reach_km=BORDER_REACH_KM, which="osm"):
    """Within ``border_km`` of another country, let a finer border line decide the side.

    ``which`` names the line: ``"osm"`` and ``"osm-rays"`` (OpenStreetMap land borders) or
    ``"wdb"`` (GSHHG WDBII).  From the nearest point ``b`` of the other country's boundary, a ray through the
    point is followed ``reach_km`` further into the polygon's own country, and one from the
    point through ``b`` ``reach_km`` into the other country.  If the line crosses the first an
    odd number of times and the second an even number (the point lies on the other country's
    side of the finer line, and the two lines agree farther out), the other country wins.

    With ``which="osm"`` the clipped OpenStreetMap polygons decide first
    (``_polygon_side``): a point held by exactly one of the two countries' polygons is on that
    country's side, whatever the rays say; the rays decide the rest (a river the land polygons
    leave as water, as at Narva, an overlap).

    Returns the points the line (or the polygons) confirms on their polygon's side (the first ray crossed an
    even number of times, the second an odd number).  The ``place`` pass leaves them inside
    their polygon: near a border the nearest place is often the twin town across the river,
    and the line is the better evidence.
    """
    cand = np.flatnonzero((method == "within") & (np.abs(lon) < 179.0))
    if not len(cand) or border_km <= 0:
        return np.empty(0, int)
    pt, part, d, blat, blon = ix.distances(lat[cand], lon[cand], border_km, return_points=True)
    other = ix.part_iso[part] != iso[cand[pt]]
    pt, part, d, blat, blon = pt[other], part[other], d[other], blat[other], blon[other]
    if not len(pt):
        return np.empty(0, int)
    # the nearest other country of each point
    order = np.lexsort((d, pt))
    first = order[np.r_[True, pt[order][1:] != pt[order][:-1]]]
    pt, part, d, blat, blon = pt[first], part[first], d[first], blat[first], blon[first]
    g = cand[pt]
    kx = np.radians(1.0) * EARTH_RADIUS_KM * np.cos(np.radians(lat[g]))
    ky = np.radians(1.0) * EARTH_RADIUS_KM
    vx, vy = (lon[g] - blon) * kx, (lat[g] - blat) * ky
    norm = np.hypot(vx, vy)
    ok = norm > 1e-6  # a point on the line itself has no side to test
    g, part, d, vx, vy, norm, kx = g[ok], part[ok], d[ok], vx[ok], vy[ok], norm[ok], kx[ok]
    vx, vy = vx / norm, vy / norm
    b = _borders("wdb" if which == "wdb" else "osm")
    own = b.crossings(lon[g], lat[g], lon[g] + vx * reach_km / kx, lat[g] + vy * reach_km / ky)
    far = d + reach_km
    across = b.crossings(lon[g], lat[g], lon[g] - vx * far / kx, lat[g] - vy * far / ky)
    flip = (own % 2 == 1) & (across % 2 == 0)
    keep = (own % 2 == 0) & (across % 2 == 1)  # the line confirms the polygon's side
    if which == "osm":
        # the clipped OpenStreetMap polygons decide where exactly one of the two holds the point
        poly_flip, poly_keep = _polygon_side(lat[g], lon[g], iso[g], ix.part_iso[part])
        decided = poly_flip | poly_keep
        flip = np.where(decided, poly_flip, flip)
        keep = np.where(decided, poly_keep, keep)
    settled = g[keep]
    g, part, d = g[flip], part[flip], d[flip]
    iso[g], name[g], method[g], dist[g] = ix.part_iso[part], ix.part_name[part], "border", d
    return settled


def _polygon_side(lat, lon, own, other):
    """Which side the clipped OpenStreetMap polygons put each point on: (other, own) masks.

    A point held by the other country's polygon and not by its own polygon country's goes
    across; one held by its own and not the other's stays.  Where neither holds it (a river
    the land polygons leave as water) or both do, neither mask is set and the rays decide.
    """
    bp = _border_polygons()
    pi, pj = bp.holders(lon, lat)
    code = bp.country[pj]
    in_own = np.zeros(len(lat), bool)
    in_other = np.zeros(len(lat), bool)
    in_own[pi[code == own[pi]]] = True
    in_other[pi[code == other[pi]]] = True
    return in_other & ~in_own, in_own & ~in_other


def _apply_islands(ix, places, lat, lon, iso, name, method, dist, tol, island_km, k=8):
    """A point far from every polygon takes the country of the nearest place that is itself
    far from every polygon (an atoll or islet the 1:10m coastline leaves out).

    "Far" for the place is at least the default coastal tolerance, so that with the coastal
    pass off a town on a generalised beach does not count as an island.
    """
    g = np.flatnonzero(method == "unassigned")
    if not len(g):
        return
    code, d, i = places._query(lat[g], lon[g], island_km, k=k)
    cand = np.unique(i[i >= 0])
    if not len(cand):
        return
    # which of those places lie in no polygon and farther than tol from every boundary
    plat, plon = places.latitude[cand], places.longitude[cand]
    off = np.ones(len(cand), bool)
    rows, _ = ix.within(plon, plat)
    off[rows] = False
    pt, _, _ = ix.distances(plat, plon, max(tol, DEFAULT_TOLERANCE_KM))
    off[pt] = False
    island = np.zeros(len(places), bool)
    island[cand[off]] = True
    known = set(ix.iso_codes)
    use = (i >= 0) & island[np.maximum(i, 0)] & np.isin(code.astype(str), list(known))
    has = use.any(axis=1)
    j = np.argmax(use, axis=1)  # the nearest such place (columns are nearest first)
    g, j = g[has], j[has]
    names = dict(zip(ix.part_iso, ix.part_name))
    iso[g], method[g], dist[g] = code[has, j], "place", d[has, j]
    name[g] = [names.get(c) for c in iso[g]]


def _apply_hints(ix, lat, lon, hints, iso, name, method, dist, tol, hint_km, only=None):
    """Where the hint names another country close enough, take it (``method="hint"``)."""
    known = set(ix.iso_codes)
    if only is not None:
        mask = np.zeros(len(lat), bool)
        mask[only] = True
        hints = np.where(mask, hints, None)
    cand = np.flatnonzero(np.array([h is not None and h in known and h != i and m != "invalid"
                                    for h, i, m in zip(hints, iso, method)], dtype=bool))
    if not len(cand):
        return
    reach = np.where(method[cand] == "within", hint_km, max(tol, hint_km))
    pt, part, d = ix.distances(lat[cand], lon[cand], float(reach.max()))
    same = ix.part_iso[part] == hints[cand[pt]]
    pt, part, d = pt[same], part[same], d[same]
    ok = d <= reach[pt]
    pt, part, d = pt[ok], part[ok], d[ok]
    if not len(pt):
        return
    order = np.lexsort((d, pt))
    first = order[np.r_[True, pt[order][1:] != pt[order][:-1]]]
    g = cand[pt[first]]
    iso[g], name[g], method[g], dist[g] = ix.part_iso[part[first]], ix.part_name[part[first]], "hint", d[first]


def reverse_geocode_loop(latitude, longitude, *, scale=DEFAULT_SCALE):
    """Reference implementation: a plain per-point loop over every polygon (``within`` only).

    Slow on purpose; ``benchmarks/geocode.py`` compares it with :func:`reverse_geocode`.

    Parameters
    ----------
    latitude, longitude : sequence of float
        Degrees.
    scale : {"10m", "50m", "110m"}
        Natural Earth scale.

    Returns
    -------
    list of str or None
        The World Bank code of the first polygon that contains each point.
    """
    from shapely.geometry import Point

    ix = _index(scale)
    geoms = list(ix.countries.geometry)
    codes = list(ix.countries["iso3"])
    out = []
    for la, lo in zip(latitude, longitude):
        p = Point(lo, la)
        out.append(next((c for g, c in zip(geoms, codes) if g.contains(p)), None))
    return out
