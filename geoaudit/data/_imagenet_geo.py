"""Compatibility module: the ImageNet geo-location build lives in :mod:`geoaudit.data.imagenet_geo`."""
from geoaudit.data.imagenet_geo import *  # noqa: F401,F403
from geoaudit.data.imagenet_geo import __all__  # noqa: F401
from geoaudit.data.imagenet_geo.build import _card_values, _example, _iter_examples  # noqa: F401
from geoaudit.data.imagenet_geo.inputs import CONFIGS, FORMAT_VERSION, _make_inputs  # noqa: F401
from geoaudit.data.imagenet_geo.stages import _prepare  # noqa: F401
from geoaudit.data.imagenet_geo.work import _open_work, _Work  # noqa: F401
