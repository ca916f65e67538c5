"""Image classifiers of other libraries by name: ``timm:NAME``, ``torchvision:NAME[@WEIGHTS]``,
``hf:REPO_OR_DIR``, and CLIP-style zero-shot classifiers of transformers, ``clip:REPO_OR_DIR``.

:func:`load_external` returns an :class:`ExternalModel`: it takes float images (N, C, H, W) in
[0, 1] of any size and returns logits, applying the model's own preprocessing inside (resize
of the shorter side, centre crop, normalisation), with the numbers read from the library that
defines the model: timm's ``resolve_data_config``, torchvision's ``weights.transforms()``,
transformers' ``AutoImageProcessor``.  Weights come from a local file or from the library's
cache; nothing is downloaded: weights that are not on the machine raise a
:class:`DependencyError` saying where they were looked for.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from geoaudit._errors import DependencyError, InputError

log = logging.getLogger(__name__)

PREFIXES = ("timm", "torchvision", "hf", "clip")
DEFAULT_TEMPLATE = "a photo of a {}."
_INTERP = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest", "lanczos": "bicubic",
           "box": "bilinear", "hamming": "bilinear", "nearest-exact": "nearest"}


class Preprocess(nn.Module):
    """Resize (shorter side to ``resize``, or to ``(h, w)``), centre crop to ``crop`` and
    normalise, on float tensors in [0, 1]; differentiable, so attacks can run through it."""

    def __init__(self, *, resize, crop, mean, std, interpolation="bilinear"):
        super().__init__()
        self.resize = resize  # int (shorter side), (h, w), or None
        self.crop = crop  # (h, w) or None
        self.interpolation = _INTERP.get(str(interpolation).lower(), "bilinear")
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def geometry(self, x):
        """Resize and crop only (no normalisation)."""
        h, w = x.shape[-2:]
        if isinstance(self.resize, int):
            s = self.resize
            size = (s, max(1, int(s * w / h))) if h <= w else (max(1, int(s * h / w)), s)
        else:
            size = tuple(self.resize) if self.resize else (h, w)
        if size != (h, w):
            kw = {"antialias": True} if self.interpolation in ("bilinear", "bicubic") else {}
            align = {"align_corners": False} if self.interpolation != "nearest" else {}
            x = F.interpolate(x, size=size, mode=self.interpolation, **kw, **align)
            if self.interpolation == "bicubic":
                x = x.clamp(0, 1)
        if self.crop:
            ch, cw = self.crop
            h, w = x.shape[-2:]
            top, left = round((h - ch) / 2.0), round((w - cw) / 2.0)
            x = x[..., max(top, 0):max(top, 0) + ch, max(left, 0):max(left, 0) + cw]
        return x

    def normalize(self, x):
        if x.shape[1] == 1 and self.mean.shape[1] == 3:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def forward(self, x):
        return self.normalize(self.geometry(x))

    def extra_repr(self):
        return f"resize={self.resize}, crop={self.crop}, interpolation={self.interpolation}"


class ExternalModel(nn.Module):
    """A classifier of another library behind geoaudit's convention: [0, 1] images in, logits out.

    Attributes
    ----------
    spec : str
        What was loaded, e.g. ``"torchvision:resnet50@IMAGENET1K_V2"``.
    class_names : list of str or None
        The model's class names in logit order.
    preprocess : Preprocess
        The library's preprocessing, applied in :meth:`forward`.
    info : dict
        Provenance (library, weights file, preprocessing numbers) for the audit report.
    """

    def __init__(self, net, preprocess, *, spec, class_names=None, info=None, hf=False):
        super().__init__()
        self.net = net
        self.preprocess = preprocess
        self.spec = spec
        self.class_names = list(class_names) if class_names is not None else None
        self.info = dict(info or {})
        self._hf = hf

    def classify(self, x):
        """Logits of images already resized and cropped (by ``preprocess.geometry``)."""
        out = self.net(self.preprocess.normalize(x))
        if self._hf:
            out = out.logits
        return out

    def forward(self, x):
        if not torch.is_tensor(x) or x.dim() != 4:
            raise InputError(f"{self.spec} takes images of shape (N, C, H, W) in [0, 1]; got "
                             f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}.")
        return self.classify(self.preprocess.geometry(x))


def parse_spec(spec):
    """Split a model spec.

    Parameters
    ----------
    spec : str
        ``PREFIX:NAME[@WEIGHTS]``, e.g. ``"torchvision:resnet50@IMAGENET1K_V1"``.

    Returns
    -------
    (str, str, str or None)
        Prefix, name and weights tag: ("torchvision", "resnet50", "IMAGENET1K_V1").
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise InputError(f"Model {spec!r} is not of the form PREFIX:NAME; accepted prefixes: "
                         f"{', '.join(p + ':' for p in PREFIXES)} (e.g. timm:resnet18, torchvision:resnet50, "
                         "hf:google/vit-base-patch16-224, clip:openai/clip-vit-base-patch32).")
    prefix, rest = spec.split(":", 1)
    prefix = prefix.strip().lower()
    if prefix not in PREFIXES:
        raise InputError(f"Unknown model prefix {prefix!r} in {spec!r}; accepted prefixes: "
                         f"{', '.join(p + ':' for p in PREFIXES)}.")
    name, _, tag = rest.partition("@") if prefix not in ("hf", "clip") else (rest, "", "")
    if not name.strip():
        raise InputError(f"Model {spec!r} names no model after {prefix + ':'!r}.")
    return prefix, name.strip(), tag.strip() or None


