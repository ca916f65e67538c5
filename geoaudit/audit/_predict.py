"""Predictions from any classifier: a torch module, any callable returning labels or logits,
over a ``datasets`` split or an image tensor; and audits of models and checkpoints directly."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from geoaudit._device import resolve_device
from geoaudit._errors import InputError
from geoaudit._progress import progress
from geoaudit._validation import check_interval

log = logging.getLogger(__name__)


def _to_labels(out, n, *, name):
    """Predicted classes from a batch output: logits (N, K) -> argmax; labels (N,) as they are."""
    import torch

    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]  # models that return (logits, extras)
    if isinstance(out, torch.Tensor):
        out = out.detach()
        if out.dim() == 2:
            return out.argmax(dim=1).cpu().numpy().astype(np.int64)
        arr = out.cpu().numpy()
    else:
        arr = np.asarray(out)
        if arr.ndim == 2:
            return arr.argmax(axis=1).astype(np.int64)
    if arr.ndim != 1 or len(arr) != n:
        raise InputError(
            f"{name} must return logits of shape (N, num_classes) or labels of shape (N,) for a batch of "
            f"N={n} images; got shape {tuple(arr.shape)}."
        )
    if arr.dtype.kind == "f":
        if not np.all(arr == np.round(arr)):
            raise InputError(f"{name} returned non-integer 1-D output; return logits (N, K) or class indices (N,).")
        arr = arr.astype(np.int64)
    return arr


def _device_labels(out, n, *, name):
    """Predicted classes of a batch left where they are (a tensor on the model's device, no
    host sync), or None when the output needs the host path of :func:`_to_labels`."""
    import torch

    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == n:
        return out.detach().argmax(dim=1)
    return None


def _image_batches(data, batch_size, image_size, channels, device, num_workers=0):
    """Yield float image batches (on ``device``) from a datasets split or an (N, C, H, W) array.

    A split is decoded to uint8 (by ``num_workers`` processes when > 0, into pinned memory on
    CUDA), copied to the device without blocking and converted there."""
    import torch

    if isinstance(data, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(data)
        if x.dim() != 4 or not x.is_floating_point():
            raise InputError(f"Expected images of shape (N, C, H, W) as floats in [0, 1], got {x.dtype} "
                             f"of shape {tuple(x.shape)}.")
        if len(x) and not (float(x.min()) >= 0.0 and float(x.max()) <= 1.0):  # e.g. 0-255 pixels, or NaN
            raise InputError(f"Expected images with values in [0, 1], got values in [{float(x.min()):.4g}, "
                             f"{float(x.max()):.4g}]; scale the pixels to [0, 1] (normalization belongs inside "
                             "the model).")
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size].to(device)
        return
    if not hasattr(data, "column_names") or "image" not in data.column_names:
        raise InputError(
            f"Expected a datasets split with an 'image' column, or an (N, C, H, W) image tensor; got "
            f"{type(data).__name__}" + (f" with columns {data.column_names}" if hasattr(data, "column_names") else "")
            + "."
        )
    from geoaudit.data import iter_image_batches

    cuda = torch.device(device).type == "cuda" if device is not None else False
    for images, _, _ in iter_image_batches(data, batch_size, image_size=image_size, channels=channels,
                                           label_col=None, num_workers=num_workers, pin_memory=cuda, uint8=True):
        yield images.to(device, non_blocking=cuda).float().div_(255.0)


def predict_many(models: dict, data, *, batch_size=256, device=None, image_size=None, channels=3, desc="predict",
                 num_workers=0, amp="off", channels_last=False):
    """Predictions of several classifiers on the same images, each image decoded once.

    Parameters
    ----------
    models : dict of str -> torch.nn.Module or callable
        Each takes a float batch (N, C, H, W) in [0, 1] and returns logits (N, K) or labels (N,).
    data : datasets.Dataset or torch.Tensor or numpy.ndarray
        A split with an ``image`` column, or images (N, C, H, W) in [0, 1].
    batch_size : int, default 256
    device : str or torch.device, optional
        Where inference runs ("auto" = CUDA when present).  Modules are moved there
        (``model.to(device)``); by default a module runs where its parameters are, and a
        plain callable gets CPU tensors.
    image_size : int, optional
        Resize images of a datasets split to this square size.
    channels : {1, 3}, default 3
    num_workers : int, default 0
        Processes decoding a split's images ahead of the models (0: in this thread).
    amp : {"off", "bf16"}, default "off"
        bfloat16 autocast of the models' forward passes (predictions may differ where two
        logits are within bf16 rounding).
    channels_last : bool, default False
        Batches in NHWC memory format (faster convolutions on CUDA).

    Returns
    -------
    dict of str -> numpy.ndarray of int64, shape (N,)
        Logits' argmax stay on the device until all batches are done and come back in one
        transfer per model.
    """
    import contextlib

    import torch

    from geoaudit._validation import check_options

    batch_size = check_interval("batch_size", batch_size, 1, None, caller="predict", integer=True)
    check_options("amp", amp, ("off", "bf16"), caller="predict")
    if not models:
        raise InputError("predict got no models.")
    first = next(iter(models.values()))
    dev = resolve_device(device, model=first)
    states = {}
    for name, m in models.items():
        if not callable(m):
            raise InputError(f"Model {name!r} is a {type(m).__name__}, not a torch module or a callable.")
        if isinstance(m, torch.nn.Module):
            states[name] = m.training
            if device is not None:
                m.to(dev)
            m.eval()
    n = len(data)
    out = {name: [] for name in models}
    autocast = (torch.autocast(device_type=torch.device(dev).type, dtype=torch.bfloat16) if amp == "bf16"
                else contextlib.nullcontext())
    try:
        with torch.inference_mode(), autocast:
            batches = _image_batches(data, batch_size, image_size, channels, dev, num_workers)
            for images in progress(batches, total=-(-n // batch_size), desc=desc, unit="batch"):
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                for name, m in models.items():
                    res = m(images)
                    labels = _device_labels(res, len(images), name=f"Model {name!r}")
                    out[name].append(labels if labels is not None else
                                     _to_labels(res, len(images), name=f"Model {name!r}"))
    finally:
        for name, was_training in states.items():
            models[name].train(was_training)
    return {name: _gather(v) for name, v in out.items()}


def _gather(parts):
    """One int64 array from per-batch labels: device tensors concatenated there and copied once."""
    import torch

    if not parts:
        return np.zeros(0, np.int64)
    host = [p for p in parts if not isinstance(p, torch.Tensor)]
    if not host:
        return torch.cat(parts).cpu().numpy().astype(np.int64)
    return np.concatenate([p.cpu().numpy().astype(np.int64) if isinstance(p, torch.Tensor) else p for p in parts])


def predict(model, data, *, batch_size=256, device=None, image_size=None, channels=3):
    """Predicted classes of one classifier (a torch module or any callable returning logits or
    labels) on a datasets split or an image tensor.  See :func:`predict_many`.

    Examples
    --------
    >>> import torch
    >>> from geoaudit.audit import predict
    >>> predict(lambda x: x.mean(dim=(2, 3)), torch.rand(5, 3, 8, 8)).shape
    (5,)
    """
    return predict_many({"model": model}, data, batch_size=batch_size, device=device,
                        image_size=image_size, channels=channels)["model"]


def _dataset_class_names(ds, label_col="label"):
    feat = getattr(ds, "features", {}).get(label_col) if hasattr(ds, "features") else None
    return list(feat.names) if getattr(feat, "names", None) else None


def _class_map(model_names, data_names, *, model):
    """Index array mapping the model's class indices to the dataset's (None when identical)."""
    if model_names is None or data_names is None or list(model_names) == list(data_names):
        return None
    if sorted(model_names) != sorted(data_names):
        extra = sorted(set(model_names) ^ set(data_names))
        raise InputError(
            f"Model {model!r} was trained on classes that do not match the dataset's labels "
            f"({len(model_names)} vs {len(data_names)} classes; differing: {', '.join(extra[:5])}"
            f"{' ...' if len(extra) > 5 else ''})."
        )
    pos = {c: i for i, c in enumerate(data_names)}
    return np.array([pos[c] for c in model_names], dtype=np.int64)


def predictions_frame(models, dataset, *, group="country_iso3", covariate="gdp_per_capita_usd",
                      label_col="label", batch_size=256, device=None, image_size=None, channels=3,
                      class_names=None, num_workers=0, amp="off", channels_last=False):
    """Predict with each model on a datasets split; one row per (image, model).

    Parameters
    ----------
    models : torch.nn.Module or callable, or dict of str -> module/callable
    dataset : datasets.Dataset
        A split with columns ``image``, ``label_col``, ``group`` and ``covariate``.
    class_names : dict of str -> list of str, optional
        Each model's class names; predictions are mapped onto the dataset's label order when it
        differs (and an error is raised when the class sets differ).
    num_workers, amp, channels_last
        Decoding workers and inference switches, see :func:`predict_many`.

    Returns
    -------
    pandas.DataFrame
        Columns image_id (when the split has it), label, prediction, ``group``, ``covariate``, model.
    """
    from geoaudit._validation import check_columns

    if not isinstance(models, dict):
        models = {"model": models}
    if not hasattr(dataset, "column_names"):
        raise InputError(f"predictions_frame expects a datasets.Dataset split, got {type(dataset).__name__}.")
    check_columns(dataset.column_names, ["image", label_col, group, covariate], source="The dataset split")
    meta_cols = [c for c in ("image_id",) if c in dataset.column_names] + [label_col, group, covariate]
    meta = dataset.select_columns(list(dict.fromkeys(meta_cols))).to_pandas()
    data_names = _dataset_class_names(dataset, label_col)
    if data_names:  # ClassLabel's -1 means "no label": counting it as a wrong answer would bias the audit
        bad = np.flatnonzero(~pd.to_numeric(meta[label_col], errors="coerce").between(0, len(data_names) - 1))
        if len(bad):
            raise InputError(f"{len(bad)} image(s) of the dataset split have no valid {label_col!r} (missing, -1, "
                             f"or not one of its {len(data_names)} classes), first at row {bad[0]}; filter them "
                             "out before the audit.")
    preds = predict_many(models, dataset, batch_size=batch_size, device=device, image_size=image_size,
                         channels=channels, num_workers=num_workers, amp=amp, channels_last=channels_last)
    frames = []
    for name, p in preds.items():
        cmap = _class_map((class_names or {}).get(name), data_names, model=name)
        if cmap is not None:
            p = cmap[p]
        f = meta.copy()
        f = f.rename(columns={label_col: "label"}) if label_col != "label" else f
        f["prediction"] = p
        f["model"] = name
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def audit_model(models, dataset, *, group="country_iso3", covariate="gdp_per_capita_usd", label_col="label",
                batch_size=256, device=None, image_size=None, channels=3, min_group_size=50,
                variance="random-effects", log_covariate=True, alpha=0.05, class_names=None, model_info=None,
                source=None, drop_missing_covariate=False, tau2_method="REML", adjust_classes=False,
                num_workers=0, amp="off", channels_last=False):
    """Audit one model (or a population, as a dict name -> model) on a datasets split.

    A model may be a torch module or callable, a geoaudit checkpoint folder, or a name
    (``"timm:NAME"``, ``"torchvision:NAME"``, ``"hf:REPO_OR_DIR"``).  The input size and
    channels of a checkpoint (or of a module carrying its ``geoaudit_config``) come from its
    config: images are resized to the size the model was trained at, and an ``image_size``
    that disagrees is refused.  Predicts with :func:`predictions_frame` then audits with
    :func:`audit_predictions`.  Returns ``(report, predictions)``: the :class:`AuditReport` and
    the predictions table.  ``num_workers``, ``amp`` and ``channels_last`` are the prediction
    switches of :func:`predict_many`.
    """
    from geoaudit.audit._population import audit_predictions

    models, image_size, channels, class_names, model_info = _resolve_models(
        models, image_size=image_size, channels=channels, class_names=class_names, model_info=model_info,
        device=device)
    frame = predictions_frame(models, dataset, group=group, covariate=covariate, label_col=label_col,
                              batch_size=batch_size, device=device, image_size=image_size,
                              channels=channels, class_names=class_names, num_workers=num_workers, amp=amp,
                              channels_last=channels_last)
    report = audit_predictions(frame, group=group, covariate=covariate, label_col="label",
                               pred_col="prediction", model_col="model", min_group_size=min_group_size,
                               variance=variance, log_covariate=log_covariate, alpha=alpha,
                               source=source, model_info=model_info,
                               drop_missing_covariate=drop_missing_covariate, tau2_method=tau2_method,
                               adjust_classes=adjust_classes)
    return report, frame


def _resolve_models(models, *, image_size, channels, class_names, model_info, device):
    """Load models given by name or checkpoint folder; take the input size from their configs."""
    from geoaudit.audit._external import resolve_model

    single = not isinstance(models, dict)
    items = {"model": models} if single else dict(models)
    class_names = dict(class_names or {})
    model_info = dict(model_info or {})
    sizes = {}
    for name, m in items.items():
        net, cnames, info, size, ch = resolve_model(m, device=resolve_device(device) if device else "cpu",
                                                    image_size=image_size)
        items[name] = net
        if cnames is not None and name not in class_names:
            class_names[name] = list(cnames)
        if info:
            model_info[name] = {**info, **model_info.get(name, {})}
        if size is not None and (isinstance(m, (str, Path)) or getattr(net, "geoaudit_config", None)):
            sizes[name] = (size, ch)
    if len(set(sizes.values())) > 1:
        raise InputError("These models were trained at different input sizes "
                         f"({', '.join(f'{n}: {s[0]} px' for n, s in sizes.items())}); audit them with "
                         "audit_checkpoints, which predicts at each model's own size.")
    if sizes:
        image_size, channels = next(iter(sizes.values()))
    if image_size is None:
        from geoaudit.models import ExternalModel

        ext = [m for m in items.values() if isinstance(m, ExternalModel)]
        if ext:  # one batch needs one size; the model's own preprocessing then resizes and crops
            pre = ext[0].preprocess
            image_size = pre.resize if isinstance(pre.resize, int) else max(pre.crop or pre.resize or (224,))
            log.info("images are resized to %d px squares before %s's own preprocessing; audit_classifier "
                     "keeps each image's aspect ratio", image_size, ext[0].spec)
    return items, image_size, channels, class_names or None, model_info or None


def find_checkpoints(path) -> list[Path]:
    """Checkpoint folders under ``path``: every folder holding a config.json, sorted by path
    (``path`` itself when it is one)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Models folder {str(path)!r} does not exist.")
    if path.is_file():
        if path.name == "config.json":
            return [path.parent]
        raise InputError(f"Expected a checkpoint folder or a folder of checkpoints, got the file {str(path)!r}.")
    if (path / "config.json").exists():
        return [path]
    found = sorted({p.parent for p in path.rglob("config.json") if not any(
        part.startswith(".") for part in p.relative_to(path).parts)})
    if not found:
        raise InputError(f"No geoaudit checkpoints (folders with config.json) under {str(path)!r}.")
    # a checkpoint that lost its config.json would silently shrink the population
    orphans = sorted({p.parent for p in path.rglob("weights.pt") if not any(
        part.startswith(".") for part in p.relative_to(path).parts)} - set(found))
    if orphans:
        names = ", ".join(str(p.relative_to(path)) for p in orphans[:5]) + (" ..." if len(orphans) > 5 else "")
        raise InputError(f"{len(orphans)} of {len(found) + len(orphans)} checkpoint folders under {str(path)!r} "
                         f"hold weights.pt but no config.json ({names}); restore or remove them so that "
                         "the audited population is the one trained.")
    return found


