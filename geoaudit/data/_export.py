"""Writing a dataset folder that ``datasets.load_dataset(DIR)`` loads with no geoaudit code.

Layout written (the Hugging Face Hub's own convention for Parquet datasets)::

    DIR/
      README.md                              dataset card: YAML header + body
      data/<split>-00000-of-00003.parquet    Parquet shards, one set per split (and config)

Two public pieces, shared by every builder (GeoShapes, ImageNet geo-location):

``ParquetShardWriter``
    Streams rows or column batches of one split into shards of at most ``rows_per_shard``
    rows, so memory stays bounded however large the split.  Each shard's Arrow schema
    carries the ``datasets.Features`` in its ``huggingface`` metadata, so image and
    ClassLabel columns come back typed even without the card.

``write_dataset_card``
    Renders ``README.md``: the template's own YAML front matter (license, pretty_name ...)
    merged with the computed ``configs`` (data files per split), ``dataset_info``
    (features as name/dtype, ClassLabel names, split sizes) and any extra fields, followed by
    the template's body with ``{{ name }}`` placeholders filled in.

Both write into a folder the caller owns; for an atomic build, write into a temporary folder
beside the final one and move it into place with ``geoaudit._io.replace_dir``.

Example
-------
>>> from geoaudit.data import geo_features
>>> feats = geo_features(["a", "b"])
>>> with ParquetShardWriter(tmp, "train", feats, rows_per_shard=1000) as w:   # doctest: +SKIP
...     w.write_batch({"image": [...], "label": [...], ...})
>>> write_dataset_card(tmp, template="---\\nlicense: mit\\n---\\n# My data\\n", features=feats,
...                    configs={"default": {"train": "data/train-*"}},
...                    num_examples={"train": w.num_rows})               # doctest: +SKIP
"""
from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path

from geoaudit._errors import InputError
from geoaudit._io import atomic_write_text
from geoaudit._validation import check_interval

log = logging.getLogger(__name__)

__all__ = ["ParquetShardWriter", "check_output_dir", "shard_glob", "split_front_matter", "write_dataset_card"]

_SPLIT_RE = re.compile(r"^[A-Za-z0-9_.]+$")
_PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_TEMPLATE_NOTE_RE = re.compile(r"<!--\s*template:.*?-->[ \t]*\r?\n?", flags=re.S)  # notes for card authors only


def shard_glob(split, *, data_dir="data", prefix=""):
    """The ``data_files`` pattern matching the shards ``ParquetShardWriter`` writes for a split,
    e.g. ``"data/train-*"`` (relative to the dataset folder, '/'-separated as the Hub wants)."""
    return f"{data_dir}/{prefix}{split}-*.parquet"