def _read_state(path):
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Weights file {str(path)!r} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch/safetensors raise many types for a bad file
        raise InputError(f"Could not read weights file {str(path)!r}: {type(e).__name__}: {e}") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise InputError(f"Weights file {str(path)!r} holds a {type(state).__name__}, not a state dict.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_state(net, path, spec):
    state = _read_state(path)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"Weights {str(path)!r} do not fit {spec}: {str(e).splitlines()[0]}") from e


def _imagenet_names_if(n):
    if n != 1000:
        return None
    from geoaudit.data import imagenet_classes

    return list(imagenet_classes()[1])


def _timm(name, tag, weights, num_classes):
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError as e:
        raise DependencyError("timm: models need the 'timm' package: pip install 'geoaudit[models]'") from e
    full = f"{name}.{tag}" if tag else name
    if not timm.is_model(full) and not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        raise InputError(f"timm has no model {full!r}" + (f"; similar: {', '.join(close)}." if close else "."))
    kwargs = {} if num_classes is None else {"num_classes": int(num_classes)}
    net = timm.create_model(full, pretrained=False, **kwargs)
    source = None
    if weights is not None:
        _load_state(net, weights, f"timm:{full}")
        source = str(weights)
    else:
        cfg = net.pretrained_cfg or {}
        hub_id = cfg.get("hf_hub_id")
        found = None
        if hub_id:
            from huggingface_hub import try_to_load_from_cache

            for fname in ("model.safetensors", "pytorch_model.bin"):
                hit = try_to_load_from_cache(hub_id, fname)
                if isinstance(hit, str):
                    found = hit
                    break
        if found is None:
            raise DependencyError(
                f"The weights of timm:{full} are not on this machine (looked in the Hugging Face cache"
                + (f" for {hub_id}" if hub_id else "") + "); pass a weights file, or download them once "
                f"with timm.create_model({full!r}, pretrained=True)."
            )
        _load_state(net, found, f"timm:{full}")
        source = found
    dc = resolve_data_config({}, model=net)
    size = tuple(dc["input_size"][1:])
    crop_pct = float(dc.get("crop_pct") or 1.0)
    crop_mode = dc.get("crop_mode", "center")
    if crop_mode == "squash":
        resize = tuple(math.floor(s / crop_pct) for s in size)
    elif size[0] == size[1]:
        resize = math.floor(size[0] / crop_pct)
    else:
        resize = tuple(math.floor(s / crop_pct) for s in size)
    pre = Preprocess(resize=resize, crop=size, mean=dc["mean"], std=dc["std"],
                     interpolation=dc.get("interpolation", "bilinear"))
    names = (net.pretrained_cfg or {}).get("label_names") if weights is None else None
    names = names or _imagenet_names_if(net.num_classes)
    info = {"library": "timm", "arch": full, "weights": source, "input_size": list(size), "crop_pct": crop_pct,
            "mean": list(dc["mean"]), "std": list(dc["std"])}
    return net, pre, names, info, False


