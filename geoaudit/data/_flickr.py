"""Flickr geo look-ups (``flickr.photos.geo.getLocation``) with a rate limiter and a SQLite cache.

ImageNet's URL list maps each image id to the photo's original URL; Flickr static URLs carry
the photo id (``http://farm1.static.flickr.com/123/4567890_abcdef.jpg`` -> ``4567890``).
Every per-photo answer Flickr gives (a location, error 2 "no location", error 1 "photo not
found") is stored in a persistent SQLite cache before the next call, so a killed build
resumes without repeating a call.  Only those answers are cached.  Transient failures (HTTP
5xx, connection errors, "service unavailable", rate limiting) are retried with exponential
backoff; every other error code (95 SSL required, 112 method not found, 116 bad URL, a bad
key, a code Flickr does not document) says nothing about the photo, so it stops the run
with one message and is never cached.
"""
from __future__ import annotations

import itertools
import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from geoaudit._errors import GeoauditError, InputError
from geoaudit._progress import progress
from geoaudit._validation import check_interval

log = logging.getLogger(__name__)

#: Flickr's documented limit: 3,600 queries per hour per API key.
FLICKR_CALLS_PER_HOUR = 3600

#: Statuses recorded per photo.  "ok": located; "no_location": the photo has no geo data
#: (Flickr error 2); "not_found": deleted, private or never existed (Flickr error 1);
#: "not_flickr": the URL is not a Flickr photo URL (no photo id).
STATUSES = ("ok", "no_location", "not_found", "not_flickr")

# Flickr API error codes (https://www.flickr.com/services/api/flickr.photos.geo.getLocation.html)
_CODE_NOT_FOUND = 1
_CODE_NO_LOCATION = 2
_CODES_BAD_CREDENTIALS = {96, 97, 98, 99, 100}  # invalid/missing signature, login failed, invalid key
_CODES_TRANSIENT = {105, 106}  # service unavailable, write failed
#: Errors about the request, not the photo: caching them would mark every photo.
FATAL_CODES = {95: "SSL is required", 112: "method not found", 116: "bad URL"}

FATAL_MSG = (
    "Flickr answered error {code} ({detail}) for photo {photo_id}. That is an error of the request, "
    "not an answer about the photo, so nothing was cached; the answers obtained so far are kept in "
    "{cache}. Check the REST endpoint (it must be https://api.flickr.com/services/rest/) and the "
    "flickrapi version, then re-run the same command."
)

BAD_CREDENTIALS_MSG = (
    "Flickr rejected the API key or secret ({detail}). Check the key and its secret (from "
    "https://www.flickr.com/services/apps/create/, given as FLICKR_API_KEY and FLICKR_API_SECRET), "
    "or locate the images from a CSV of known locations instead of Flickr."
)

# farm1.static.flickr.com/123/4567890_abcdef.jpg, live.staticflickr.com/65535/4567890_abc_b.jpg,
# www.flickr.com/photos/user/4567890/, www.flickr.com/photo_zoom.gne?id=4567890, flic.kr/p/{base58}
_STATIC_RE = re.compile(r"/(\d+)_[0-9a-zA-Z]+(?:_[a-z0-9]+)?\.(?:jpe?g|png|gif)$", re.IGNORECASE)
_PAGE_RE = re.compile(r"^/photos/[^/]+/(\d+)(?:/|$)")
_SHORT_RE = re.compile(r"^/p/([1-9a-km-zA-HJ-NP-Z]+)/?$")
#: Flickr's base58 alphabet (no 0, O, I, l) for flic.kr short links.
BASE58 = "123456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"


def base58_decode(text: str) -> int:
    """The photo id of a ``flic.kr/p/<text>`` short link.

    Parameters
    ----------
    text : str
        Base58 digits in Flickr's alphabet.

    Returns
    -------
    int

    Examples
    --------
    >>> base58_decode("2mdvcm")
    885126246
    """
    n = 0
    for ch in text:
        n = n * 58 + BASE58.index(ch)
    return n


def photo_id_from_url(url: str) -> str | None:
    """The Flickr photo id carried by a Flickr photo URL, or None for any other URL.

    Examples
    --------
    >>> photo_id_from_url("http://farm1.static.flickr.com/123/4567890_abcdef.jpg")
    '4567890'
    >>> photo_id_from_url("http://example.com/dog.jpg") is None
    True
    """
    url = url.strip().lstrip("\ufeff")
    if "://" not in url[:12]:
        url = "http://" + url  # the list has scheme-less "www.flickr.com/..." lines
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    path = unquote(parts.path).strip()  # ".jpg%20" in the list: a trailing encoded space
    if host == "flic.kr":
        m = _SHORT_RE.match(path)
        return str(base58_decode(m.group(1))) if m else None
    if not (host == "flickr.com" or host.endswith(".flickr.com") or host.endswith(".staticflickr.com")
            or host == "staticflickr.com"):
        return None
    if path.endswith("/photo_zoom.gne") or path.endswith("/photo.gne"):
        ids = parse_qs(parts.query).get("id", [])
        return ids[0] if ids and ids[0].isdigit() else None
    m = _STATIC_RE.search(path) or _PAGE_RE.match(path)
    return m.group(1) if m else None