class ParquetShardWriter:
    """Stream the rows of one split into Parquet shards ``<data_dir>/<split>-0000i-of-0000N.parquet``.

    Parameters
    ----------
    out_dir : str or Path
        The dataset folder (shards go to ``out_dir/data_dir``).
    split : str
        Split name (letters, digits, ``_`` and ``.``), e.g. ``"train"``.
    features : datasets.Features
        Schema of every row; rows are encoded with ``features.encode_batch`` (so an ``Image``
        column accepts PIL images, uint8 arrays, ``{"bytes": ..., "path": None}`` or paths).
    rows_per_shard : int
        Rows per shard (the last one may hold fewer).  Memory is bounded by the batch
        passed to ``write_batch``: rows go to disk as they come.
    row_group_size : int
        Rows per Parquet row group (what ``datasets`` streams at a time).  Image datasets
        on the Hub use about 100.
    data_dir : str
        Sub-folder of ``out_dir`` holding the shards.
    prefix : str
        Prefix of shard names, e.g. ``"metadata-"`` for a second configuration in the same
        folder (``data/metadata-train-00000-of-00001.parquet``).
    compression : str
        Parquet compression codec.

    Notes
    -----
    The total shard count ``N`` is only known at the end, so shards are written under
    temporary names and renamed by ``close()`` (called by the ``with`` block).  Nothing is
    final until then.  A split with zero rows gets one schema-only shard (pyarrow reads it;
    ``datasets`` refuses empty splits, so leave such a split out of the card's ``configs``).

    Attributes
    ----------
    num_rows : int
        Rows written so far.
    num_bytes : int
        Arrow (in-memory) bytes written so far: the ``num_bytes`` a dataset card reports.
    paths : list of Path
        Final shard paths (filled by ``close()``).
    """

    def __init__(self, out_dir, split, features, *, rows_per_shard=5000, row_group_size=100,
                 data_dir="data", prefix="", compression="snappy"):
        import datasets

        if not isinstance(split, str) or not _SPLIT_RE.match(split):
            raise InputError(
                f"The 'split' parameter of ParquetShardWriter must be a name of letters, digits, '_' or '.'. "
                f"Got {split!r} instead."
            )
        if not isinstance(features, datasets.Features):
            raise InputError(
                f"The 'features' parameter of ParquetShardWriter must be a datasets.Features. "
                f"Got {type(features).__name__} instead."
            )
        self.rows_per_shard = check_interval("rows_per_shard", rows_per_shard, 1, None,
                                             caller="ParquetShardWriter", integer=True)
        self.row_group_size = check_interval("row_group_size", row_group_size, 1, None,
                                             caller="ParquetShardWriter", integer=True)
        self.out_dir = Path(out_dir)
        self.split = split
        self.features = features
        self.data_dir = data_dir
        self.prefix = prefix
        self.compression = compression
        self.schema = features.arrow_schema
        self.num_rows = 0
        self.num_bytes = 0
        self.paths: list[Path] = []
        self._tmp_paths: list[Path] = []
        self._writer = None
        self._rows_in_shard = 0
        self._closed = False
        (self.out_dir / data_dir).mkdir(parents=True, exist_ok=True)

    # -- writing ---------------------------------------------------------------------------
    def write(self, example: dict):
        """Write one row (a dict with every feature's column)."""
        self.write_batch({k: [v] for k, v in example.items()})

    def write_batch(self, batch: dict):
        """Write a batch given as ``{column: list of values}`` (all columns, same length)."""
        import pyarrow as pa

        if self._closed:
            raise InputError(f"ParquetShardWriter for split {self.split!r} is already closed.")
        cols = set(batch)
        expected = set(self.features)
        if cols != expected:
            missing, extra = sorted(expected - cols), sorted(cols - expected)
            raise InputError(
                f"Batch for split {self.split!r} does not match the features: "
                f"missing {missing or 'none'}, unexpected {extra or 'none'}."
            )
        lengths = {len(v) for v in batch.values()}
        if len(lengths) > 1:
            raise InputError(f"Batch for split {self.split!r} has columns of different lengths {sorted(lengths)}.")
        n = lengths.pop() if lengths else 0
        if n == 0:
            return
        encoded = self.features.encode_batch(batch)
        self._write_arrow(pa.Table.from_pydict({k: encoded[k] for k in self.features}, schema=self.schema))

    def write_table(self, table):
        """Write an already encoded ``pyarrow.Table`` or ``RecordBatch`` with the features' columns.

        Arrow data whose types already match the schema are written as they are (no Python
        round trip); anything else is re-encoded through ``write_batch``.
        """
        import pyarrow as pa

        if self._closed:
            raise InputError(f"ParquetShardWriter for split {self.split!r} is already closed.")
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.schema.names == self.schema.names and all(
                a.type == b.type for a, b in zip(table.schema, self.schema)):
            self._write_arrow(table.cast(self.schema))  # same types: only metadata/nullability change
        else:
            self.write_batch(table.to_pydict())

    def _write_arrow(self, table):
        n = table.num_rows
        if n == 0:
            return
        self.num_bytes += int(table.nbytes)
        start = 0
        while start < n:
            if self._writer is None:
                self._open_shard()
            take = min(n - start, self.rows_per_shard - self._rows_in_shard)
            self._writer.write_table(table.slice(start, take), row_group_size=self.row_group_size)
            self._rows_in_shard += take
            self.num_rows += take
            start += take
            if self._rows_in_shard >= self.rows_per_shard:
                self._close_shard()

    # -- shards ----------------------------------------------------------------------------
    def _open_shard(self):
        import pyarrow.parquet as pq

        i = len(self._tmp_paths)
        tmp = self.out_dir / self.data_dir / f".{self.prefix}{self.split}-{i:05d}.parquet.partial"
        self._tmp_paths.append(tmp)
        self._writer = pq.ParquetWriter(str(tmp), self.schema, compression=self.compression)
        self._rows_in_shard = 0

    def _close_shard(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> list[Path]:
        """Finish the last shard and give every shard its final ``-of-N`` name; return the paths."""
        if self._closed:
            return self.paths
        if self._writer is None and not self._tmp_paths:
            self._open_shard()  # an empty split still gets a (schema-only) shard
        self._close_shard()
        total = len(self._tmp_paths)
        for i, tmp in enumerate(self._tmp_paths):
            final = self.out_dir / self.data_dir / f"{self.prefix}{self.split}-{i:05d}-of-{total:05d}.parquet"
            os.replace(tmp, final)
            self.paths.append(final)
        self._closed = True
        log.debug("wrote %d rows of split %r in %d shard(s) under %s", self.num_rows, self.split, total,
                 self.out_dir / self.data_dir)
        return self.paths

    def abort(self):
        """Close and delete the partial shards (on error)."""
        self._close_shard()
        for p in self._tmp_paths:
            if p.exists():
                p.unlink()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    @property
    def glob(self) -> str:
        """The ``data_files`` pattern for this split's shards (see ``shard_glob``)."""
        return shard_glob(self.split, data_dir=self.data_dir, prefix=self.prefix)


def split_front_matter(text: str):
    """Split a Markdown text into (YAML front matter as a dict, body).  No front matter -> ({}, text)."""
    import yaml

    if text.startswith("---"):
        m = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|$)", text, flags=re.S)
        if m is None:
            raise InputError("The dataset card template starts with '---' but its YAML header is never closed.")
        try:
            meta = yaml.safe_load(m.group(1)) or {}
        except yaml.YAMLError as e:
            raise InputError(f"The dataset card template's YAML header is not valid YAML: {e}") from e
        if not isinstance(meta, dict):
            raise InputError("The dataset card template's YAML header must be a mapping.")
        return meta, text[m.end():]
    return {}, text