def _torchvision(name, tag, weights, num_classes):
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        close = [m for m in torchvision.models.list_models() if name[:4].lower() in m][:5]
        raise InputError(f"torchvision has no model {name!r}" + (f"; similar: {', '.join(close)}." if close else ".")) \
            from None
    enum = torchvision.models.get_model_weights(name)
    if tag:
        try:
            wenum = enum[tag]
        except KeyError:
            raise InputError(f"torchvision:{name} has no weights {tag!r}; available: "
                             f"{', '.join(w.name for w in enum)}.") from None
    else:
        wenum = enum.DEFAULT
    kwargs = {} if num_classes is None else {"num_classes": int(num_classes)}
    net = builder(weights=None, **kwargs)
    if weights is not None:
        _load_state(net, weights, f"torchvision:{name}")
        source = str(weights)
    else:
        fname = Path(wenum.url.split("/")[-1]).name
        path = Path(torch.hub.get_dir()) / "checkpoints" / fname
        if not path.is_file():
            raise DependencyError(
                f"The weights of torchvision:{name}@{wenum.name} are not on this machine (looked for {str(path)!r}); "
                f"pass a weights file, or download them once with torchvision.models.{name}(weights={wenum!s})."
            )
        _load_state(net, path, f"torchvision:{name}@{wenum.name}")
        source = str(path)
    t = wenum.transforms()
    pre = Preprocess(resize=int(t.resize_size[0]) if len(t.resize_size) == 1 else tuple(t.resize_size),
                     crop=(int(t.crop_size[0]),) * 2 if len(t.crop_size) == 1 else tuple(t.crop_size),
                     mean=t.mean, std=t.std, interpolation=t.interpolation.value)
    n_out = num_classes or len(wenum.meta.get("categories") or [])
    names = list(wenum.meta["categories"]) if wenum.meta.get("categories") and n_out == len(wenum.meta["categories"]) \
        else None
    info = {"library": "torchvision", "arch": name, "weights_enum": wenum.name, "weights": source,
            "resize": t.resize_size, "crop": t.crop_size, "mean": list(t.mean), "std": list(t.std)}
    return net, pre, names, info, False


def _hf(name, weights):
    try:
        from transformers import AutoImageProcessor, AutoModelForImageClassification
    except ImportError as e:
        raise DependencyError("hf: models need the 'transformers' package: pip install 'geoaudit[models]'") from e
    try:
        net = AutoModelForImageClassification.from_pretrained(name, local_files_only=True)
        proc = AutoImageProcessor.from_pretrained(name, local_files_only=True)
    except OSError as e:
        raise DependencyError(
            f"hf:{name} is not on this machine (neither a folder nor in the Hugging Face cache); "
            f"download it once with AutoModelForImageClassification.from_pretrained({name!r}) "
            f"({str(e).splitlines()[0][:120]})."
        ) from e
    if weights is not None:
        _load_state(net, weights, f"hf:{name}")
    pre, info = _hf_preprocess(proc, name, weights)
    id2label = getattr(net.config, "id2label", None) or {}
    names = [id2label[i] for i in range(len(id2label))] if id2label else None
    return net, pre, names, info, True


def _hf_preprocess(proc, name, weights):
    """Preprocessing from a transformers image processor: (Preprocess, info)."""
    size = getattr(proc, "size", None) or {}
    size = dict(size) if not isinstance(size, int) else {"shortest_edge": size}
    crop = getattr(proc, "crop_size", None)
    do_crop = bool(getattr(proc, "do_center_crop", False)) and crop
    if size.get("shortest_edge"):
        resize = int(size["shortest_edge"])
    elif "height" in size and "width" in size and size["height"]:
        resize = (int(size["height"]), int(size["width"]))
    else:
        resize = None
    crop_hw = (int(dict(crop)["height"]), int(dict(crop)["width"])) if do_crop else None
    crop_pct = getattr(proc, "crop_pct", None)
    if crop_hw is None and isinstance(resize, int):
        se = resize
        if crop_pct and se < 384:  # ConvNeXt-style: resize to se / crop_pct, then centre crop se
            resize, crop_hw = int(se / crop_pct), (se, se)
        else:  # a shortest-edge resize without crop: square, as the model expects
            resize, crop_hw = (se, se), None
    mean = getattr(proc, "image_mean", None) or [0.0, 0.0, 0.0]
    std = getattr(proc, "image_std", None) or [1.0, 1.0, 1.0]
    if not getattr(proc, "do_normalize", True):
        mean, std = [0.0] * len(mean), [1.0] * len(std)
    resample = getattr(proc, "resample", None)
    interp = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(int(resample) if resample is not None else 2, "bilinear")
    pre = Preprocess(resize=resize, crop=crop_hw, mean=mean, std=std, interpolation=interp)
    info = {"library": "transformers", "repo": name, "weights": str(weights) if weights else name,
            "resize": resize, "crop": crop_hw, "mean": list(mean), "std": list(std)}
    return pre, info


