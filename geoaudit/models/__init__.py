"""Models: the zoo, input normalization inside the model, and the one checkpoint format.

Every model takes float images (N, C, H, W) in [0, 1] and returns logits; normalization lives
inside the model (:class:`NormalizedModel`), so attacks work in pixel space.  A checkpoint is a
folder holding ``config.json`` and ``weights.pt``, written by :func:`save_checkpoint` and read by
:func:`load_model`.  ``attacks``, ``train``, ``audit`` and ``defenses`` import this package;
it imports none of them.
"""
from geoaudit.models._checkpoint import (
    CONFIG,
    WEIGHTS,
    load_model,
    make_config,
    model_from_config,
    read_config,
    save_checkpoint,
)
from geoaudit.models._external import PREFIXES, ExternalModel, Preprocess, load_external, parse_spec
from geoaudit.models._labelmap import LabelMap, label_map, read_label_map
from geoaudit.models._zoo import (
    ARCHITECTURES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MLP7,
    LeNet5,
    Normalize,
    NormalizedModel,
    SmallCNN,
    build_model,
)

__all__ = [
    "ARCHITECTURES",
    "CONFIG",
    "ExternalModel",
    "LabelMap",
    "PREFIXES",
    "Preprocess",
    "label_map",
    "load_external",
    "parse_spec",
    "read_label_map",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MLP7",
    "LeNet5",
    "Normalize",
    "NormalizedModel",
    "SmallCNN",
    "WEIGHTS",
    "build_model",
    "load_model",
    "make_config",
    "model_from_config",
    "read_config",
    "save_checkpoint",
]
