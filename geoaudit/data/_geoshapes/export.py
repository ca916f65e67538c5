"""Writing GeoShapes as a dataset folder (Parquet shards and a dataset card) that
``datasets.load_dataset`` reads with no geoaudit code."""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from geoaudit._errors import InputError
from geoaudit._progress import progress
from geoaudit._results import Result, frozen_mapping
from geoaudit._validation import check_interval
from geoaudit.data._geoshapes import builder as _builder
from geoaudit.data._geoshapes.config import CLASS_NAMES, HEAD_SHARES, SPLIT_FRACTIONS

log = logging.getLogger(__name__)

# The card source is dataset_cards/geoshapes.md; geoaudit/data/cards links to it so wheels ship it.
CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "cards" / "geoshapes.md"


@dataclass(frozen=True)
class GeoShapesBuild(Result):
    """What :func:`build_geoshapes` wrote.

    Attributes
    ----------
    out_dir : str
        The dataset folder.
    config : Mapping
        The resolved :class:`GeoShapesConfig` as a read-only mapping.
    num_examples : Mapping
        Rows per split.
    num_countries, n_audit_countries : int
        Countries with any image; countries with ``min_test_images`` test images.
    cue_share : float
        Share of images from cue countries.
    top_countries : Mapping
        The five largest countries and their image counts.
    files : tuple of str
        Files written, relative to ``out_dir``.
    """

    out_dir: str
    config: Mapping
    num_examples: Mapping
    num_countries: int
    n_audit_countries: int
    cue_share: float
    top_countries: Mapping
    files: tuple

    def __post_init__(self):
        for name in ("config", "num_examples", "top_countries"):
            object.__setattr__(self, name, frozen_mapping(getattr(self, name)))
        object.__setattr__(self, "files", tuple(self.files))

    def summary(self) -> str:
        """One paragraph: where, how many, which strengths.

        Returns
        -------
        str
        """
        n = self.num_examples
        top = ", ".join(f"{iso} {c:,}" for iso, c in self.top_countries.items())
        return (f"GeoShapes in {self.out_dir}: {sum(n.values()):,} images (train {n['train']:,}, validation "
                f"{n['validation']:,}, test {n['test']:,}) from {self.num_countries} countries, "
                f"{self.n_audit_countries} audit countries; spurious_strength={self.config['spurious_strength']:g}, "
                f"capture_strength={self.config['capture_strength']:g}; cue countries hold "
                f"{100 * self.cue_share:.1f}% of images. Largest: {top}.")


def _card_template():
    from geoaudit._errors import DependencyError

    if not CARD_TEMPLATE.is_file():
        raise DependencyError(
            f"The GeoShapes dataset card source {str(CARD_TEMPLATE)!r} is missing; it ships in the "
            "repository's dataset_cards/ folder."
        )
    return CARD_TEMPLATE


def _country_markdown(plan, limit=40):
    lines = ["| country | ISO3 | GDP per capita (US$, year) | images | test | cue | capture severity (mean) |",
             "|---|---|---|---:|---:|---|---:|"]
    for iso, r in plan.head(limit).iterrows():
        lines.append(f"| {r['country_name']} | {iso} | {r['gdp_per_capita_usd']:,.0f} ({int(r['gdp_year'])}) "
                     f"| {int(r['n_images'])} | {int(r['n_test'])} | {'yes' if r['cue'] else 'no'} "
                     f"| {r['capture_mean']:.2f} |")
    if len(plan) > limit:
        rest = plan.iloc[limit:]
        lines.append(f"| ... {len(rest)} more countries | | | {int(rest['n_images'].sum())} "
                     f"| {int(rest['n_test'].sum())} | | |")
    return "\n".join(lines)


