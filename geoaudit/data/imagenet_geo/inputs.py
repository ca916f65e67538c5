"""Inputs of the ImageNet geo-location build: the ILSVRC2012 folder, the URL list or geo CSV,
the options, and the split rule."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, Union


from geoaudit._errors import DependencyError, InputError
from geoaudit._validation import check_interval

log = logging.getLogger(__name__)


SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"train": 0.6, "validation": 0.2, "test": 0.2}
CONFIGS = ("full", "metadata")
FORMAT_VERSION = 2  # of the work folder's layout: a resumed build with another version starts over
_WNID_RE = re.compile(r"^n\d{8}$")
_IMAGE_RE = re.compile(r"^(n\d{8}_\d+)\.(?:JPEG|jpeg|jpg|JPG|png|PNG)$")
_CALLER = "build_imagenet_geo"

CITATION = """\
@inproceedings{hua2022human,
  title  = {Human Imperceptible Attacks and Applications to Improve Fairness},
  author = {Hua, Xinru and Xu, Huanzhong and Blanchet, Jose and Nguyen, Viet Anh},
  note   = {The ImageNet with geo-location dataset is described in its appendix E},
  year   = {2022}
}"""
DESCRIPTION = ("ILSVRC2012 train images that came from Flickr, located with the Flickr API, reverse-geocoded "
               "to a country (Natural Earth 1:50m boundaries) and joined with World Bank GDP per capita "
               "(NY.GDP.PCAP.CD); split 60/20/20 by a hash of the image id.")


def split_of(image_id: str) -> str:
    """The split of an image: SHA-256 of its id -> u in [0, 1); train < 0.6 <= validation < 0.8 <= test.

    Examples
    --------
    >>> split_of("n01440764_10026") in ("train", "validation", "test")
    True
    """
    u = int.from_bytes(hashlib.sha256(image_id.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64
    return "train" if u < 0.6 else "validation" if u < 0.8 else "test"


def card_template_path() -> Path:
    """The dataset card's source, ``dataset_cards/imagenet_geo.md``."""
    here = Path(__file__).resolve()
    for p in (here.parents[1] / "cards" / "imagenet_geo.md", here.parents[3] / "dataset_cards" / "imagenet_geo.md"):
        if p.is_file():
            return p
    raise DependencyError("The dataset card source dataset_cards/imagenet_geo.md is missing from this "
                          "installation of geoaudit.")


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageNetGeoSources:
    """Where an ImageNet geo-location build gets its locations and GDP: the one definition of
    these parameters and their defaults.  :func:`build_imagenet_geo` takes them as keyword
    arguments and :class:`ImageNetGeoConfig` as fields; both are checked by the same code.

    Attributes
    ----------
    urls : str, optional
        ImageNet URL list (``<image_id><TAB><url>``); needs ``flickr_key`` and ``flickr_secret``.
    flickr_key, flickr_secret : str, optional
        Flickr API credentials.
    geo_csv : str, optional
        CSV of known locations (image_id, latitude, longitude) instead of Flickr.
    flickr_cache : str, optional
        SQLite cache of Flickr answers.
    flickr_rate : float
        Flickr calls per hour (Flickr allows 3,600 per key).
    flickr_rest_url : str, optional
        Flickr REST endpoint (tests point it at a local server).
    gdp_year : "latest" or int
        World Bank year.
    offline : bool
        GDP from the shipped snapshot instead of the World Bank API.
    tolerance_km : float
        Coastal tolerance of the reverse geocoding.
    min_accuracy : int
        Minimum Flickr accuracy level (0 keeps all).
    synsets : tuple of str, optional
        Only these classes.
    per_class : int, optional
        At most this many images per class.
    """

    urls: Optional[str] = None
    flickr_key: Optional[str] = None
    flickr_secret: Optional[str] = None
    geo_csv: Optional[str] = None
    flickr_cache: Optional[str] = None
    flickr_rate: float = 3600.0
    flickr_rest_url: Optional[str] = None
    gdp_year: Union[str, int] = "latest"
    offline: bool = False
    tolerance_km: float = 25.0
    min_accuracy: int = 0
    synsets: Optional[tuple] = None
    per_class: Optional[int] = None


SOURCE_FIELDS = tuple(f.name for f in fields(ImageNetGeoSources))
SOURCE_DEFAULTS = ImageNetGeoSources()


def _resolve_sources(params, caller):
    unknown = sorted(set(params) - set(SOURCE_FIELDS))
    if unknown:
        raise InputError(f"Unknown parameter(s) {', '.join(map(repr, unknown))} of {caller}; the location and GDP "
                         f"sources accept {', '.join(SOURCE_FIELDS)}.")
    return {f: params.get(f, getattr(SOURCE_DEFAULTS, f)) for f in SOURCE_FIELDS}