class TokenBucket:
    """A token-bucket rate limiter: at most ``capacity`` calls at once, ``rate_per_hour`` sustained.

    Over any window of ``t`` seconds at most ``capacity + rate_per_hour * t / 3600`` calls pass.

    Parameters
    ----------
    rate_per_hour : float
        Sustained calls per hour (Flickr allows 3,600 per key).
    capacity : float
        Burst size; 1 spaces calls evenly.
    clock, sleep : callables
        Injected for tests (a fake clock); default ``time.monotonic`` and ``time.sleep``.
    """

    def __init__(self, rate_per_hour=FLICKR_CALLS_PER_HOUR, *, capacity=1.0, clock=time.monotonic,
                 sleep=time.sleep):
        self.rate = check_interval("rate_per_hour", rate_per_hour, 0, None, caller="TokenBucket",
                                   closed="neither") / 3600.0
        self.capacity = check_interval("capacity", capacity, 1, None, caller="TokenBucket")
        self._clock, self._sleep = clock, sleep
        self._tokens = self.capacity
        self._last = clock()

    def _refill(self):
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def acquire(self):
        """Block until a call may go out, then spend one token."""
        self._refill()
        while self._tokens < 1.0:
            self._sleep((1.0 - self._tokens) / self.rate)
            self._refill()
        self._tokens -= 1.0

    def pause(self, seconds):
        """Spend no tokens for ``seconds`` (after the server said we are going too fast)."""
        self._sleep(seconds)
        self._refill()
        self._tokens = min(self._tokens, 0.0)


