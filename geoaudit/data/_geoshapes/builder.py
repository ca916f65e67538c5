"""Generating GeoShapes rows: ``geoshapes()`` in memory and :class:`GeoShapes`, the same data
as a ``datasets`` builder."""
from __future__ import annotations

import dataclasses
import json
import logging

import datasets
import numpy as np

from geoaudit._progress import progress
from geoaudit.data._geoshapes.config import (
    CHUNK,
    CLASS_NAMES,
    SPLIT_FRACTIONS,
    GeoShapesConfig,
    resolve_config,
)
from geoaudit.data._geoshapes.plan import CALLER, coordinates, image_ids, latents, make_plan
from geoaudit.data._geoshapes.render import encode, render

log = logging.getLogger(__name__)


def _columns(cfg, plan, lat, ids, coords, rows, images):
    """One split's columns in the shared schema, for rows ``rows``."""
    iso = lat["iso3"][rows]
    meta = plan.loc[iso]
    names = CLASS_NAMES[:cfg.n_classes]
    return {
        "image": [{"bytes": b, "path": None} for b in images],
        "label": lat["label"][rows].astype(np.int64).tolist(),
        "wnid": [f"geoshapes:{names[k]}" for k in lat["label"][rows]],
        "image_id": ids[rows].tolist(),
        "flickr_photo_id": [None] * len(rows),
        "latitude": coords[0][rows].tolist(),
        "longitude": coords[1][rows].tolist(),
        "country_iso3": iso.tolist(),
        "country_name": meta["country_name"].astype(str).tolist(),
        "gdp_per_capita_usd": meta["gdp_per_capita_usd"].astype(np.float64).tolist(),
        "gdp_year": meta["gdp_year"].astype(np.int64).tolist(),
        "log_gdp_per_capita": meta["log_gdp_per_capita"].astype(np.float64).tolist(),
    }


