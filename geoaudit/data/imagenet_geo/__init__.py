"""The ImageNet geo-location dataset (appendix E of the paper), rebuilt from raw sources.

The ILSVRC2012 train images that came from Flickr, located with ``flickr.photos.geo.getLocation``
(or a CSV of known locations), reverse-geocoded to a country against the Natural Earth
boundaries shipped in geoaudit, and joined with World Bank GDP per capita (NY.GDP.PCAP.CD).

Two ways to build it:

``build_imagenet_geo(out_dir, imagenet_dir=..., ...)``
    Streams Parquet shards plus a Hugging Face dataset card (``README.md``) into ``out_dir``,
    so plain ``datasets.load_dataset(out_dir)`` loads it and the folder can be pushed to the
    Hub as it is.  Resumable: every stage keeps its state in a work folder beside ``out_dir``
    (see :func:`build_imagenet_geo`).

``ImageNetGeo`` (a ``datasets.GeneratorBasedBuilder``)
    The same rows through ``datasets``' own machinery:
    ``ImageNetGeo(config_name="metadata", data_dir=IMAGENET_TRAIN, geo_csv=CSV).download_and_prepare()``
    then ``.as_dataset(split="train")``.

Split: an image goes to train, validation or test from the first 8 bytes of SHA-256 of its
image id read as a fraction ``u`` in [0, 1): ``u < 0.6`` train, ``u < 0.8`` validation,
otherwise test.  It depends on nothing but the id, so it never changes when images are added
or removed, and the three splits are 60/20/20 in expectation.
"""
from geoaudit.data.imagenet_geo.build import (ImageNetGeoBuildResult, build_imagenet_geo, default_work_dir,
                                              write_build_log)
from geoaudit.data.imagenet_geo.builder import ImageNetGeo, ImageNetGeoConfig
from geoaudit.data.imagenet_geo.inputs import SOURCE_FIELDS, SPLITS, ImageNetGeoSources, card_template_path, split_of

__all__ = ["ImageNetGeo", "ImageNetGeoConfig", "ImageNetGeoSources", "SOURCE_FIELDS", "ImageNetGeoBuildResult", "build_imagenet_geo", "split_of",
           "card_template_path", "default_work_dir", "write_build_log", "SPLITS"]