def _unique_names(paths):
    """Folder names, or paths relative to the common folder when folder names repeat."""
    import os

    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    common = Path(os.path.commonpath([str(p.resolve()) for p in paths]))
    return [p.resolve().relative_to(common).as_posix() for p in paths]


def audit_checkpoints(checkpoints, dataset, *, group="country_iso3", covariate="gdp_per_capita_usd",
                      batch_size=256, device="auto", min_group_size=50, variance="random-effects",
                      log_covariate=True, alpha=0.05, source=None, drop_missing_covariate=False,
                      tau2_method="REML", adjust_classes=False, num_workers=0, amp="off", channels_last=False):
    """Audit geoaudit checkpoint folders on a datasets split.

    Each model is named by its folder name (or its path relative to the checkpoints' common
    folder when names repeat); checkpoints with the same image size and channels share one
    pass over the images.  ``num_workers``, ``amp`` and ``channels_last`` are the prediction
    switches of :func:`predict_many`.  Returns ``(report, predictions)``.
    """
    import torch

    from geoaudit.audit._population import audit_predictions
    from geoaudit.models import load_model

    paths = [Path(p) for p in checkpoints]
    if not paths:
        raise InputError("No checkpoints to audit.")
    dev = resolve_device(device)
    names = _unique_names(paths)
    loaded, info, cnames, spec = {}, {}, {}, {}
    for name, p in zip(names, paths):
        model, cfg = load_model(p, device=dev)
        loaded[name] = model
        cnames[name] = cfg.get("class_names")
        spec[name] = (int(cfg["image_size"]), int(cfg["in_channels"]))
        training = cfg.get("training") or {}
        info[name] = {k: v for k, v in {
            "checkpoint": str(p), "arch": cfg.get("arch"),
            "seed": training.get("seed"), "method": training.get("method"),
        }.items() if v is not None}
    frames = []
    for key in sorted(set(spec.values())):
        part = {n: m for n, m in loaded.items() if spec[n] == key}
        log.info("predicting with %d model(s) at %dpx, %d channel(s) on %d images",
                 len(part), key[0], key[1], len(dataset))
        frames.append(predictions_frame(part, dataset, group=group, covariate=covariate,
                                        batch_size=batch_size, device=dev, image_size=key[0],
                                        channels=key[1], class_names=cnames, num_workers=num_workers,
                                        amp=amp, channels_last=channels_last))
    frame = pd.concat(frames, ignore_index=True)
    # keep model order = checkpoint order
    frame["model"] = pd.Categorical(frame["model"], categories=names, ordered=True)
    frame = frame.sort_values("model", kind="stable").reset_index(drop=True)
    frame["model"] = frame["model"].astype(str)
    del loaded
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    report = audit_predictions(frame, group=group, covariate=covariate, label_col="label",
                               pred_col="prediction", model_col="model", min_group_size=min_group_size,
                               variance=variance, log_covariate=log_covariate, alpha=alpha,
                               source=source, model_info=info, drop_missing_covariate=drop_missing_covariate,
                               tau2_method=tau2_method, adjust_classes=adjust_classes)
    return report, frame
