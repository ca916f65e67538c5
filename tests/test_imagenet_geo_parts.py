"""Unit tests of the parts of the ImageNet geo-location build: Flickr look-ups (against a local
stub), the rate limiter (fake clock), reverse geocoding, GDP from wbgapi (monkeypatched) and
offline, and the split rule."""
from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from flickr_server import FlickrStub  # noqa: E402

from geoaudit._errors import GeoauditError, InputError  # noqa: E402
from geoaudit.data import reverse_geocode  # noqa: E402
from geoaudit.data._flickr import FlickrCache, FlickrGeoLocator, TokenBucket, photo_id_from_url  # noqa: E402
from geoaudit.data._gdp import gdp_per_capita, resolve_gdp  # noqa: E402
from geoaudit.data._geocode import haversine_km, reverse_geocode_loop  # noqa: E402
from geoaudit.data._imagenet_geo import split_of  # noqa: E402


class FakeClock:
    def __init__(self):
        self.t = 0.0
        self.sleeps = []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s


# --- Flickr -----------------------------------------------------------------------------------
@pytest.mark.parametrize("url, pid", [
    ("http://farm1.static.flickr.com/123/4567890_abcdef.jpg", "4567890"),
    ("http://farm4.static.flickr.com/3175/2737866473_7958dc8760.jpg", "2737866473"),
    ("https://live.staticflickr.com/65535/51234567_0a1b2c3d4e_b.jpg", "51234567"),
    ("http://www.flickr.com/photos/someone/2737866473/", "2737866473"),
    ("http://example.com/123/4567890_abcdef.jpg", None),
    ("http://farm1.static.flickr.com/123/not-a-photo.jpg", None),
    ("not a url at all", None),
])
def test_photo_id_from_url(url, pid):
    assert photo_id_from_url(url) == pid


