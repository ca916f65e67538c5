"""Models, checkpoints, DRO training (Algorithms 2 and 3) and model populations."""
from geoaudit.train._checkpoint import load_model, make_config, read_config, save_checkpoint
from geoaudit.train._models import (
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
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MLP7",
    "LeNet5",
    "Normalize",
    "NormalizedModel",
    "SmallCNN",
    "build_model",
    "load_model",
    "make_config",
    "read_config",
    "save_checkpoint",
]
