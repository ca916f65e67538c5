"""GeoShapes' parameters: the generating process's constants and :class:`GeoShapesConfig`,
the one place where each parameter's default and check live."""
from __future__ import annotations

import dataclasses
import numbers
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from geoaudit._errors import InputError
from geoaudit._validation import check_interval, check_options

# --- the generating process's constants (all documented in the card) -------------------------
CLASS_NAMES = ("circle", "square", "triangle", "cross", "star", "ring", "arrow", "crescent", "heart",
               "stripes", "hexagon", "chevron")
HEAD_SHARES = (("USA", 0.36), ("GBR", 0.12))     # about half of all images from two countries
BODY_SHARE = 0.45                                 # the audit countries below the head
BODY_INCOME_MIX = (("High income", 0.40), ("Upper middle income", 0.25),
                   ("Lower middle income", 0.20), ("Low income", 0.15))
POP_EXPONENT = 0.5                                # size score: log GDP per capita + 0.5 log population
SPLIT_FRACTIONS = (("train", 0.6), ("validation", 0.2), ("test", 0.2))
MAX_AUDIT_COUNTRIES = 30                          # default number of audit countries
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 24, 512
MAX_IMAGES = 10_000_000
SCALE_RANGE = (0.22, 0.42)                        # shape half-extent / image size
HUE_JITTER = 0.2                                  # of the spacing between palette hues
NOISE_RANGE = (0.02, 0.07)                        # per-image Gaussian pixel noise sd
JITTER_DEG = 0.75                                 # sd of the lat/lon jitter (degrees, capped by size)
#: GDP per capita (US$) at and above which capture is clean, and at and below which a country's
#: capture deficit is full; log-linear in between.
CAPTURE_GDP_RANGE = (1_000.0, 50_000.0)
CHUNK = 32  # images rendered at once: small arrays stay in cache and the allocator's arena


def _resolve_random_state(value, caller):
    """An int seed for ``value`` (int, numpy/torch Generator or None): a dataset's identity is
    an int, recorded in its card and image ids, so generators and None are drawn from once."""
    if value is None:
        return int(np.random.SeedSequence().entropy % (2**63 - 1))
    if isinstance(value, np.random.Generator):
        return int(value.integers(0, 2**63 - 1))
    if type(value).__module__.startswith("torch") and type(value).__name__ == "Generator":
        import torch

        return int(torch.randint(0, 2**62, (1,), generator=value).item())
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(
            f"The 'random_state' parameter of {caller} must be an int in [0, {2**63 - 1}], a "
            f"numpy.random.Generator, a torch.Generator or None. Got {value!r} instead."
        )
    return check_interval("random_state", value, 0, 2**63 - 1, caller=caller, integer=True)


