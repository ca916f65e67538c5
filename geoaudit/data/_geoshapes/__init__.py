"""GeoShapes: a procedurally generated, geo-located image dataset with planted geographic biases.

Real countries, real GDP per capita, images skewed towards a few rich countries, and two
biases, each with a strength knob: a style shortcut (the object's colour) that tracks the
label only in the well-represented countries, the paper's red-mailbox example
(``spurious_strength``), and image capture quality that falls with income: blur, low light,
sensor noise, JPEG compression (``capture_strength``).  Because the biases are planted, the
truth is known (``geoshapes_latents``), so GeoShapes is the yardstick for the audit's
statistics as well as the demo.  The generating process is stated exactly in ``geoshapes``'
docstring and in the dataset card (``dataset_cards/geoshapes.md``).

One idea per module: ``config`` (parameters), ``plan`` (countries and latent variables),
``render`` (pixels), ``corruptions`` (capture quality), ``builder`` (rows, the ``datasets``
builder), ``export`` (dataset folder), ``grid`` (sample mosaic).  (The package is private
because ``geoaudit.data.geoshapes`` is the generating function.)
"""
from geoaudit.data._geoshapes.builder import GeoShapes, GeoShapesBuilderConfig, geoshapes
from geoaudit.data._geoshapes.config import (
    BODY_INCOME_MIX,
    BODY_SHARE,
    CAPTURE_GDP_RANGE,
    CLASS_NAMES,
    HEAD_SHARES,
    HUE_JITTER,
    JITTER_DEG,
    MAX_AUDIT_COUNTRIES,
    NOISE_RANGE,
    POP_EXPONENT,
    SCALE_RANGE,
    SPLIT_FRACTIONS,
    GeoShapesConfig,
)
from geoaudit.data._geoshapes.corruptions import capture_corruption, capture_parameters
from geoaudit.data._geoshapes.export import GeoShapesBuild, build_geoshapes
from geoaudit.data._geoshapes.grid import GeoShapesMosaic, geoshapes_grid
from geoaudit.data._geoshapes.plan import capture_deficit, geoshapes_country_plan, geoshapes_latents
from geoaudit.data._geoshapes.plan import country_frame as _country_frame  # noqa: F401 (older private name)

__all__ = [
    "CLASS_NAMES",
    "GeoShapes",
    "GeoShapesBuild",
    "GeoShapesBuilderConfig",
    "GeoShapesConfig",
    "GeoShapesMosaic",
    "build_geoshapes",
    "capture_corruption",
    "capture_deficit",
    "capture_parameters",
    "geoshapes",
    "geoshapes_country_plan",
    "geoshapes_grid",
    "geoshapes_latents",
]