def build_geoshapes(out_dir, config=None, *, rows_per_shard=5000, **params):
    """Generate GeoShapes and write it as a dataset folder: Parquet shards + dataset card.

    ``datasets.load_dataset(out_dir)`` then loads it with no geoaudit code, and
    ``geoaudit dataset info out_dir`` describes it.  The folder is built in a temporary folder
    beside ``out_dir`` and moved into place at the end (replacing an older one), so a killed
    build never leaves a half-written dataset.

    Parameters
    ----------
    out_dir : str or Path
        The dataset folder to write.
    config : GeoShapesConfig or dict, optional
        The draw's parameters, as in :func:`geoshapes` (the same configuration gives the same
        rows, byte for byte).
    rows_per_shard : int
        Rows per Parquet shard (memory is bounded by about 1,000 rendered images at a time).
    **params
        Overrides of ``config``'s fields (see :class:`GeoShapesConfig`); ``seed`` is a
        deprecated alias of ``random_state``.

    Returns
    -------
    GeoShapesBuild
        ``out_dir``, ``config`` (the resolved configuration), ``num_examples`` per split,
        ``num_countries``, ``n_audit_countries``, ``cue_share``, ``top_countries`` and
        ``files``; ``to_dict()``, ``summary()``.

    Notes
    -----
    Files written: ``README.md`` (card: YAML header with ``configs``/``dataset_info``, then the
    card body with the exact generating process and the per-country counts) and
    ``data/{train,validation,test}-0000i-of-0000N.parquet``.
    """
    from geoaudit._io import replace_dir
    from geoaudit.data._export import ParquetShardWriter, write_dataset_card
    from geoaudit.data._schema import geo_features

    rows_per_shard = check_interval("rows_per_shard", rows_per_shard, 1, None, caller="build_geoshapes",
                                    integer=True)
    cfg, plan, lat, coords = _builder.prepare(config, params)
    template = _card_template()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"The 'out_dir' parameter of build_geoshapes must be a folder. Got the file {str(out_dir)!r}.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    names = CLASS_NAMES[:cfg.n_classes]
    features = geo_features(names)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset folder is an ordinary one
    try:
        globs, num_examples, num_bytes, files = {}, {}, {}, []
        with progress(total=cfg.n_images, desc="geoshapes", unit="img") as bar:
            for split, _ in SPLIT_FRACTIONS:
                with ParquetShardWriter(tmp, split, features, rows_per_shard=rows_per_shard) as w:
                    for batch in _builder.iter_split_batches(cfg, plan, lat, coords, split, 1024, bar):
                        w.write_batch(batch)
                globs[split], num_examples[split], num_bytes[split] = w.glob, w.num_rows, w.num_bytes
                files.extend(str(p.relative_to(tmp)) for p in w.paths)
        cue_share = float(plan.loc[plan["cue"], "n_images"].sum() / cfg.n_images)
        write_dataset_card(
            tmp, template=template, features=features, configs={"default": globs},
            num_examples=num_examples, num_bytes=num_bytes,
            values={
                "config_json": json.dumps(cfg.to_dict(), default=str),
                "n_images": cfg.n_images, "spurious_strength": cfg.spurious_strength,
                "capture_strength": cfg.capture_strength,
                "image_size": cfg.image_size, "random_state": cfg.random_state, "n_classes": cfg.n_classes,
                "class_names": ", ".join(names), "n_countries": len(plan),
                "n_audit_countries": cfg.n_audit_countries, "min_test_images": cfg.min_test_images,
                "n_cue_countries": int(plan["cue"].sum()), "cue_share": f"{100 * cue_share:.1f}",
                "cue_accuracy": f"{cfg.spurious_strength + (1 - cfg.spurious_strength) / cfg.n_classes:.3f}",
                "chance": f"{1 / cfg.n_classes:.3f}",
                "head_share": f"{100 * plan.loc[[c for c, _ in HEAD_SHARES], 'n_images'].sum() / cfg.n_images:.1f}",
                "country_counts": _country_markdown(plan),
                "image_format": cfg.image_format.upper(),
            },
        )
        files.insert(0, "README.md")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.debug("wrote GeoShapes (%d images) to %s", cfg.n_images, out_dir)
    return GeoShapesBuild(
        out_dir=str(out_dir), config=cfg.to_dict(), num_examples=dict(num_examples),
        num_countries=int(len(plan)), n_audit_countries=cfg.n_audit_countries, cue_share=cue_share,
        top_countries={iso: int(c) for iso, c in plan.head(5)["n_images"].items()}, files=tuple(files),
    )