def _read_template(template):
    if isinstance(template, Path) or (isinstance(template, str) and "\n" not in template
                                      and template.endswith(".md")):
        p = Path(template)
        if not p.is_file():
            raise InputError(f"Dataset card template {str(p)!r} does not exist.")
        return p.read_text(encoding="utf-8")
    if not isinstance(template, str):
        raise InputError(
            f"The 'template' parameter of write_dataset_card must be a path or the card text. "
            f"Got {type(template).__name__} instead."
        )
    return template


def _fill(body: str, values: dict):
    missing = sorted({m.group(1) for m in _PLACEHOLDER_RE.finditer(body)} - set(values))
    if missing:
        raise InputError(f"The dataset card template has placeholders with no value: {', '.join(missing)}.")
    return _PLACEHOLDER_RE.sub(lambda m: str(values[m.group(1)]), body)


def _size_category(n: int) -> str:
    # the Hub's size_categories buckets
    for bound, name in [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]:
        if n < bound:
            return name
    return "100M<n<1B"


def render_dataset_card(*, template, features=None, configs, num_examples=None, num_bytes=None,
                        values=None, extra_fields=None, dataset_infos=None, default_config=None) -> str:
    """Return the card text that ``write_dataset_card`` writes (same parameters, no folder)."""
    import yaml

    meta, body = split_front_matter(_read_template(template))
    if not isinstance(configs, dict) or not configs:
        raise InputError(
            "The 'configs' parameter of write_dataset_card must be a non-empty dict "
            f"{{config_name: {{split: glob}}}}. Got {configs!r} instead."
        )
    meta = copy.deepcopy(meta)
    if extra_fields:
        meta.update(copy.deepcopy(extra_fields))
    cfg_list = []
    for name, files in configs.items():
        if not isinstance(files, dict) or not files:
            raise InputError(f"Config {name!r} of write_dataset_card needs a non-empty {{split: glob}} dict, got {files!r}.")
        cfg_list.append({"config_name": name,
                         "data_files": [{"split": s, "path": g} for s, g in files.items()]})
    if default_config is not None and default_config not in configs:
        raise InputError(f"The 'default_config' parameter of write_dataset_card must be one of {list(configs)}. "
                         f"Got {default_config!r} instead.")
    default_name = default_config if default_config is not None else ("default" if "default" in configs else None)
    if len(cfg_list) > 1 and default_name is not None:
        cfg_list[[c["config_name"] for c in cfg_list].index(default_name)]["default"] = True
    meta["configs"] = cfg_list

    # dataset_info: one per config; ``features``/``num_examples`` describe the first (default) one
    infos = dict(dataset_infos or {})
    first = next(iter(configs))
    if features is not None and first not in infos:
        infos[first] = {"features": features, "num_examples": num_examples, "num_bytes": num_bytes}
    info_list = []
    total = 0
    for name, info in infos.items():
        d = {}
        if name != "default" or len(infos) > 1:
            d["config_name"] = name
        feats = info.get("features")
        if feats is not None:
            d["features"] = feats._to_yaml_list()
        ne = info.get("num_examples") or {}
        nb = info.get("num_bytes") or {}
        if ne:
            d["splits"] = [{"name": s, "num_bytes": int(nb.get(s, 0)), "num_examples": int(k)} for s, k in ne.items()]
            d["dataset_size"] = int(sum(nb.values())) if nb else 0
            if name == first:
                total = int(sum(ne.values()))
        info_list.append(d)
    if info_list:
        meta["dataset_info"] = info_list[0] if len(info_list) == 1 and "config_name" not in info_list[0] else info_list
    if total and "size_categories" not in meta:
        meta["size_categories"] = [_size_category(total)]

    body = _TEMPLATE_NOTE_RE.sub("", body)
    vals = {"num_examples_total": total}
    for s, k in (num_examples or {}).items():
        vals[f"num_examples_{s}"] = k
    vals.update(values or {})
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{header}---\n{_fill(body, vals)}"


