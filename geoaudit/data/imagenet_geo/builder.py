"""The dataset as a ``datasets.GeneratorBasedBuilder`` (configs ``full`` and ``metadata``)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import datasets

from geoaudit._errors import InputError
from geoaudit._validation import check_interval

log = logging.getLogger(__name__)
from geoaudit.data.imagenet_geo.build import _iter_examples
from geoaudit.data.imagenet_geo.inputs import CITATION, DESCRIPTION, SOURCE_DEFAULTS as _D, SOURCE_FIELDS, SPLITS, _make_inputs
from geoaudit.data.imagenet_geo.stages import _prepare
from geoaudit.data.imagenet_geo.work import _open_work, _Work


@dataclass
class ImageNetGeoConfig(datasets.BuilderConfig):
    """Configuration of :class:`ImageNetGeo`.

    The ImageNet train folder is the builder's ``data_dir``.

    Attributes
    ----------
    with_image : bool
        True for ``full`` (image bytes), False for ``metadata``.
    urls : str, optional
        ImageNet URL list (``<image_id><TAB><url>``); needs ``flickr_key`` and ``flickr_secret``.
    flickr_key, flickr_secret : str, optional
        Flickr API credentials.
    geo_csv : str, optional
        CSV of known locations (image_id, latitude, longitude) instead of Flickr.
    flickr_cache : str, optional
        SQLite cache of Flickr answers.
    flickr_rate : float
        Flickr calls per hour (default 3,600, Flickr's limit).
    flickr_rest_url : str, optional
        Flickr REST endpoint (tests).
    gdp_year : "latest" or int
        World Bank year.
    offline : bool
        GDP from the shipped snapshot instead of the World Bank API.
    tolerance_km : float
        Coastal tolerance of the reverse geocoding.
    min_accuracy : int
        Minimum Flickr accuracy level (0 keeps all).
    with_location_source : bool
        Add the columns ``flickr_accuracy`` and ``flickr_country`` (the Parquet build always
        writes them; off by default here so the builder's features stay those GeoShapes has).
    synsets : tuple of str, optional
        Only these classes.
    per_class : int, optional
        At most this many images per class.
    """

    # datasets needs each field declared here; names and defaults are ImageNetGeoSources'
    # (a test keeps the two in step)
    with_image: bool = True
    urls: Optional[str] = _D.urls
    flickr_key: Optional[str] = _D.flickr_key
    flickr_secret: Optional[str] = _D.flickr_secret
    geo_csv: Optional[str] = _D.geo_csv
    flickr_cache: Optional[str] = _D.flickr_cache
    flickr_rate: float = _D.flickr_rate
    flickr_rest_url: Optional[str] = _D.flickr_rest_url
    gdp_year: Union[str, int] = _D.gdp_year
    offline: bool = _D.offline
    tolerance_km: float = _D.tolerance_km
    min_accuracy: int = _D.min_accuracy
    with_location_source: bool = False
    synsets: Optional[tuple] = _D.synsets
    per_class: Optional[int] = _D.per_class

    def __post_init__(self):
        super().__post_init__()
        self.check()

    def check(self):
        """Validate the values that do not need the files (called again after overrides)."""
        from geoaudit.data._gdp import parse_gdp_year

        caller = "ImageNetGeoConfig"
        if not isinstance(self.with_image, bool):
            raise InputError(f"The 'with_image' parameter of {caller} must be a bool. Got {self.with_image!r} instead.")
        check_interval("flickr_rate", self.flickr_rate, 0, None, caller=caller, closed="neither")
        check_interval("tolerance_km", self.tolerance_km, 0, 1000, caller=caller)
        parse_gdp_year(self.gdp_year)
        if self.urls is not None and self.geo_csv is not None:
            raise InputError(f"{caller}: pass either 'geo_csv' or 'urls' (with the Flickr key and secret), not both.")


class ImageNetGeo(datasets.GeneratorBasedBuilder):
    """The ImageNet geo-location dataset as a ``datasets`` builder (configs ``full`` and ``metadata``).

    Examples
    --------
    >>> b = ImageNetGeo(config_name="metadata", data_dir="ILSVRC2012/train",
    ...                 geo_csv="locations.csv", offline=True)          # doctest: +SKIP
    >>> b.download_and_prepare()                                       # doctest: +SKIP
    >>> train = b.as_dataset(split="train")                            # doctest: +SKIP

    Keys are image ids; the split rule is :func:`split_of`.  Corrupt images are skipped and
    logged.  For a folder that loads with no geoaudit code use :func:`build_imagenet_geo`.
    """

    BUILDER_CONFIG_CLASS = ImageNetGeoConfig
    BUILDER_CONFIGS = [
        ImageNetGeoConfig(name="full", with_image=True, description="Images and metadata."),
        ImageNetGeoConfig(name="metadata", with_image=False,
                          description="Metadata only (no image bytes): redistributable."),
    ]
    DEFAULT_CONFIG_NAME = "full"
    VERSION = datasets.Version("1.0.0")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config.check()  # overrides passed as keyword arguments skip __post_init__

    def _info(self):
        from geoaudit.data._schema import geo_features, imagenet_classes

        return datasets.DatasetInfo(
            description=DESCRIPTION,
            features=geo_features(imagenet_classes()[1], with_image=self.config.with_image,
                                  with_location_source=self.config.with_location_source),
            citation=CITATION,
            license="ImageNet terms of access (images); metadata CC BY 4.0 (World Bank) and public domain "
                    "(Natural Earth)",
        )

    def _inputs(self):
        c = self.config
        return _make_inputs(imagenet_dir=c.data_dir, max_failed_lookups=0, caller="ImageNetGeo",
                            **{f: getattr(c, f) for f in SOURCE_FIELDS})

    def _split_generators(self, dl_manager):
        inputs = self._inputs()
        fp = inputs.fingerprint("builder", 0)
        work_dir = Path(self._cache_dir_root) / "imagenet_geo_work" / fp
        w = _open_work(work_dir, fp)
        try:
            _prepare(w, inputs)
            counts = {s: w.db.execute("SELECT COUNT(*) FROM images WHERE split=? AND iso3 IS NOT NULL",
                                      (s,)).fetchone()[0] for s in SPLITS}
        finally:
            w.close()
        empty = [s for s in SPLITS if counts[s] == 0]
        if len(empty) == len(SPLITS):
            raise InputError(f"No image of {str(inputs.imagenet_dir)!r} could be located in a country.")
        if empty:  # datasets cannot hold an empty split; say so rather than fail later
            log.warning("Split(s) %s would be empty and are left out.", ", ".join(empty))
        return [datasets.SplitGenerator(name=s, gen_kwargs={"split": s, "work_dir": str(work_dir)})
                for s in SPLITS if counts[s]]

    def _generate_examples(self, split, work_dir):
        inputs = self._inputs()
        w = _Work(Path(work_dir))
        try:
            gdp = w.get("gdp")
            corrupt = []
            yield from _iter_examples(w, inputs, split, self.config.with_image, gdp, corrupt=corrupt,
                                      location_source=self.config.with_location_source)
            if corrupt:
                log.warning("Split %s: skipped %d corrupt images: %s", split, len(corrupt),
                            ", ".join(c[0] for c in corrupt))
        finally:
            w.close()