def test_token_bucket_sustained_rate_with_fake_clock():
    clock = FakeClock()
    tb = TokenBucket(3600, capacity=1, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(50):
        tb.acquire()
        stamps.append(clock.t)
    # one call per second: 50 calls span 49 s; no window of t seconds holds more than 1 + t calls
    assert stamps[-1] == pytest.approx(49.0)
    gaps = np.diff(stamps)
    assert np.all(gaps >= 1.0 - 1e-9)
    # idle time refills at most `capacity` tokens: a burst of 5 after a long pause takes 4 s
    clock.t += 1000
    t0 = clock.t
    for _ in range(5):
        tb.acquire()
    assert clock.t - t0 == pytest.approx(4.0)


def test_token_bucket_burst_capacity():
    clock = FakeClock()
    tb = TokenBucket(360, capacity=10, clock=clock, sleep=clock.sleep)  # one per 10 s, bursts of 10
    for _ in range(10):
        tb.acquire()
    assert clock.t == 0.0
    tb.acquire()
    assert clock.t == pytest.approx(10.0)
    with pytest.raises(InputError, match="'rate_per_hour' parameter of TokenBucket must be a float in \\(0, inf\\)"):
        TokenBucket(0)


def test_locator_statuses_cache_and_rate(tmp_path):
    clock = FakeClock()
    photos = {"1": (48.85, 2.35), "2": "no_location", "3": "not_found", "4": ("http", 503, 2),
              "5": ("http", 429, 1)}
    with FlickrStub(photos, fallback=(59.91, 10.75)) as stub:
        loc = FlickrGeoLocator("testkey", "secret", cache=tmp_path / "c.sqlite", rest_url=stub.url,
                               rate_per_hour=3600, backoff_s=5.0, clock=clock, sleep=clock.sleep)
        stats = loc.locate(["1", "2", "3", "4", "5", "1"])
        assert stats.requested == 5 and stats.cached == 0
        assert stats.statuses == {"ok": 3, "no_location": 1, "not_found": 1}
        assert stats.retries == 3 and stats.failed == ()
        assert stats.calls == 8 == stub.total_calls
        ans = loc.answers(["1", "2", "3", "4"])
        assert ans["1"] == ("ok", pytest.approx(48.85), pytest.approx(2.35))
        assert ans["2"][0] == "no_location" and ans["3"][0] == "not_found"
        assert ans["4"][:2] == ("ok", pytest.approx(59.91))
        # backoff 5 s, then 10 s for photo 4; the 429 pauses the limiter 5 s; never over 1 call/s
        assert 5.0 in clock.sleeps and 10.0 in clock.sleeps
        assert clock.t >= 5 + 10 + 5 - 1e-6
        assert stats.calls <= 1 + clock.t
        loc.close()
        # a new run (a resumed build) repeats no call: everything comes from the SQLite cache
        loc2 = FlickrGeoLocator("testkey", "secret", cache=tmp_path / "c.sqlite", rest_url=stub.url,
                                clock=clock, sleep=clock.sleep)
        stats2 = loc2.locate(iter(["1", "2", "3", "4", "5"]), total=5)
        assert stats2.calls == 0 and stats2.cached == 5
        assert stub.total_calls == 8
        loc2.close()


def test_locator_gives_up_after_retries_without_caching(tmp_path):
    clock = FakeClock()
    with FlickrStub({"9": ("http", 500, 100)}) as stub:
        loc = FlickrGeoLocator("testkey", "s", cache=tmp_path / "c.sqlite", rest_url=stub.url, max_retries=2,
                               backoff_s=1.0, clock=clock, sleep=clock.sleep)
        stats = loc.locate(["9"])
        assert stats.failed == ("9",) and stub.calls["9"] == 3
        assert len(loc.cache) == 0  # transient failures are never cached: a re-run tries again


def test_locator_stops_when_flickr_is_down(tmp_path):
    clock = FakeClock()
    photos = {"1": (1.0, 1.0), **{str(i): ("http", 502, 100) for i in range(2, 9)}}
    with FlickrStub(photos) as stub:
        loc = FlickrGeoLocator("testkey", "s", cache=tmp_path / "c.sqlite", rest_url=stub.url, max_retries=1,
                               clock=clock, sleep=clock.sleep)
        with pytest.raises(GeoauditError, match="did not answer for 3 photos in a row.*502.*re-run"):
            loc.locate([str(i) for i in range(1, 9)])
        assert stub.http_calls == 1 + 3 * 2  # stopped after photo 4, each tried twice
        assert loc.answers(["1"])["1"][0] == "ok"  # the answer before the outage is kept


def test_locator_bad_credentials(tmp_path):
    with FlickrStub({"1": (1.0, 1.0)}) as stub:
        loc = FlickrGeoLocator("not-the-key", "s", cache=tmp_path / "c.sqlite", rest_url=stub.url)
        with pytest.raises(GeoauditError, match="Flickr rejected the API key or secret .*100.*Invalid API Key"):
            loc.locate(["1", "2"])
        assert stub.http_calls == 1
    with pytest.raises(InputError, match="'flickr_key' parameter must be a non-empty string"):
        FlickrGeoLocator("", "s", cache=tmp_path / "c.sqlite")


def test_flickr_stub_speaks_xml_too():
    import flickrapi

    with FlickrStub({"1": (48.85, 2.35), "2": "no_location"}) as stub:
        api = flickrapi.FlickrAPI("testkey", "s", format="etree", store_token=False)
        api.REST_URL = stub.url
        rsp = api.photos.geo.getLocation(photo_id="1")
        assert float(rsp.find("photo/location").attrib["latitude"]) == pytest.approx(48.85)
        with pytest.raises(flickrapi.exceptions.FlickrError) as e:
            api.photos.geo.getLocation(photo_id="2")
        assert e.value.code == 2


def test_corrupt_cache_file_is_one_clear_message(tmp_path):
    bad = tmp_path / "c.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InputError, match="is not a usable SQLite database"):
        FlickrCache(bad)


# --- reverse geocoding ------------------------------------------------------------------------
def test_reverse_geocode_cities_and_traps():
    pts = {
        "Paris": (48.8566, 2.3522, "FRA"), "Oslo": (59.9139, 10.7522, "NOR"),  # ISO_A3 -99 in Natural Earth
        "Pristina": (42.6629, 21.1655, "XKX"), "Phnom Penh": (11.5564, 104.9282, "KHM"),  # KOS -> XKX
        "Sao Paulo": (-23.5505, -46.6333, "BRA"), "Juba": (4.85, 31.58, "SSD"), "Ramallah": (31.90, 35.20, "PSE"),
        "Singapore": (1.29, 103.85, "SGP"),
    }
    lat = [v[0] for v in pts.values()]
    lon = [v[1] for v in pts.values()]
    df = reverse_geocode(lat, lon)
    assert df["country_iso3"].tolist() == [v[2] for v in pts.values()]
    assert set(df["method"]) == {"within"}
    assert df.loc[0, "country_name"] == "France"


# GeoNames points of border towns on which the rays against the OpenStreetMap line alone
# ("osm-rays") go wrong and the clipped OpenStreetMap polygons (the default) decide right:
# (latitude, longitude, own country, country of the rays alone)
POLYGON_SIDE_TOWNS = {
    "Narva": (59.37722, 28.19028, "EST", "RUS"),  # the land polygons leave the river as water
    "Alashankou": (45.17018, 82.56981, "CHN", "KAZ"),
    "Riehen": (47.57884, 7.64683, "CHE", "DEU"),
    "Islaz": (43.72006, 24.76436, "ROU", "BGR"),  # the Danube
    "Corabia": (43.77513, 24.50146, "ROU", "BGR"),
}


def test_border_polygons_put_border_towns_on_their_side():
    names = list(POLYGON_SIDE_TOWNS)
    lat = [POLYGON_SIDE_TOWNS[n][0] for n in names]
    lon = [POLYGON_SIDE_TOWNS[n][1] for n in names]
    rays = reverse_geocode(lat, lon, places=None, borders="osm-rays")["country_iso3"].tolist()
    assert rays == [POLYGON_SIDE_TOWNS[n][3] for n in names]
    poly = reverse_geocode(lat, lon, places=None)  # borders="osm" is the default
    assert poly["country_iso3"].tolist() == [POLYGON_SIDE_TOWNS[n][2] for n in names]
    # with the shipped places in use (the towns among them) these border towns stay right; in the
    # benchmark's folds, without their own places, Thonex, Chui and Bernardo de Irigoyen are
    # still left across (a guard, not a fix of the polygon test)
    towns = {"Thonex": (46.18815, 6.19904, "CHE"), "Chui": (-33.69111, -53.45667, "BRA"),
             "Chuy": (-33.69792, -53.45926, "URY"), "Bernardo de Irigoyen": (-26.25543, -53.64682, "ARG"),
             "Narva": (59.37722, 28.19028, "EST"), "Ivangorod": (59.37685, 28.22163, "RUS")}
    r = reverse_geocode([v[0] for v in towns.values()], [v[1] for v in towns.values()])
    assert r["country_iso3"].tolist() == [v[2] for v in towns.values()]


def test_border_polygons_file_decodes_to_clipped_country_polygons():
    from geoaudit.data._geocode import _border_polygons, _polygon_side

    bp = _border_polygons()
    assert {"EST", "RUS", "XKX", "SMR", "CHE", "FRA"} <= set(bp.country)
    # Narva's point lies in Estonia's clipped polygon, a point in Ivangorod in Russia's; the
    # Narva river between them is in neither, and Paris is far from every land border
    pt, poly = bp.holders(np.array([28.19028, 28.22163, 28.2040, 2.3522]), np.array([59.37722, 59.37685, 59.3760, 48.8566]))
    got = dict(zip(pt.tolist(), bp.country[poly].tolist()))
    assert got == {0: "EST", 1: "RUS"}
    other, own = _polygon_side(np.array([59.37722, 59.3760]), np.array([28.19028, 28.2040]),
                               np.array(["RUS", "RUS"], dtype=object), np.array(["EST", "EST"], dtype=object))
    assert other.tolist() == [True, False] and own.tolist() == [False, False]


def test_reverse_geocode_coast_tolerance_and_unassigned():
    lat = [43.62, 30.0, float("nan"), 95.0]
    lon = [7.30, -40.0, 1.0, 0.0]
    df = reverse_geocode(lat, lon)
    assert df["method"].tolist() == ["nearest", "unassigned", "invalid", "invalid"]
    assert df.loc[0, "country_iso3"] == "FRA" and 1 < df.loc[0, "distance_km"] < 25
    assert df.loc[1, "country_iso3"] is None
    # tolerance 0 turns the coastal pass off; a tolerance below the distance leaves it out
    assert reverse_geocode([43.62], [7.30], tolerance_km=0)["method"][0] == "unassigned"
    d = df.loc[0, "distance_km"]
    assert reverse_geocode([43.62], [7.30], tolerance_km=d * 0.9)["method"][0] == "unassigned"
    assert reverse_geocode([43.62], [7.30], tolerance_km=d * 1.1)["method"][0] == "nearest"


def test_reverse_geocode_matches_plain_loop_on_random_points():
    rng = np.random.default_rng(0)
    lat = rng.uniform(-55, 70, 300)
    lon = rng.uniform(-180, 180, 300)
    fast = reverse_geocode(lat, lon, tolerance_km=0)["country_iso3"].tolist()
    slow = reverse_geocode_loop(lat, lon)
    assert fast == slow
    assert sum(c is not None for c in fast) > 50


def test_reverse_geocode_bad_input():
    with pytest.raises(InputError, match="same length"):
        reverse_geocode([1.0, 2.0], [1.0])
    with pytest.raises(InputError, match="'tolerance_km' parameter of reverse_geocode"):
        reverse_geocode([1.0], [1.0], tolerance_km=-1)


def test_haversine():
    # Paris-London is about 344 km
    assert haversine_km(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(344, abs=2)


# --- GDP --------------------------------------------------------------------------------------
def _fake_wbgapi(monkeypatch, calls):
    import wbgapi as wb

    def fetch(series, economy="all", **kw):
        calls.append((series, economy, kw))
        rows = [("FRA", 2021, 43659.0), ("FRA", 2022, 40886.3), ("FRA", 2023, None),
                ("XKX", 2022, 5350.0), ("PRK", 2022, None)]
        for e, t, v in rows:
            yield {"value": v, "series": series, "economy": e, "aggregate": False, "time": t}

    def economies(**kw):
        return iter([{"id": "FRA", "value": "France"}, {"id": "XKX", "value": "Kosovo"},
                     {"id": "PRK", "value": "Korea, Dem. People's Rep."}])

    monkeypatch.setattr(wb.data, "fetch", fetch)
    monkeypatch.setattr(wb.economy, "list", economies)


def test_gdp_from_wbgapi(monkeypatch):
    calls = []
    _fake_wbgapi(monkeypatch, calls)
    df, src = resolve_gdp("latest", source="wbgapi")
    assert calls[0][0] == "NY.GDP.PCAP.CD" and calls[0][2]["skipAggs"] is True
    assert "wbgapi" in src
    assert df.loc["FRA", "gdp_per_capita_usd"] == pytest.approx(40886.3) and df.loc["FRA", "gdp_year"] == 2022
    assert df.loc["XKX", "country_name"] == "Kosovo"
    assert df.loc["FRA", "income_group"] == "High income"  # from the shipped metadata
    assert math.isnan(df.loc["PRK", "gdp_per_capita_usd"]) and pd.isna(df.loc["PRK", "gdp_year"])  # kept
    df21 = gdp_per_capita(2021, source="wbgapi")
    assert df21.loc["FRA", "gdp_per_capita_usd"] == pytest.approx(43659.0)


def test_gdp_offline_uses_snapshot_with_message(monkeypatch, caplog):
    import wbgapi as wb

    def boom(*a, **k):
        raise AssertionError("offline must not call the World Bank API")

    monkeypatch.setattr(wb.data, "fetch", boom)
    with caplog.at_level(logging.INFO, logger="geoaudit.data._gdp"):
        df, src = resolve_gdp("latest", source="auto", offline=True)
    assert "snapshot" in src and "Offline" in caplog.text
    assert df.loc["USA", "gdp_per_capita_usd"] == pytest.approx(81695, rel=1e-3)


def test_gdp_api_failure_falls_back_or_raises(monkeypatch, caplog):
    import wbgapi as wb

    def down(*a, **k):
        raise ConnectionError("no route to api.worldbank.org")

    monkeypatch.setattr(wb.data, "fetch", down)
    with caplog.at_level(logging.WARNING, logger="geoaudit.data._gdp"):
        df, src = resolve_gdp(2020, source="auto")
    assert "snapshot" in src and "World Bank API unavailable" in caplog.text
    with pytest.raises(GeoauditError, match="World Bank API could not be reached.*offline=True"):
        resolve_gdp(2020, source="wbgapi")
    with pytest.raises(InputError, match="'source' parameter"):
        resolve_gdp(2020, source="internet")


# --- split ------------------------------------------------------------------------------------
def test_split_rule_is_deterministic_and_60_20_20():
    ids = [f"n01440764_{i}" for i in range(20000)]
    splits = [split_of(i) for i in ids]
    assert splits == [split_of(i) for i in ids]
    frac = pd.Series(splits).value_counts(normalize=True)
    assert frac["train"] == pytest.approx(0.6, abs=0.015)
    assert frac["validation"] == pytest.approx(0.2, abs=0.015)
    assert frac["test"] == pytest.approx(0.2, abs=0.015)


# --- Flickr errors that are not answers about a photo ------------------------------------------
@pytest.mark.parametrize("code, msg", [(95, "SSL is required"), (112, 'Method "x" not found'),
                                       (116, "Bad URL found"), (999, "Something new")])
def test_flickr_request_errors_stop_and_are_never_cached(tmp_path, code, msg):
    photos = {"1": (48.85, 2.35), "2": ("error", code, msg), "3": (52.52, 13.40)}
    with FlickrStub(photos) as stub:
        loc = FlickrGeoLocator("testkey", "s", cache=tmp_path / "c.sqlite", rest_url=stub.url, rate_per_hour=1e6,
                               backoff_s=0.0)
        with pytest.raises(GeoauditError, match=f"Flickr answered error {code} .*nothing was cached"):
            loc.locate(["1", "2", "3"])
        cached = loc.answers(["1", "2", "3"])
        loc.close()
        assert set(cached) == {"1"}  # the answer before the error is kept; the error is not
        assert stub.calls["3"] == 0  # the run stopped at the error
        # a re-run asks Flickr again for the photo that got the error
        photos_ok = FlickrGeoLocator("testkey", "s", cache=tmp_path / "c.sqlite", rest_url=stub.url,
                                     rate_per_hour=1e6)
        with pytest.raises(GeoauditError):
            photos_ok.locate(["2"])
        photos_ok.close()
        assert stub.calls["2"] == 2 and stub.calls["1"] == 1


def test_flickr_not_found_and_no_location_are_cached_with_accuracy_and_country(tmp_path):
    photos = {"1": (43.0962, -79.0377, 11, "United States"), "2": "no_location", "3": "not_found"}
    with FlickrStub(photos) as stub:
        loc = FlickrGeoLocator("testkey", "s", cache=tmp_path / "c.sqlite", rest_url=stub.url, rate_per_hour=1e6)
        stats = loc.locate(["1", "2", "3"])
        loc.close()
    assert stats.statuses == {"ok": 1, "no_location": 1, "not_found": 1}
    import sqlite3

    rows = dict((r[0], r[1:]) for r in sqlite3.connect(str(tmp_path / "c.sqlite")).execute(
        "SELECT photo_id, status, accuracy, country FROM answers"))
    assert rows == {"1": ("ok", 11, "United States"), "2": ("no_location", None, None),
                    "3": ("not_found", None, None)}
    cache = FlickrCache(tmp_path / "c.sqlite")
    with pytest.raises(GeoauditError, match="Only per-photo answers are cached"):
        cache.put("4", "lookup_failed")
    cache.close()


def test_flickr_cache_from_before_country_column_is_upgraded(tmp_path):
    import sqlite3

    db = sqlite3.connect(str(tmp_path / "old.sqlite"))
    db.execute("CREATE TABLE answers (photo_id TEXT PRIMARY KEY, status TEXT NOT NULL, latitude REAL, "
               "longitude REAL, accuracy INTEGER, fetched_at REAL)")
    db.execute("INSERT INTO answers VALUES ('9', 'ok', 1.0, 2.0, 16, 0)")
    db.commit()
    db.close()
    c = FlickrCache(tmp_path / "old.sqlite")
    c.put("10", "ok", 3.0, 4.0, 12, "France")
    assert c.get_many(["9", "10"]) == {"9": ("ok", 1.0, 2.0), "10": ("ok", 3.0, 4.0)}
    c.close()


# --- the URL list as it really is ---------------------------------------------------------------
@pytest.mark.parametrize("url, pid", [
    ("\ufeffhttp://farm1.static.flickr.com/123/4567890_abcdef.jpg", "4567890"),
    ("http://farm3.static.flickr.com/2185/2254451932_b1f1e9a6bd.jpg%20", "2254451932"),
    ("http://flic.kr/p/2mdvcm", "885126246"),
    ("https://flic.kr/p/1", "0"),
    ("http://www.flickr.com/photo_zoom.gne?id=2737866473&size=l", "2737866473"),
    ("www.flickr.com/photos/someone/2737866473/", "2737866473"),
    ("static.flickr.com/12/345_ab.jpg", "345"),
    ("http://flic.kr/p/0OIl", None),  # not base58
])
def test_photo_id_from_real_url_list_forms(url, pid):
    assert photo_id_from_url(url) == pid


def test_base58_round_trip():
    from geoaudit.data._flickr import BASE58, base58_decode

    def encode(n):
        s = ""
        while n:
            n, r = divmod(n, 58)
            s = BASE58[r] + s
        return s or BASE58[0]

    for n in (1, 57, 58, 3_000_000_000, 51_234_567_890):
        assert base58_decode(encode(n)) == n


def test_parse_url_line_bom_and_scheme_less():
    from geoaudit.data.imagenet_geo.inputs import parse_url_line

    assert parse_url_line("\ufeffn01440764_1\thttp://a.b/c.jpg\n".encode()) == ("n01440764_1", "http://a.b/c.jpg")
    assert parse_url_line(b"n01440764_2 www.flickr.com/photos/x/5/") == ("n01440764_2", "www.flickr.com/photos/x/5/")
    assert parse_url_line(b"n01440764_3\t\xff\xfe broken") is None
    assert parse_url_line(b"# comment") is None and parse_url_line(b"   \n") is None


def test_the_source_parameters_are_defined_once():
    """ImageNetGeoConfig mirrors ImageNetGeoSources (datasets needs its own fields): same names,
    same defaults; build_imagenet_geo takes them as keywords and refuses unknown ones."""
    import dataclasses

    from geoaudit.data import ImageNetGeoConfig, ImageNetGeoSources, build_imagenet_geo

    src = {f.name: f.default for f in dataclasses.fields(ImageNetGeoSources)}
    cfg = {f.name: f.default for f in dataclasses.fields(ImageNetGeoConfig)}
    assert {k: cfg[k] for k in src} == src
    with pytest.raises(InputError, match="the location and GDP sources accept urls, flickr_key"):
        build_imagenet_geo("never-built", imagenet_dir=".", flickr_rate_per_hour=10)