@dataclass(frozen=True)
class GeoShapesConfig:
    """Every parameter of a GeoShapes draw, with its default and its check (at construction).

    ``geoshapes``, ``build_geoshapes``, ``geoshapes_country_plan``, ``geoshapes_latents`` and
    the :class:`GeoShapes` builder all take ``config=`` and/or these names as keyword overrides.
    The same configuration gives byte-identical data.

    Parameters
    ----------
    n_images : int, default 20000
        Total number of images, in [100, 10_000_000].
    spurious_strength : float, default 0.9
        Strength ``s`` of the colour shortcut, in [0, 1].  In a cue country the object's colour
        comes from its own class's palette with probability ``s`` and from a uniformly random
        class's palette otherwise; elsewhere always at random.  0: no colour effect.
    capture_strength : float, default 0.0
        Strength ``c`` of the capture-quality bias, in [0, 1]: an image from a country with GDP
        per capita ``g`` is degraded by :func:`capture_corruption` with severity
        ``min(1, c * deficit(g) * (0.5 + U(0, 1)))``, where ``deficit`` falls log-linearly from
        1 at US$1,000 to 0 at US$50,000.  0: every image is captured cleanly (no capture effect).
    image_size : int, default 64
        Side of the square RGB images in pixels, in [24, 512].
    random_state : int, numpy.random.Generator, torch.Generator or None, default 0
        Seed of the generator every random draw comes from.  A generator or None is drawn from
        once and the resulting int is stored (it names the dataset: image ids, card).
    n_classes : int, default 10
        Number of shape classes, in [2, 12]: the first ``n_classes`` of ``CLASS_NAMES``.
    n_audit_countries : int, optional
        Countries guaranteed ``min_test_images`` test images; default as many as ``n_images``
        allows, at most 30.
    min_test_images : int, default 50
        The per-country test-set minimum behind ``n_audit_countries``.
    cue_countries : "high_income" or sequence of str, default "high_income"
        Where the colour tracks the label: the World Bank's high-income economies or ISO3 codes.
    year : "latest" or int, default "latest"
        GDP year passed to ``country_table``.
    image_format : {"png", "jpeg"}, default "png"
        Lossless PNG or JPEG quality 95 (4:4:4 chroma).

    Attributes
    ----------
    seed : int
        Deprecated alias of ``random_state``.
    """

    n_images: int = 20000
    spurious_strength: float = 0.9
    capture_strength: float = 0.0
    image_size: int = 64
    random_state: Optional[int] = 0
    n_classes: int = 10
    n_audit_countries: Optional[int] = None
    min_test_images: int = 50
    cue_countries: Union[str, Sequence[str]] = "high_income"
    year: Union[str, int] = "latest"
    image_format: str = "png"

    def __post_init__(self):
        c = "GeoShapesConfig"
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen: normalize once)
        put("n_images", check_interval("n_images", self.n_images, 100, MAX_IMAGES, caller=c, integer=True))
        put("spurious_strength", check_interval("spurious_strength", self.spurious_strength, 0.0, 1.0, caller=c))
        put("capture_strength", check_interval("capture_strength", self.capture_strength, 0.0, 1.0, caller=c))
        put("image_size", check_interval("image_size", self.image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, caller=c,
                                         integer=True))
        put("random_state", _resolve_random_state(self.random_state, c))
        put("n_classes", check_interval("n_classes", self.n_classes, 2, len(CLASS_NAMES), caller=c, integer=True))
        if self.n_audit_countries is not None:
            put("n_audit_countries", check_interval("n_audit_countries", self.n_audit_countries, 0, None,
                                                    caller=c, integer=True))
        put("min_test_images", check_interval("min_test_images", self.min_test_images, 1, None, caller=c,
                                              integer=True))
        cue = self.cue_countries
        if cue is None:
            cue = "high_income"
        if isinstance(cue, str):
            if cue != "high_income":
                raise InputError(f"The 'cue_countries' parameter of {c} must be 'high_income' or a list of ISO3 "
                                 f"codes. Got {cue!r} instead.")
        else:
            try:
                cue = tuple(sorted({str(x).upper() for x in cue}))
            except TypeError:
                raise InputError(f"The 'cue_countries' parameter of {c} must be 'high_income' or a list of ISO3 "
                                 f"codes. Got {cue!r} instead.") from None
        put("cue_countries", cue)
        if not (self.year == "latest" or (isinstance(self.year, numbers.Integral) and not isinstance(self.year, bool))):
            raise InputError(f"The 'year' parameter of {c} must be 'latest' or an int. Got {self.year!r} instead.")
        put("image_format", check_options("image_format", self.image_format, ("png", "jpeg"), caller=c))

    @property
    def seed(self):
        """Deprecated alias of :attr:`random_state`."""
        warnings.warn("GeoShapesConfig.seed is deprecated since geoaudit 0.2; use .random_state",
                      DeprecationWarning, stacklevel=2)
        return self.random_state

    def replace(self, **overrides):
        """A copy with some fields changed (checked like the constructor's arguments).

        Parameters
        ----------
        **overrides
            Field names of :class:`GeoShapesConfig` and their new values.

        Returns
        -------
        GeoShapesConfig
        """
        return resolve_config(self, overrides, caller="GeoShapesConfig.replace")

    def to_dict(self):
        """The fields as JSON-safe Python data (``cue_countries`` as a list when explicit).

        Returns
        -------
        dict
        """
        d = dataclasses.asdict(self)
        if not isinstance(self.cue_countries, str):
            d["cue_countries"] = list(self.cue_countries)
        return d


FIELDS = tuple(f.name for f in dataclasses.fields(GeoShapesConfig))


def resolve_config(config=None, overrides=None, *, caller):
    """One :class:`GeoShapesConfig` from ``config`` (a GeoShapesConfig, a dict of fields or
    None) and keyword ``overrides``; ``seed`` is accepted as a deprecated alias of
    ``random_state``.  Unknown names raise an InputError listing the accepted ones."""
    overrides = dict(overrides or {})
    if "seed" in overrides:
        if "random_state" in overrides:
            raise InputError(f"{caller} got both 'seed' and its replacement 'random_state'; pass 'random_state' only.")
        warnings.warn(f"The 'seed' parameter of {caller} is deprecated since geoaudit 0.2; use 'random_state'.",
                      DeprecationWarning, stacklevel=3)
        overrides["random_state"] = overrides.pop("seed")
    if config is None:
        base = {}
    elif isinstance(config, GeoShapesConfig):
        base = {f: getattr(config, f) for f in FIELDS}
    elif isinstance(config, dict):
        base = dict(config)
        if "seed" in base and "random_state" not in base:
            base["random_state"] = base.pop("seed")
    else:
        raise InputError(f"The 'config' parameter of {caller} must be a GeoShapesConfig, a dict or None. "
                         f"Got {type(config).__name__} instead.")
    unknown = sorted(set(base) - set(FIELDS)) + sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise InputError(f"{caller} got unknown parameter(s) {', '.join(repr(u) for u in unknown)}; "
                         f"accepted: {', '.join(FIELDS)}.")
    base.update(overrides)
    try:
        return GeoShapesConfig(**base)
    except InputError as e:  # name the function the user called
        raise InputError(str(e).replace("of GeoShapesConfig", f"of {caller}")) from None
