"""Sample images of a GeoShapes split, one row per World Bank income group, with what each
image's hidden truth says (country, whether the colour cue held, capture severity).  The
labelled figure is drawn in ``geoaudit.report``; here are the pixels and the captions."""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoaudit._results import Result
from geoaudit._validation import check_interval

INCOME_GROUPS = ("High income", "Upper middle income", "Lower middle income", "Low income")
_PREFIX = "GeoShapes (geoaudit): "


@dataclass(frozen=True)
class GeoShapesMosaic(Result):
    """Sample tiles of a GeoShapes split, rows by income group.

    Attributes
    ----------
    tiles : numpy.ndarray
        uint8 (rows, per_row, H, W, 3), read-only; empty slots are white.
    present : numpy.ndarray
        bool (rows, per_row): which slots hold an image.
    row_labels : tuple of str
        The income group of each row.
    iso3 : tuple of tuple of str
        Each tile's country ("" for an empty slot).
    cue_held : tuple of tuple
        Whether the colour cue held for the tile (None when unknown or empty).
    severity : tuple of tuple
        The tile's capture severity (None when unknown or empty).
    """

    tiles: np.ndarray
    present: np.ndarray
    row_labels: tuple
    iso3: tuple
    cue_held: tuple
    severity: tuple

    def __post_init__(self):
        for name in ("tiles", "present"):
            a = np.array(getattr(self, name), copy=True)
            a.setflags(write=False)
            object.__setattr__(self, name, a)

    @property
    def image(self):
        """The tiles laid out on a white canvas, uint8 (H, W, 3), a gap of size/8 between tiles."""
        r, c, h, w, _ = self.tiles.shape
        gap = max(2, h // 8)
        canvas = np.full((r * (h + gap) - gap, c * (w + gap) - gap, 3), 255, dtype=np.uint8)
        for i in range(r):
            for j in range(c):
                canvas[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = self.tiles[i, j]
        return canvas

    def caption(self, i, j):
        """Short text under tile (i, j): ISO3, then "cue" / "no cue" and the capture severity."""
        if not self.present[i, j]:
            return ""
        parts = [self.iso3[i][j]]
        if self.cue_held[i][j] is not None:
            parts.append("cue" if self.cue_held[i][j] else "no cue")
        if self.severity[i][j] is not None:
            parts.append(f"sev {self.severity[i][j]:.2f}")
        return "\n".join(parts)

    def to_dict(self):
        """Everything but the pixels, as JSON-safe data."""
        return {"shape": list(self.tiles.shape), "row_labels": list(self.row_labels),
                "iso3": [list(r) for r in self.iso3], "cue_held": [list(r) for r in self.cue_held],
                "severity": [list(r) for r in self.severity]}

    def summary(self):
        """One line per row: income group and its tiles' countries."""
        return "\n".join(f"{g}: {' '.join(c for c in row if c)}" for g, row in zip(self.row_labels, self.iso3))


def _config_of(ds):
    desc = getattr(getattr(ds, "info", None), "description", None) or ""
    if desc.startswith(_PREFIX):
        try:
            return json.loads(desc[len(_PREFIX):])
        except ValueError:
            return None
    return None


def geoshapes_grid(dd, path=None, *, split="test", per_group=8, random_state=0, cue_countries=None, config=None,
                   seed=None):
    """Sample images of GeoShapes (or any dataset in the shared schema), one row per income group.

    Parameters
    ----------
    dd : datasets.DatasetDict or datasets.Dataset
        The data; when it came from ``geoshapes`` (its ``info.description`` holds the
        configuration), each tile also carries its hidden truth: whether the colour cue held
        and the capture severity.
    path : str or Path, optional
        Also write the mosaic (no labels, tiles enlarged to at least 96 px) as a PNG here.
        The labelled figure is ``geoaudit.report.geoshapes_grid_figure``.
    split : str
        Split to draw from when ``dd`` is a DatasetDict.
    per_group : int
        Images per income group (one row each), in [1, 32]; distinct countries first.
    random_state : int
        Which images are drawn.
    cue_countries : list of str, optional
        ISO3 codes of the cue countries, when the data does not say.
    config : GeoShapesConfig or dict, optional
        The configuration the data was drawn with, when its description does not hold it
        (e.g. a folder written by ``build_geoshapes``: ``config=build_result.config``).
    seed : int, optional
        Deprecated alias of ``random_state``.

    Returns
    -------
    GeoShapesMosaic or Path
        The mosaic; the PNG's path when ``path`` is given (as earlier releases returned).
    """
    from geoaudit.data._countries import country_table
    from geoaudit.data._load import _to_array

    if seed is not None:
        warnings.warn("The 'seed' parameter of geoshapes_grid is deprecated since geoaudit 0.2; use 'random_state'.",
                      DeprecationWarning, stacklevel=2)
        random_state = seed
    per_group = check_interval("per_group", per_group, 1, 32, caller="geoshapes_grid", integer=True)
    ds = dd[split] if hasattr(dd, "keys") else dd
    cfg = _config_of(ds) if config is None else config
    if cfg is not None and hasattr(cfg, "to_dict"):  # a GeoShapesConfig
        cfg = cfg.to_dict()
    cfg = None if cfg is None else dict(cfg)
    truth = None
    if cfg is not None:
        from geoaudit.data._geoshapes.plan import geoshapes_latents

        try:
            truth = geoshapes_latents(cfg).set_index("image_id")
        except Exception:  # noqa: BLE001 - a foreign or older description: pictures without the truth
            truth = None
    if cue_countries is None and cfg is not None and not isinstance(cfg.get("cue_countries"), str):
        cue_countries = cfg.get("cue_countries")
    t = country_table().set_index("iso3")
    cue = set(cue_countries) if cue_countries is not None else set(t.index[t["income_group"] == "High income"])
    iso = np.asarray(ds["country_iso3"], dtype=object)
    group = t["income_group"].reindex(iso).to_numpy()
    rng = np.random.default_rng(random_state)
    size = None
    rows = []
    for g in INCOME_GROUPS:
        idx = rng.permutation(np.flatnonzero(group == g))
        # distinct countries first, then repeats, in the shuffled order
        seen, first, rest = set(), [], []
        for i in idx:
            (rest if iso[i] in seen else first).append(int(i))
            seen.add(iso[i])
        rows.append((first + rest)[:per_group])
    sample = [i for r in rows for i in r]
    size = ds[sample[0]]["image"].size[0] if sample else 32
    tiles = np.full((len(INCOME_GROUPS), per_group, size, size, 3), 255, dtype=np.uint8)
    present = np.zeros((len(INCOME_GROUPS), per_group), dtype=bool)
    codes, held, sev = [], [], []
    for r, pick in enumerate(rows):
        rc, rh, rs = [], [], []
        for c in range(per_group):
            if c >= len(pick):
                rc.append("")
                rh.append(None)
                rs.append(None)
                continue
            ex = ds[pick[c]]
            a = _to_array(ex["image"], "RGB", None)
            tiles[r, c] = a[:size, :size]
            present[r, c] = True
            rc.append(ex["country_iso3"])
            if truth is not None and ex["image_id"] in truth.index:
                row = truth.loc[ex["image_id"]]
                rh.append(bool(row["follows_cue"]) if ex["country_iso3"] in cue else None)
                rs.append(float(row["capture_severity"]))
            else:
                rh.append(None)
                rs.append(None)
        codes.append(tuple(rc))
        held.append(tuple(rh))
        sev.append(tuple(rs))
    mosaic = GeoShapesMosaic(tiles=tiles, present=present, row_labels=INCOME_GROUPS, iso3=tuple(codes),
                             cue_held=tuple(held), severity=tuple(sev))
    if path is None:
        return mosaic
    from PIL import Image

    from geoaudit._io import atomic_save

    img = mosaic.image
    f = max(1, math.ceil(96 / size))
    img = np.repeat(np.repeat(img, f, axis=0), f, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda tmp: Image.fromarray(img).save(tmp, format="PNG"))
    return path