@dataclass(frozen=True)
class _Inputs:
    imagenet_dir: Path
    urls: Optional[Path]
    geo_csv: Optional[Path]
    flickr_key: Optional[str]
    flickr_secret: Optional[str]
    flickr_cache: Optional[Path]
    flickr_rate: float
    flickr_rest_url: Optional[str]
    gdp_year: Union[str, int]
    offline: bool
    tolerance_km: float
    max_failed_lookups: int
    flickr_options: Optional[dict] = None
    min_accuracy: int = 0
    synsets: Optional[tuple] = None
    per_class: Optional[int] = None

    @property
    def source(self):
        return "geo_csv" if self.geo_csv is not None else "flickr"

    def fingerprint(self, config, rows_per_shard):
        def stamp(p):
            if p is None:
                return None
            st = p.stat()
            return [str(p.resolve()), st.st_size, int(st.st_mtime)]

        key = {"v": FORMAT_VERSION, "imagenet_dir": str(self.imagenet_dir.resolve()), "urls": stamp(self.urls),
               "geo_csv": stamp(self.geo_csv), "gdp_year": str(self.gdp_year), "offline": self.offline,
               "tolerance_km": self.tolerance_km, "config": config, "rows_per_shard": rows_per_shard,
               "min_accuracy": self.min_accuracy, "synsets": list(self.synsets) if self.synsets else None,
               "per_class": self.per_class}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _check_file(name, value, what):
    p = Path(value)
    if not p.exists():
        raise InputError(f"The {name!r} file {str(p)!r} does not exist ({what}).")
    if not p.is_file():
        raise InputError(f"The {name!r} parameter must be a file ({what}). Got the folder {str(p)!r} instead.")
    return p


def _wnid_dirs(root: Path):
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir() and _WNID_RE.match(e.name))
    except OSError as e:
        raise InputError(f"Cannot read the ImageNet folder {str(root)!r}: {e.strerror or e}.") from e


def _check_imagenet_dir(value):
    if value is None:
        raise InputError("The 'imagenet_dir' parameter is required: the ILSVRC2012 train folder "
                         "(<wnid>/<wnid>_<n>.JPEG, e.g. n01440764/n01440764_10026.JPEG).")
    root = Path(value)
    if not root.exists():
        raise InputError(f"The ImageNet folder {str(root)!r} does not exist.")
    if not root.is_dir():
        raise InputError(f"The 'imagenet_dir' parameter must be a folder. Got the file {str(root)!r} instead.")
    wnids = _wnid_dirs(root)
    if not wnids:
        hint = ""
        for sub in ("train", "ILSVRC2012_img_train", "Data/CLS-LOC/train", "ILSVRC/Data/CLS-LOC/train"):
            if (root / sub).is_dir() and _wnid_dirs(root / sub):
                hint = f" It has {str(root / sub)!r}, which does: pass that folder instead."
                break
        raise InputError(
            f"The ImageNet folder {str(root)!r} does not have the ILSVRC2012 train layout: expected one "
            f"sub-folder per class named by its WordNet id, holding <wnid>_<n>.JPEG files "
            f"(e.g. n01440764/n01440764_10026.JPEG).{hint}"
        )
    from geoaudit.data._schema import imagenet_classes

    known = set(imagenet_classes()[0])
    if not any(w in known for w in wnids):
        raise InputError(f"None of the {len(wnids)} class folders in {str(root)!r} is one of the 1000 ILSVRC2012 "
                         f"classes (e.g. n01440764); found {', '.join(wnids[:3])}...")
    return root


def parse_url_line(raw: bytes):
    """``(image_id, url)`` of a line of ImageNet's ``fall11_urls.txt``, or None for a line
    that is not one (blank, a comment, no URL).

    The real file starts with a UTF-8 byte order mark, has lines in odd encodings (decoded
    leniently), and URLs without a scheme (``www.flickr.com/photos/...``).

    Parameters
    ----------
    raw : bytes
        One line of the file.

    Returns
    -------
    tuple of str or None

    Examples
    --------
    >>> parse_url_line(b"\\xef\\xbb\\xbfn01440764_10026\\thttp://farm1.static.flickr.com/1/2_ab.jpg\\n")
    ('n01440764_10026', 'http://farm1.static.flickr.com/1/2_ab.jpg')
    """
    line = raw.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
    if not line or line.startswith("#"):
        return None
    parts = re.split(r"\s+", line, maxsplit=1)
    if len(parts) != 2:
        return None
    iid, url = parts[0], parts[1].strip()
    head = url.split("/", 1)[0].lower()
    if not (url.lower().startswith(("http://", "https://")) or ("." in head and ":" not in head and " " not in url)):
        return None
    return iid, url


def _check_synsets(value, caller):
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    bad = [x for x in items if not (isinstance(x, str) and _WNID_RE.match(x.strip()))]
    if bad or not items:
        raise InputError(f"The 'synsets' parameter of {caller} must be WordNet ids such as 'n01440764'. "
                         f"Got {bad[:3] or value!r} instead.")
    return tuple(sorted({x.strip() for x in items}))