class FlickrCache:
    """Persistent answers of ``flickr.photos.geo.getLocation``, keyed by photo id (SQLite, WAL)."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path))
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers (photo_id TEXT PRIMARY KEY, status TEXT NOT NULL, "
                "latitude REAL, longitude REAL, accuracy INTEGER, fetched_at REAL)"
            )
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(answers)")}
            if "country" not in cols:  # caches written before Flickr's country was kept
                self._db.execute("ALTER TABLE answers ADD COLUMN country TEXT")
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise InputError(f"The Flickr cache {str(self.path)!r} is not a usable SQLite database ({e}); "
                             "delete it or pass another cache path.") from e

    def get_many(self, photo_ids) -> dict:
        """Answers already cached, as ``{photo_id: (status, latitude, longitude)}``."""
        out = {}
        ids = list(photo_ids)
        for i in range(0, len(ids), 900):  # SQLite's bound-variable limit
            chunk = ids[i:i + 900]
            q = f"SELECT photo_id, status, latitude, longitude FROM answers WHERE photo_id IN ({','.join('?' * len(chunk))})"
            for pid, status, lat, lon in self._db.execute(q, chunk):
                out[pid] = (status, lat, lon)
        return out

    def put(self, photo_id, status, latitude=None, longitude=None, accuracy=None, country=None):
        if status not in ("ok", "no_location", "not_found"):
            raise GeoauditError(f"Only per-photo answers are cached; got status {status!r} for photo {photo_id}.")
        self._db.execute(
            "INSERT OR REPLACE INTO answers (photo_id, status, latitude, longitude, accuracy, fetched_at, country) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (str(photo_id), status, latitude, longitude, accuracy, time.time(), country),
        )
        self._db.commit()  # one commit per answer: a kill loses at most the call in flight

    def __len__(self):
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self):
        self._db.close()


def default_cache_path() -> Path:
    """``$GEOAUDIT_CACHE_DIR`` or ``$XDG_CACHE_HOME/geoaudit`` (``~/.cache/geoaudit``) / flickr_geo.sqlite."""
    base = os.environ.get("GEOAUDIT_CACHE_DIR")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "geoaudit")
    return Path(base) / "flickr_geo.sqlite"


class _Transient(Exception):
    def __init__(self, msg, *, rate_limited=False):
        super().__init__(msg)
        self.rate_limited = rate_limited


@dataclass(frozen=True)
class FlickrLookupStats:
    """What a look-up run did: counts per status, calls made, retries and photos that still failed."""

    requested: int
    cached: int
    calls: int
    retries: int
    statuses: dict = field(default_factory=dict)
    failed: tuple = ()
    elapsed_s: float = 0.0

    def to_dict(self):
        return {"requested": self.requested, "cached": self.cached, "calls": self.calls,
                "retries": self.retries, "statuses": dict(self.statuses),
                "failed": list(self.failed), "elapsed_s": float(self.elapsed_s)}


class FlickrGeoLocator:
    """Locate Flickr photos with ``flickr.photos.geo.getLocation``.

    Parameters
    ----------
    api_key, api_secret : str
        Flickr API credentials.
    cache : str or Path, optional
        The SQLite answer cache (default :func:`default_cache_path`).
    rate_per_hour : float
        Sustained call rate (Flickr allows 3,600 calls per hour per key).
    max_retries : int
        Retries of a transient failure before the photo is left for the next run.
    backoff_s : float
        First retry delay; it doubles at each retry (capped at ``max_backoff_s``).
    rest_url : str, optional
        The REST endpoint (default Flickr's ``https://api.flickr.com/services/rest/``);
        tests point it at a local server.
    timeout_s : float
        HTTP timeout per call.
    max_consecutive_failures : int
        Photos in a row whose retries all failed before the run stops (Flickr is down or
        unreachable); the answers so far stay cached.
    clock, sleep : callables
        Injected for tests.
    """

    def __init__(self, api_key, api_secret, *, cache=None, rate_per_hour=FLICKR_CALLS_PER_HOUR,
                 max_retries=5, backoff_s=2.0, max_backoff_s=300.0, rest_url=None, timeout_s=30.0,
                 max_consecutive_failures=3, clock=time.monotonic, sleep=time.sleep):
        import flickrapi

        for name, value in (("flickr_key", api_key), ("flickr_secret", api_secret)):
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"The {name!r} parameter must be a non-empty string (your Flickr API "
                                 f"{'key' if name == 'flickr_key' else 'secret'}). Got {value!r} instead.")
        self.max_retries = check_interval("max_retries", max_retries, 0, None, caller="FlickrGeoLocator", integer=True)
        self.backoff_s = check_interval("backoff_s", backoff_s, 0, None, caller="FlickrGeoLocator")
        self.max_backoff_s = float(max_backoff_s)
        self.limiter = TokenBucket(rate_per_hour, clock=clock, sleep=sleep)
        self._sleep = sleep
        self._clock = clock
        # store_token=False: never read or write ~/.flickr tokens; public geo data needs none
        flog = logging.getLogger("flickrapi")
        if flog.level == logging.NOTSET:  # it logs every call at INFO and every HTTP error; we report those ourselves
            flog.setLevel(logging.CRITICAL)
        self.api = flickrapi.FlickrAPI(api_key.strip(), api_secret.strip(), format="parsed-json",
                                       store_token=False, timeout=timeout_s)
        if rest_url:
            self.api.REST_URL = rest_url  # instance attribute shadows FlickrAPI.REST_URL
        self.cache = FlickrCache(cache or default_cache_path())
        self.calls = 0
        self.max_consecutive_failures = check_interval("max_consecutive_failures", max_consecutive_failures, 1, None,
                                                       caller="FlickrGeoLocator", integer=True)
        self._last_error = None

    # one HTTP call, classified
    def _call(self, photo_id):
        import requests
        from flickrapi.exceptions import FlickrError

        self.limiter.acquire()
        self.calls += 1
        try:
            rsp = self.api.photos.geo.getLocation(photo_id=photo_id)
        except FlickrError as e:
            code = e.code
            msg = str(e)
            if code == _CODE_NOT_FOUND:
                return ("not_found", None, None, None, None)
            if code == _CODE_NO_LOCATION:
                return ("no_location", None, None, None, None)
            if code in _CODES_BAD_CREDENTIALS:
                raise GeoauditError(BAD_CREDENTIALS_MSG.format(detail=msg)) from None
            if code is None:  # HTTP status other than 200
                m = re.search(r"Status code (\d+)", msg)
                status = int(m.group(1)) if m else 0
                if status in (401, 403):
                    raise GeoauditError(BAD_CREDENTIALS_MSG.format(detail=f"HTTP {status}")) from None
                raise _Transient(msg, rate_limited=status == 429)
            if code in _CODES_TRANSIENT:
                raise _Transient(msg)
            # 95, 112, 116 and any code Flickr does not document: about the request, not the photo
            detail = FATAL_CODES.get(code, "an error code geoaudit does not know")
            raise GeoauditError(FATAL_MSG.format(code=code, detail=f"{detail}: {msg}", photo_id=photo_id,
                                                 cache=self.cache.path)) from None
        except (requests.ConnectionError, requests.Timeout) as e:
            raise _Transient(f"{type(e).__name__}: {e}") from None
        except ValueError as e:  # garbage instead of JSON (a proxy error page, a truncated reply)
            raise _Transient(f"unreadable reply: {e}") from None
        loc = (rsp.get("photo") or {}).get("location") or {}
        try:
            lat, lon = float(loc["latitude"]), float(loc["longitude"])
        except (KeyError, TypeError, ValueError):
            return ("no_location", None, None, None, None)
        acc = loc.get("accuracy")
        try:
            acc = int(acc) if acc is not None else None
        except (TypeError, ValueError):
            acc = None
        country = loc.get("country")
        country = country.get("_content") if isinstance(country, dict) else country
        country = country.strip() if isinstance(country, str) and country.strip() else None
        return ("ok", lat, lon, acc, country)

    def _lookup_one(self, photo_id):
        """(status, lat, lon, acc, country, retries) or None after ``max_retries`` transient failures."""
        delay = self.backoff_s
        for attempt in range(self.max_retries + 1):
            try:
                return (*self._call(photo_id), attempt)
            except _Transient as e:
                self._last_error = str(e)
                if attempt == self.max_retries:
                    log.warning("photo %s: giving up after %d tries (%s); a re-run will try again",
                                photo_id, attempt + 1, e)
                    return None
                wait = min(delay, self.max_backoff_s)
                log.info("photo %s: %s; retrying in %.1f s", photo_id, e, wait)
                if e.rate_limited:
                    self.limiter.pause(wait)
                else:
                    self._sleep(wait)
                delay *= 2
        return None

    def locate(self, photo_ids, *, total=None, on_answer=None, chunk_size=500) -> FlickrLookupStats:
        """Look up every photo id not already in the cache; return counts.

        Parameters
        ----------
        photo_ids : iterable of str
            Flickr photo ids; read lazily in chunks, so a generator over millions of ids
            keeps memory flat.  Ids repeated in the iterable are looked up once.
        total : int, optional
            Number of ids (for the progress bar's ETA) when ``photo_ids`` has no ``len``.
        on_answer : callable, optional
            Called as ``on_answer(photo_id, status)`` after each answer is cached (progress
            reporting; tests use it to interrupt a build).

        Raises
        ------
        GeoauditError
            Flickr rejected the key or the secret, or answered an error about the request
            (95, 112, 116 or an unknown code); nothing of it is cached.
        """
        t0 = self._clock()
        if total is None and hasattr(photo_ids, "__len__"):
            total = len(photo_ids)
        requested = cached_n = retries = 0
        statuses: dict = {}
        failed = []
        in_a_row = 0
        calls0 = self.calls
        bar = progress(total=total, desc="Flickr geo look-ups", unit="photo")
        it = iter(photo_ids)
        try:
            while True:
                chunk = list(dict.fromkeys(str(p) for p in itertools.islice(it, chunk_size)))
                if not chunk:
                    break
                requested += len(chunk)
                cached = self.cache.get_many(chunk)
                cached_n += len(cached)
                for status, *_ in cached.values():
                    statuses[status] = statuses.get(status, 0) + 1
                bar.update(len(cached))
                for pid in chunk:
                    if pid in cached:
                        continue
                    ans = self._lookup_one(pid)
                    bar.update(1)
                    if ans is None:
                        failed.append(pid)
                        in_a_row += 1
                        if in_a_row >= self.max_consecutive_failures:  # Flickr is down, not one bad photo
                            raise GeoauditError(
                                f"Flickr did not answer for {in_a_row} photos in a row, each tried "
                                f"{self.max_retries + 1} times (last error: {self._last_error}). The answers "
                                f"obtained so far are cached in {self.cache.path}; re-run the same command "
                                "to resume.")
                        continue
                    in_a_row = 0
                    status, lat, lon, acc, country, n_retries = ans
                    retries += n_retries
                    self.cache.put(pid, status, lat, lon, acc, country)
                    statuses[status] = statuses.get(status, 0) + 1
                    if on_answer is not None:
                        on_answer(pid, status)
        finally:
            bar.close()
        if cached_n:
            log.info("Flickr: %d of %d photos were already in the cache %s", cached_n, requested, self.cache.path)
        return FlickrLookupStats(requested=requested, cached=cached_n, calls=self.calls - calls0,
                                 retries=retries, statuses=statuses, failed=tuple(failed),
                                 elapsed_s=self._clock() - t0)

    def answers(self, photo_ids) -> dict:
        """Cached answers ``{photo_id: (status, latitude, longitude)}``."""
        return self.cache.get_many(photo_ids)

    def close(self):
        self.cache.close()
