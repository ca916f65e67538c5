"""Auditing any classifier on any geo-labelled dataset.

:func:`audit_classifier` takes a model (a ``timm:``/``torchvision:``/``hf:`` name, a geoaudit
checkpoint folder, a torch module or any callable), a ``datasets`` split with the geo columns
of :func:`geoaudit.data.add_geo_columns`, and audits top-k accuracy per group: per country
against GDP per capita (the default), or per region, income group, continent, income band or
household.  Labels may be indices, wnids, names or lists of them (an image is right when any
of its labels is among the top-k predictions, as Dollar Street is scored).
"""
from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit._validation import check_columns, check_interval, check_options

log = logging.getLogger(__name__)

GROUP_BY = ("country", "region", "income_group", "continent", "income-band", "household")
_GROUP_COL = {"country": "country_iso3", "region": "region", "income_group": "income_group",
              "continent": "continent", "income-band": "income_band", "household": "household"}


def resolve_model(model, *, weights=None, device="cpu", image_size=None, class_names=None):
    """A ready model, its class names and its provenance from a name, a checkpoint or a module.

    Parameters
    ----------
    model : str or Path or torch.nn.Module or callable
        ``"timm:NAME"``, ``"torchvision:NAME[@WEIGHTS]"``, ``"hf:REPO_OR_DIR"``, a geoaudit
        checkpoint folder, or a model.
    weights : str or Path, optional
        Weights file for a model given by name.
    image_size : int, optional
        Only for a geoaudit checkpoint: must equal the size it was trained at.
    class_names : list of str, optional
        Only for a zero-shot ``clip:`` model: the classes to prompt with.

    Returns
    -------
    (model, class_names or None, info dict, image_size or None, channels)
    """
    from geoaudit.models import load_model
    from geoaudit.models._external import PREFIXES, ExternalModel, load_external

    if isinstance(model, (str, Path)):
        s = str(model)
        if ":" in s and not Path(s).exists():
            m = load_external(s, weights=weights, device=device, class_names=class_names)
            return m, m.class_names, dict(m.info, spec=s), None, 3
        p = Path(s)
        if p.is_dir() and (p / "config.json").exists():
            net, cfg = load_model(p, device=device)
            size = int(cfg["image_size"])
            if image_size is not None and int(image_size) != size:
                raise InputError(f"Checkpoint {s!r} was trained on {size}-px images; auditing it at {image_size} px "
                                 "would measure another model (leave image_size unset).")
            info = {"checkpoint": s, "arch": cfg.get("arch"), "image_size": size,
                    "normalization": cfg.get("normalization")}
            return net, cfg.get("class_names"), info, size, int(cfg["in_channels"])
        raise InputError(f"Model {s!r} is neither PREFIX:NAME (accepted prefixes: "
                         f"{', '.join(q + ':' for q in PREFIXES)}) nor a geoaudit checkpoint folder.")
    if isinstance(model, ExternalModel):
        return model, model.class_names, dict(model.info, spec=model.spec), None, 3
    if not callable(model):
        raise InputError(f"Expected a model name, a checkpoint folder, a torch module or a callable; "
                         f"got {type(model).__name__}.")
    cfg = getattr(model, "geoaudit_config", None)
    if isinstance(cfg, dict) and cfg.get("image_size"):
        size = int(cfg["image_size"])
        if image_size is not None and int(image_size) != size:
            raise InputError(f"The model was trained on {size}-px images; auditing it at {image_size} px "
                             "would measure another model (leave image_size unset).")
        return model, cfg.get("class_names"), {"image_size": size}, size, int(cfg.get("in_channels", 3))
    return model, getattr(model, "class_names", None), {}, image_size, 3


def _decode(img):
    import torch
    from PIL import Image

    if not isinstance(img, Image.Image):
        img = Image.fromarray(np.asarray(img))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)


def predict_topk(model, dataset, *, k=1, batch_size=64, device=None, image_size=None, channels=3):
    """Indices of the top-k classes of each image (N, k), best first.

    An :class:`~geoaudit.models.ExternalModel` gets each image at its own size, resized and
    cropped by the model's preprocessing; other models get images resized to ``image_size``.

    Parameters
    ----------
    model : torch.nn.Module or callable
        Returns logits (N, K) for [0, 1] images (or labels (N,) when ``k`` is 1).
    dataset : datasets.Dataset or torch.Tensor
        A split with an ``image`` column, or images (N, C, H, W) in [0, 1].
    k, batch_size, device, image_size, channels
        Top-k and inference settings.

    Returns
    -------
    numpy.ndarray of int64, shape (N, k)
    """
    return _predict_topk(model, dataset, k=k, batch_size=batch_size, device=device, image_size=image_size,
                         channels=channels)[0]