def _check_csv_places(path, first_row, ids, lat, lon, seen):
    """Refuse coordinates off the globe and an image id listed at two different places."""
    import numpy as np

    off = np.flatnonzero((np.abs(lat) > 90) | (np.abs(lon) > 180))
    if len(off):
        ex = ", ".join(f"{ids.iloc[i]} ({lat[i]:g}, {lon[i]:g})" for i in off[:3])
        raise InputError(f"The geo CSV {str(path)!r} has {len(off)} row(s) with a latitude outside [-90, 90] or a "
                         f"longitude outside [-180, 180] (first at line {first_row + off[0] + 2}): {ex}.")
    clash = []
    for i, a, b in zip(ids, lat, lon):
        key = str(i).strip()
        here = (round(float(a), 7), round(float(b), 7)) if np.isfinite(a) and np.isfinite(b) else None
        if key in seen and seen[key] != here:
            clash.append(key)
        seen[key] = here
    if clash:
        raise InputError(f"The geo CSV {str(path)!r} lists {len(clash)} image id(s) at two different places "
                         f"({', '.join(clash[:5])}{' ...' if len(clash) > 5 else ''}); keep one location per image.")


def _check_geo_csv(path):
    """Read the geo CSV's locations once before any work folder exists; its format errors are
    left to the build's own reading of it."""
    import pandas as pd

    seen, n = {}, 0  # image_id -> (latitude, longitude): one image at two places is refused, not last-wins
    try:
        for chunk in pd.read_csv(path, dtype={"image_id": str}, chunksize=100_000):
            if not {"image_id", "latitude", "longitude"} <= set(chunk.columns):
                return path
            lat = pd.to_numeric(chunk["latitude"], errors="coerce").to_numpy(dtype=float)
            lon = pd.to_numeric(chunk["longitude"], errors="coerce").to_numpy(dtype=float)
            _check_csv_places(path, n, chunk["image_id"], lat, lon, seen)
            n += len(chunk)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        pass
    return path


def _make_inputs(*, imagenet_dir, max_failed_lookups, caller, flickr_options=None, **sources):
    src = _resolve_sources(sources, caller)
    urls, geo_csv, flickr_key, flickr_secret = src["urls"], src["geo_csv"], src["flickr_key"], src["flickr_secret"]
    flickr_cache, flickr_rate, flickr_rest_url = src["flickr_cache"], src["flickr_rate"], src["flickr_rest_url"]
    gdp_year, offline, tolerance_km = src["gdp_year"], src["offline"], src["tolerance_km"]
    min_accuracy, synsets, per_class = src["min_accuracy"], src["synsets"], src["per_class"]
    from geoaudit.data._gdp import parse_gdp_year

    root = _check_imagenet_dir(imagenet_dir)
    if geo_csv is not None and urls is not None:
        raise InputError("Pass either 'geo_csv' (known locations) or 'urls' with the Flickr key and secret, not both.")
    if geo_csv is None and urls is None:
        raise InputError("A location source is required: 'urls' (the ImageNet URL list) with 'flickr_key' and "
                         "'flickr_secret', or 'geo_csv' (a CSV with image_id, latitude, longitude).")
    if urls is not None:
        missing = [n for n, v in (("flickr_key", flickr_key), ("flickr_secret", flickr_secret))
                   if not (isinstance(v, str) and v.strip())]
        if missing:
            raise InputError(f"Flickr look-ups need {' and '.join(repr(m) for m in missing)} (a Flickr API key and "
                             "its secret); or pass 'geo_csv' with known locations instead of 'urls'.")
    bad = sorted(set(flickr_options or {}) - {"max_retries", "backoff_s", "max_backoff_s", "timeout_s",
                                                    "max_consecutive_failures"})
    if bad:
        raise InputError(f"The 'flickr_options' parameter of {caller} accepts max_retries, backoff_s, max_backoff_s, "
                         f"timeout_s and max_consecutive_failures. Got {', '.join(map(repr, bad))} instead.")
    return _Inputs(
        imagenet_dir=root,
        urls=_check_file("urls", urls, "the ImageNet URL list: <image_id><TAB><url> per line") if urls is not None else None,
        geo_csv=_check_geo_csv(_check_file("geo_csv", geo_csv, "a CSV with columns image_id, latitude, longitude"))
        if geo_csv is not None else None,
        flickr_key=flickr_key, flickr_secret=flickr_secret,
        flickr_cache=Path(flickr_cache) if flickr_cache is not None else None,
        flickr_rate=check_interval("flickr_rate", flickr_rate, 0, None, caller=caller, closed="neither"),
        flickr_rest_url=flickr_rest_url,
        gdp_year=parse_gdp_year(gdp_year),
        offline=bool(offline),
        tolerance_km=check_interval("tolerance_km", tolerance_km, 0, 1000, caller=caller),
        max_failed_lookups=check_interval("max_failed_lookups", max_failed_lookups, 0, None, caller=caller,
                                          integer=True),
        flickr_options=dict(flickr_options or {}),
        min_accuracy=check_interval("min_accuracy", min_accuracy, 0, 16, caller=caller, integer=True),
        synsets=_check_synsets(synsets, caller),
        per_class=None if per_class is None else check_interval("per_class", per_class, 1, None, caller=caller,
                                                                 integer=True),
    )