def write_dataset_card(out_dir, *, template, features=None, configs, num_examples=None, num_bytes=None,
                       values=None, extra_fields=None, dataset_infos=None, default_config=None) -> Path:
    """Write ``out_dir/README.md``: a Hugging Face dataset card that makes the folder loadable.

    Parameters
    ----------
    out_dir : str or Path
        The dataset folder.
    template : str or Path
        The card source: a path to a ``.md`` file or its text.  Its YAML front matter (if any:
        ``license``, ``pretty_name``, ``task_categories``, ``tags`` ...) is kept; its body is
        copied with ``{{ name }}`` placeholders filled from ``values`` (plus the built-in
        ``num_examples_total`` and ``num_examples_<split>``) and ``<!-- template: ... -->``
        notes removed.  A placeholder with no value is an error, so no card ships with holes.
    features : datasets.Features, optional
        Features of the first config, written as ``dataset_info.features`` (name/dtype,
        ClassLabel names) in the Hub's format.
    configs : dict
        ``{config_name: {split: data_files glob}}``, e.g.
        ``{"default": {"train": "data/train-*", "test": "data/test-*"}}``; written as the
        card's ``configs`` list, which is what ``datasets.load_dataset(DIR)`` reads.
    num_examples, num_bytes : dict, optional
        ``{split: count}`` for the first config's ``dataset_info.splits``.
    values : dict, optional
        Values of the body's placeholders.
    extra_fields : dict, optional
        More YAML fields; they override the template's.
    dataset_infos : dict, optional
        ``{config_name: {"features": ..., "num_examples": {...}, "num_bytes": {...}}}`` for
        folders with several configs (then ``dataset_info`` is a list with ``config_name``).
    default_config : str, optional
        The config ``datasets.load_dataset(DIR)`` loads when none is named (marked
        ``default: true``); by default the one named ``"default"``, if any.

    Returns
    -------
    Path
        The card's path.  ``size_categories`` is filled from the total when not given.
    """
    text = render_dataset_card(template=template, features=features, configs=configs,
                               num_examples=num_examples, num_bytes=num_bytes, values=values,
                               extra_fields=extra_fields, dataset_infos=dataset_infos,
                               default_config=default_config)
    path = Path(out_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


BUILD_LOG = "build_log.json"


def output_kind(folder):
    """The ``dataset`` a geoaudit build wrote into ``folder`` (from its ``build_log.json``), or None.

    Parameters
    ----------
    folder : str or Path

    Returns
    -------
    str or None
        e.g. ``"imagenet-geo"``; None for a folder no geoaudit build wrote.
    """
    import json

    p = Path(folder) / BUILD_LOG
    try:
        log_ = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _card_kind(folder)
    if not isinstance(log_, dict):
        return None
    if isinstance(log_.get("dataset"), str):
        return log_["dataset"]
    if "location_source" in log_ and "split_rule" in log_:  # logs written before "dataset" was recorded
        return "imagenet-geo"
    return None


def _card_kind(folder):
    """``"geoshapes"`` for a folder holding GeoShapes' dataset card (GeoShapes writes no build log)."""
    try:
        head = (Path(folder) / "README.md").read_text(encoding="utf-8")[:2000]
    except (OSError, ValueError):
        return None
    return "geoshapes" if head.startswith("---") and "\npretty_name: GeoShapes\n" in head else None


def check_output_dir(out_dir, *, kind, overwrite=False, caller="build"):
    """Refuse an output folder a build must not replace; return it as a Path.

    A build writes beside ``out_dir`` and then replaces it whole, so ``out_dir`` must be a
    new or empty folder, or one an earlier build of the same ``kind`` wrote (its
    ``build_log.json`` says so).  ``overwrite`` allows any other folder, but never the
    current folder, one of its parents, the home folder or the file-system root.

    Parameters
    ----------
    out_dir : str or Path
        The folder the build will write.
    kind : str
        The dataset the build writes, as recorded in ``build_log.json`` (e.g. ``"imagenet-geo"``).
    overwrite : bool or None
        Replace a non-empty folder that is not an output of this kind (None: the caller
        offers no such option, and the message does not suggest one).
    caller : str
        Named in the messages.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InputError
        ``out_dir`` is missing, a file, a folder that holds the current one, or a non-empty
        folder of something else (without ``overwrite``).
    """
    if out_dir is None or (isinstance(out_dir, str) and not out_dir.strip()):
        raise InputError(f"The 'out_dir' parameter of {caller} is required: a new folder for the dataset.")
    path = Path(out_dir)
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or resolved == Path.home().resolve() or resolved.parent == resolved:
        raise InputError(f"The output folder {str(out_dir)!r} is the current folder, one of its parents, the home "
                         f"folder or the root; the build replaces its output whole, so name a new folder "
                         f"(e.g. {str(Path(out_dir) / 'dataset')!r}).")
    if path.exists() and not path.is_dir():
        raise InputError(f"The output {str(out_dir)!r} exists and is a file; expected a folder.")
    if path.is_dir() and any(path.iterdir()):
        found = output_kind(path)
        if found != kind and not overwrite:
            what = f"an output of '{found}'" if found else "not an output of geoaudit"
            raise InputError(f"The output folder {str(out_dir)!r} is not empty and is {what}; the build would "
                             f"replace it whole. Name a new or empty folder"
                             + ("." if overwrite is None else ", or allow overwriting it."))
    return path