def _predict_topk(model, dataset, *, k=1, batch_size=64, device=None, image_size=None, channels=3):
    import torch

    from geoaudit._device import resolve_device
    from geoaudit._progress import progress
    from geoaudit.audit._predict import _image_batches
    from geoaudit.models._external import ExternalModel

    k = check_interval("top_k", k, 1, None, caller="predict_topk", integer=True)
    dev = resolve_device(device, model=model if isinstance(model, torch.nn.Module) else None)
    if isinstance(model, torch.nn.Module):
        model.to(dev).eval()
    n = len(dataset)
    out, width = [], [0]

    def batches():
        if isinstance(model, ExternalModel) and hasattr(dataset, "column_names"):
            for start in range(0, n, batch_size):
                try:
                    ims = dataset[start:start + batch_size]["image"]
                except Exception as e:  # PIL raises many types for broken bytes
                    from geoaudit.data._load import _raise_undecodable

                    _raise_undecodable(dataset, start, batch_size, e)
                yield torch.cat([model.preprocess.geometry(_decode(im)[None].to(dev)) for im in ims])
        else:
            yield from _image_batches(dataset, batch_size, image_size, channels, dev)

    with torch.inference_mode():
        for x in progress(batches(), total=-(-n // batch_size), desc="predict", unit="batch"):
            logits = model.classify(x) if isinstance(model, ExternalModel) else model(x)
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            logits = torch.as_tensor(logits)
            if logits.dim() == 1:
                if k != 1:
                    raise InputError("The model returns labels, not logits: top-k accuracy needs logits (top_k=1).")
                out.append(logits.long().cpu().numpy()[:, None])
                continue
            width[0] = int(logits.shape[1])
            kk = min(k, logits.shape[1])
            out.append(logits.topk(kk, dim=1).indices.cpu().numpy())
    return (np.concatenate(out) if out else np.zeros((0, k), np.int64)), width[0]


def _label_values(dataset, label_col):
    """Each row's labels as a list of values (names for a ClassLabel column)."""
    feat = dataset.features.get(label_col)
    names = getattr(feat, "names", None)
    vals = dataset[label_col]
    rows = []
    for v in vals:
        if isinstance(v, str) and v.startswith("["):
            try:  # lists stored as text in a CSV: JSON or Python literals
                v = json.loads(v)
            except ValueError:
                try:
                    v = ast.literal_eval(v)
                except (ValueError, SyntaxError):
                    pass
        items = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
        if names is not None:
            items = [names[int(i)] for i in items]
        rows.append(items)
    return rows


def _readable(label):
    """A prompt-ready class name: an ImageNet name for a wnid, spaces for underscores."""
    import re

    s = str(label)
    if re.fullmatch(r"n\d{8}", s):
        from geoaudit.data import imagenet_classes

        wnids, names = imagenet_classes()
        if s in wnids:
            s = names[wnids.index(s)]
            s = re.sub(r"_n\d{8}$", "", s)
    return s.replace("_", " ")


def _group_covariate(frame, group_col, cov_col):
    """Covariate of a group of countries: the geometric mean over its images of their
    countries' covariate (constant within the group, as the test needs)."""
    vals = frame[cov_col].astype(float)
    if (vals <= 0).any():
        return frame.groupby(group_col)[cov_col].transform("mean")
    return np.exp(np.log(vals).groupby(frame[group_col]).transform("mean"))


def group_frame(frame, group_by, *, covariate="gdp_per_capita_usd", income_col=None, household_col=None, bands=4):
    """Add the group and group-covariate columns of a grouping to a per-image table.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per image (and model) with the columns the grouping needs: ``country_iso3``
        and ``covariate`` for "country"; ``region``/``income_group``/``continent`` and
        ``covariate`` for those; ``income_col`` for "income-band"; ``household_col`` and
        ``income_col`` for "household".
    group_by : {"country", "region", "income_group", "continent", "income-band", "household"}
    covariate : str
        The country covariate column.
    income_col, household_col : str, optional
    bands : int or list of float
        Income bands (see :func:`geoaudit.data.income_bands`).

    Returns
    -------
    (pandas.DataFrame, str, str)
        The table (rows without a region etc. left out, with a warning), the group column and
        the covariate column to audit.
    """
    check_options("group_by", group_by, GROUP_BY, caller="group_frame")
    need = {"country": ["country_iso3", covariate], "income-band": [income_col],
            "household": [household_col, income_col]}.get(group_by, [_GROUP_COL[group_by], covariate])
    if None in need:
        raise InputError(f"group_by={group_by!r} needs " + ("household_col and income_col." if group_by == "household"
                                                            else "income_col, the per-image income column."))
    check_columns(list(frame.columns), need, source="The table")
    frame = frame.copy()
    group_col, cov_col = _GROUP_COL[group_by], covariate
    if group_by in ("region", "income_group", "continent"):
        missing = frame[group_col].isna()
        if missing.any():
            log.warning("%d row(s) have no %s (e.g. %s) and are left out", int(missing.sum()), group_col,
                        ", ".join(sorted(frame.loc[missing, "country_iso3"].astype(str).unique())[:5])
                        if "country_iso3" in frame else "")
            frame = frame[~missing].copy()
        ok = frame[covariate].notna()
        cov_col = f"{covariate}_geomean"
        frame[cov_col] = np.nan
        frame.loc[ok, cov_col] = _group_covariate(frame[ok], group_col, covariate)
    elif group_by == "income-band":
        from geoaudit.data._adapters import income_bands

        frame[group_col], frame["income_band_median"] = income_bands(frame[income_col].to_numpy(float), bands)
        cov_col = "income_band_median"
    elif group_by == "household":
        frame[group_col] = frame[household_col].astype(str)
        cov_col = income_col
    return frame, group_col, cov_col


def audit_classifier(model, dataset, *, label_col="label", group_by="country", covariate="gdp_per_capita_usd",
                     income_col=None, household_col=None, bands=4, top_k=1, label_map=None, weights=None,
                     batch_size=64, device=None, image_size=None, min_group_size=50, variance="paper",
                     log_covariate=True, alpha=0.05, drop_missing_covariate=False, source=None, name=None):
    """Audit any classifier's top-k accuracy per group on a geo-labelled dataset.

    Parameters
    ----------
    model : str or Path or torch.nn.Module or callable
        ``"timm:NAME"``, ``"torchvision:NAME[@WEIGHTS]"``, ``"hf:REPO_OR_DIR"``, a geoaudit
        checkpoint folder (its input size is read from its config), or a model returning logits.
    dataset : datasets.Dataset
        A split with ``image``, ``label_col`` and the geo columns of
        :func:`geoaudit.data.add_geo_columns` (or geoaudit's own schema); with only
        ``country_iso3``, GDP per capita, region, income group and continent are added from
        the shipped World Bank data.
    label_col : str
        Labels: indices, wnids, names, or lists of them (any one counts as right).
    group_by : {"country", "region", "income_group", "continent", "income-band", "household"}
        The groups S_i.  Region, income group and continent take as covariate the geometric
        mean of their images' country covariate; "income-band" groups images into ``bands``
        bands of ``income_col`` (covariate: the band's median income); "household" groups by
        ``household_col`` (covariate: the household's ``income_col``).
    covariate : str
        Column of the country covariate (for the country-based groupings).
    income_col, household_col : str, optional
        Per-image income and household columns (Dollar Street: ``income``, ``place``).
    bands : int or list of float
        Income bands (see :func:`geoaudit.data.income_bands`).
    top_k : int, default 1
        An image is right when a label is among the model's ``top_k`` classes.
    label_map : dict or LabelMap, optional
        ``{model class: dataset class}``; by default classes are matched by wnid, index and name.
    weights : str or Path, optional
        Weights file for a model given by name.
    batch_size, device, image_size
        Inference settings (``image_size`` only for plain modules; checkpoints and named models
        use their own).
    min_group_size, variance, log_covariate, alpha, drop_missing_covariate, source
        As in :func:`geoaudit.audit.audit_predictions`.
    name : str, optional
        The model's name in the report (default: the spec or "model").

    Returns
    -------
    (AuditReport, pandas.DataFrame)
        The report and the per-image table (labels, top-k predictions, correct, group, covariate).
    """
    from geoaudit.audit._population import audit_predictions
    from geoaudit.models._labelmap import LabelMap, data_key
    from geoaudit.models._labelmap import label_map as make_label_map

    caller = "audit_classifier"
    check_options("group_by", group_by, GROUP_BY, caller=caller)
    top_k = check_interval("top_k", top_k, 1, None, caller=caller, integer=True)
    if not hasattr(dataset, "column_names"):
        raise InputError(f"{caller} expects a datasets.Dataset split, got {type(dataset).__name__}.")
    need = ["image", label_col]
    if group_by in ("country", "region", "income_group", "continent"):
        need += [_GROUP_COL[group_by], covariate]
    if group_by == "income-band":
        if not income_col:
            raise InputError("group_by='income-band' needs income_col, the per-image income column.")
        need.append(income_col)
    if group_by == "household":
        if not (income_col and household_col):
            raise InputError("group_by='household' needs household_col and income_col.")
        need += [household_col, income_col]
    missing = [c for c in need if c not in dataset.column_names]
    if missing and "country_iso3" in dataset.column_names and covariate == "gdp_per_capita_usd" \
            and set(missing) <= {"gdp_per_capita_usd", "region", "income_group", "continent"}:
        from geoaudit.data import add_geo_columns

        log.info("adding %s from the shipped World Bank data", ", ".join(missing))
        dataset = add_geo_columns(dataset, country_col="country_iso3")
    check_columns(dataset.column_names, list(dict.fromkeys(need)), source="The dataset split")

    from geoaudit._device import resolve_device

    if device is not None:
        device = resolve_device(device)
    labels = _label_values(dataset, label_col)
    zero_shot = isinstance(model, str) and model.lower().startswith("clip:")
    data_classes = list(dict.fromkeys(x for row in labels for x in row)) if zero_shot else None
    net, class_names, info, size, channels = resolve_model(
        model, weights=weights, device=device or "cpu", image_size=image_size,
        class_names=[_readable(c) for c in data_classes] if zero_shot else None)
    if zero_shot:  # one logit per dataset class, in the order prompted
        class_names = [str(c) for c in data_classes]
    name = name or (str(model) if isinstance(model, (str, Path)) else "model")
    topk, width = _predict_topk(net, dataset, k=top_k, batch_size=batch_size, device=device, image_size=size,
                        channels=channels)
    if isinstance(label_map, LabelMap):
        lm = label_map
    elif zero_shot and label_map is None:  # logit i is dataset class i by construction
        keys = tuple(data_key(c) for c in data_classes)
        lm = LabelMap(keys, tuple(dict.fromkeys(keys)), ())
    else:
        all_labels = list(dict.fromkeys(x for row in labels for x in row))
        feat_names = getattr(dataset.features.get(label_col), "names", None)
        if class_names is None and feat_names and len(feat_names) == width:
            class_names = list(feat_names)  # a model without class names, as many logits as the ClassLabel
        model_classes = class_names if class_names is not None else max(width, int(topk.max()) + 1 if topk.size else 0)
        lm = make_label_map(model_classes, all_labels, mapping=label_map)
    if lm.uncovered:
        log.warning("%d of %d dataset classes have no model class (their images are always wrong): %s",
                    len(lm.uncovered), len(lm.data_classes), ", ".join(lm.uncovered[:10]))
    mapped = lm.map(topk)
    keys = [{data_key(x) for x in row} for row in labels]
    correct = np.array([bool(keys[i] & {m for m in mapped[i] if m is not None}) for i in range(len(keys))],
                       dtype=np.int64)

    year_col = "gdp_year" if covariate == "gdp_per_capita_usd" else f"{covariate}_year"
    meta_cols = [c for c in dict.fromkeys(need[2:] + ["country_iso3", covariate, year_col, "image_id"])
                 if c in dataset.column_names]
    frame = dataset.select_columns(meta_cols).to_pandas() if meta_cols else pd.DataFrame(index=range(len(dataset)))
    frame["label"] = [";".join(map(str, row)) for row in labels]
    frame["prediction"] = [m[0] if m[0] is not None else "" for m in mapped]
    frame["topk"] = [";".join("" if m is None else str(m) for m in row) for row in mapped]
    frame["correct"] = correct
    frame["_right"] = 1
    frame["model"] = name
    frame, group_col, cov_col = group_frame(frame, group_by, covariate=covariate, income_col=income_col,
                                            household_col=household_col, bands=bands)
    info = dict(info, top_k=top_k, group_by=group_by, label_map=lm.summary(),
                uncovered_classes=list(lm.uncovered[:20]))
    if year_col in frame.columns and group_by not in ("income-band", "household"):
        years = sorted({int(y) for y in frame[year_col].dropna()})
        info["covariate_years"] = f"{years[0]}-{years[-1]}" if len(years) > 1 else (str(years[0]) if years else None)
    report = audit_predictions(frame, group=group_col, covariate=cov_col, label_col="correct", pred_col="_right",
                               model_col="model", min_group_size=min_group_size, variance=variance,
                               log_covariate=log_covariate, alpha=alpha, source=source,
                               model_info={name: info}, drop_missing_covariate=drop_missing_covariate)
    return report, frame.drop(columns="_right")