def iter_split_batches(cfg, plan, lat, coords, split, batch_rows, bar=None):
    """Yield (columns dict) batches of one split, rendering as it goes (memory bounded)."""
    rows_all = np.flatnonzero(lat["split"] == split)
    ids = image_ids(cfg)
    batch_rows = -(-batch_rows // CHUNK) * CHUNK  # whole chunks: the noise streams do not depend on it
    names = CLASS_NAMES[:cfg.n_classes]
    for start in range(0, len(rows_all), batch_rows):
        rows = rows_all[start:start + batch_rows]
        images = []
        for c0 in range(0, len(rows), CHUNK):
            chunk = rows[c0:c0 + CHUNK]
            # pixel and sensor noise: their own streams per chunk, keyed by the seed and the chunk's first row
            noise_rng = np.random.default_rng(np.random.SeedSequence([cfg.random_state, 1, int(chunk[0])]))
            capture_rng = np.random.default_rng(np.random.SeedSequence([cfg.random_state, 3, int(chunk[0])]))
            arr = render(lat, chunk, cfg.image_size, names, noise_rng, capture_rng)
            images.extend(encode(a, cfg.image_format) for a in arr)
            if bar is not None:
                bar.update(len(arr))
        yield _columns(cfg, plan, lat, ids, coords, rows, images)


def description(cfg):
    """The ``info.description`` of GeoShapes splits: a fixed prefix and the config as JSON."""
    return "GeoShapes (geoaudit): " + json.dumps(cfg.to_dict(), default=str)


def prepare(config=None, params=None):
    """(resolved config, plan, latents, coordinates) of a draw."""
    cfg, plan = make_plan(resolve_config(config, params, caller=CALLER))
    lat = latents(cfg, plan)
    return cfg, plan, lat, coordinates(lat, plan, cfg.year)


def geoshapes(config=None, **params):
    """Generate GeoShapes: geo-located shape images with two planted geographic biases.

    Parameters
    ----------
    config : GeoShapesConfig or dict, optional
        The draw's parameters (default ``GeoShapesConfig()``: 20,000 64-px images, colour
        shortcut 0.9, no capture bias).
    **params
        Overrides of ``config``'s fields, checked against them: ``n_images``,
        ``spurious_strength``, ``capture_strength``, ``image_size``, ``random_state``,
        ``n_classes``, ``n_audit_countries``, ``min_test_images``, ``cue_countries``, ``year``,
        ``image_format`` (see :class:`GeoShapesConfig`); ``seed`` is a deprecated alias of
        ``random_state``.

    Returns
    -------
    datasets.DatasetDict
        Splits "train", "validation", "test" (60/20/20 within every country) with features
        exactly ``geo_features(CLASS_NAMES[:n_classes])``.  ``wnid`` is ``"geoshapes:<class>"``,
        ``flickr_photo_id`` is None, ``image_id`` is ``"geoshapes-<random_state>-<index>"``.
        The configuration is in each split's ``info.description`` (JSON).

    Raises
    ------
    InputError
        A parameter out of range or unknown, naming it and what is accepted.

    Notes
    -----
    The generating process, exactly (constants are attributes of ``geoaudit.data._geoshapes``):

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
       noise with sd ``U(0.02, 0.07)``; clipped.
    5. *Capture quality.* Severity ``min(1, c * deficit(GDP) * (0.5 + U(0, 1)))`` with
       ``c = capture_strength`` and ``deficit`` 1 at and below US$1,000, 0 at and above
       US$50,000, log-linear between (``capture_deficit``); images with severity > 0 go
       through ``capture_corruption`` (blur, low light, sensor noise, JPEG), then everything
       is quantized to uint8 and stored (lossless PNG by default).  The severities come from
       their own random stream, so ``capture_strength`` changes nothing else.
    6. *Location.* The country's interior point (``country_table``), moved by a Gaussian
       jitter of sd ``min(0.75 deg, 0.1 sqrt(area) / 111 km)`` when the moved point is still
       inside the country (else the point itself).
    7. Rows are shuffled; the order of random draws is fixed, so a ``random_state`` gives one dataset.

    Examples
    --------
    >>> dd = geoshapes(n_images=2000, spurious_strength=0.9, image_size=32)         # doctest: +SKIP
    >>> dd["test"].features == geo_features(CLASS_NAMES[:10])                        # doctest: +SKIP
    True
    """
    from geoaudit.data._schema import geo_features

    cfg, plan, lat, coords = prepare(config, params)
    features = geo_features(CLASS_NAMES[:cfg.n_classes])
    out = {}
    with progress(total=cfg.n_images, desc="geoshapes", unit="img") as bar:
        for split, _ in SPLIT_FRACTIONS:
            cols = None
            for batch in iter_split_batches(cfg, plan, lat, coords, split, cfg.n_images, bar):
                cols = batch
            info = datasets.DatasetInfo(description=description(cfg), features=features)
            out[split] = datasets.Dataset.from_dict(cols, features=features, info=info, split=split)
    log.debug("geoshapes: %d images, %d countries (%d with >= %d test images), spurious_strength=%g, "
              "capture_strength=%g", cfg.n_images, len(plan), cfg.n_audit_countries, cfg.min_test_images,
              cfg.spurious_strength, cfg.capture_strength)
    return datasets.DatasetDict(out)


# --- the datasets builder ---------------------------------------------------------------------
def _builder_config_fields():
    # the fields and defaults of GeoShapesConfig, so the builder config never restates them
    return [(f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(GeoShapesConfig)]


def _to_geoshapes_config(self):
    """The validated :class:`GeoShapesConfig` of these settings.

    Returns
    -------
    GeoShapesConfig
    """
    return resolve_config({f.name: getattr(self, f.name) for f in dataclasses.fields(GeoShapesConfig)},
                          caller="GeoShapes")


GeoShapesBuilderConfig = dataclasses.make_dataclass(
    "GeoShapesBuilderConfig", _builder_config_fields(), bases=(datasets.BuilderConfig,),
    namespace={"geoshapes_config": _to_geoshapes_config, "__module__": __name__,
               "__doc__": "Configuration of :class:`GeoShapes`: ``datasets.BuilderConfig`` (name, version, "
                          "description) plus every field of :class:`GeoShapesConfig`, with its defaults."})


class GeoShapes(datasets.GeneratorBasedBuilder):
    """GeoShapes as a ``datasets`` builder: the same rows as :func:`geoshapes`, cached and
    memory-mapped by ``datasets``.

    Configs: ``default`` (colour shortcut 0.9, no capture bias), ``capture`` (capture bias 1.0
    only), ``both`` (0.9 and 1.0) and ``null`` (no country effect).  Any field of
    :class:`GeoShapesConfig` can be overridden as a keyword argument.

    Parameters
    ----------
    config_name : str, optional
        One of the configs above (default ``"default"``).
    cache_dir : str, optional
        Where ``datasets`` keeps the prepared Arrow files.
    **config_kwargs
        Fields of :class:`GeoShapesConfig` (``n_images``, ``image_size``, ...).

    Examples
    --------
    >>> b = GeoShapes(config_name="capture", n_images=2000, image_size=32)   # doctest: +SKIP
    >>> b.download_and_prepare()                                             # doctest: +SKIP
    >>> test = b.as_dataset(split="test")                                    # doctest: +SKIP
    """

    BUILDER_CONFIG_CLASS = GeoShapesBuilderConfig
    BUILDER_CONFIGS = [
        GeoShapesBuilderConfig(name="default", description="Colour shortcut 0.9 in the high-income countries."),
        GeoShapesBuilderConfig(name="capture", spurious_strength=0.0, capture_strength=1.0,
                               description="Capture quality falling with income only."),
        GeoShapesBuilderConfig(name="both", spurious_strength=0.9, capture_strength=1.0,
                               description="Colour shortcut and capture-quality bias."),
        GeoShapesBuilderConfig(name="null", spurious_strength=0.0, capture_strength=0.0,
                               description="No country effect at all."),
    ]
    DEFAULT_CONFIG_NAME = "default"
    VERSION = datasets.Version("1.0.0")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._resolved = None
        self._geoshapes()  # check the overrides now, not at download_and_prepare

    def _geoshapes(self):
        if getattr(self, "_resolved", None) is None:
            self._resolved = prepare(self.config.geoshapes_config())
        return self._resolved

    def _info(self):
        from geoaudit.data._schema import geo_features

        cfg = make_plan(self.config.geoshapes_config())[0]
        return datasets.DatasetInfo(description=description(cfg), features=geo_features(CLASS_NAMES[:cfg.n_classes]),
                                    license="CC BY 4.0 (World Bank GDP); Natural Earth public domain")

    def _split_generators(self, dl_manager):
        return [datasets.SplitGenerator(name=s, gen_kwargs={"split": s}) for s, _ in SPLIT_FRACTIONS]

    def _generate_examples(self, split):
        cfg, plan, lat, coords = self._geoshapes()
        for cols in iter_split_batches(cfg, plan, lat, coords, split, 1024):
            keys = list(cols)
            for i, image_id in enumerate(cols["image_id"]):
                yield image_id, {k: cols[k][i] for k in keys}