class ZeroShot(nn.Module):
    """CLIP-style zero-shot classifier: cosine similarity of image and class-prompt embeddings,
    times the model's logit scale (as ``logits_per_image`` of transformers' CLIPModel)."""

    def __init__(self, clip, text_embeds, logit_scale):
        super().__init__()
        self.clip = clip
        self.register_buffer("text_embeds", text_embeds)
        self.register_buffer("logit_scale", logit_scale)

    def forward(self, pixel_values):
        out = self.clip.get_image_features(pixel_values=pixel_values)
        img = out if torch.is_tensor(out) else out.pooler_output
        img = img / img.norm(dim=-1, keepdim=True)
        return self.logit_scale * img @ self.text_embeds.t()


def _clip(name, class_names, template):
    try:
        from transformers import AutoModel, AutoProcessor
    except ImportError as e:
        raise DependencyError("clip: models need the 'transformers' package: pip install 'geoaudit[models]'") from e
    if not class_names:
        raise InputError("clip: models are zero-shot classifiers: give the class names to prompt with "
                         "(audits take them from the dataset's labels).")
    try:
        clip = AutoModel.from_pretrained(name, local_files_only=True).eval()
        proc = AutoProcessor.from_pretrained(name, local_files_only=True)
    except OSError as e:
        raise DependencyError(
            f"clip:{name} is not on this machine (neither a folder nor in the Hugging Face cache); download it "
            f"once with AutoModel.from_pretrained({name!r}) ({str(e).splitlines()[0][:120]})."
        ) from e
    if not hasattr(clip, "get_image_features") or not hasattr(clip, "get_text_features"):
        raise InputError(f"clip:{name} is a {type(clip).__name__}, not a CLIP-style image-text model.")
    prompts = [template.format(c) for c in class_names]
    with torch.no_grad():
        tokens = proc.tokenizer(prompts, padding=True, return_tensors="pt")
        out = clip.get_text_features(**tokens)
        text = out if torch.is_tensor(out) else out.pooler_output
        text = text / text.norm(dim=-1, keepdim=True)
        scale = clip.logit_scale.exp().detach().clone()
    net = ZeroShot(clip, text, scale)
    pre, info = _hf_preprocess(proc.image_processor, name, None)
    info.update(library="transformers (zero-shot)", template=template)
    return net, pre, list(class_names), info, False


def load_external(spec, weights=None, *, num_classes=None, device="cpu", class_names=None,
                  template=DEFAULT_TEMPLATE):
    """Load an image classifier of timm, torchvision or transformers by name.

    Parameters
    ----------
    spec : str
        ``"timm:NAME"`` (any ``timm.list_models()`` name, optionally ``NAME.TAG``),
        ``"torchvision:NAME"`` or ``"torchvision:NAME@WEIGHTS"`` (e.g.
        ``"torchvision:resnet50@IMAGENET1K_V1"``; the default is the library's DEFAULT
        weights; the tag also picks the matching preprocessing), or ``"hf:REPO_OR_DIR"`` (a
        local folder saved with ``save_pretrained`` or a Hub id already in the cache), or
        ``"clip:REPO_OR_DIR"`` (a CLIP-style model of transformers, zero-shot over
        ``class_names``).
    weights : str or Path, optional
        A local weights file (state dict, ``.pt``/``.pth``/``.bin``/``.safetensors``) to load
        instead of the library's cached weights.
    num_classes : int, optional
        Number of outputs when the weights file is a fine-tuned head (timm, torchvision).
    device : str or torch.device
    class_names : list of str, optional
        For ``clip:``: the classes to prompt with, in logit order.
    template : str, default "a photo of a {}."
        For ``clip:``: the prompt of each class.

    Returns
    -------
    ExternalModel
        In eval mode; takes [0, 1] images of any size and returns logits.

    Raises
    ------
    InputError
        Unknown prefix (the message lists the accepted ones), unknown model, bad weights file.
    DependencyError
        The library is not installed, or the weights are not on this machine.
    """
    prefix, name, tag = parse_spec(spec)
    if prefix == "timm":
        net, pre, names, info, hf = _timm(name, tag, weights, num_classes)
    elif prefix == "torchvision":
        net, pre, names, info, hf = _torchvision(name, tag, weights, num_classes)
    elif prefix == "hf":
        net, pre, names, info, hf = _hf(name, weights)
    else:
        net, pre, names, info, hf = _clip(name, class_names, template)
    if weights is not None:
        info["weights"] = str(weights)
    model = ExternalModel(net, pre, spec=spec, class_names=names, info=info, hf=hf)
    model.eval()
    return model.to(device)
