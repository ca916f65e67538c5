"""Models, checkpoints, DRO training (Algorithms 2 and 3) and model populations.

* :func:`train_population` trains K models (plain, PGD-DRO or perceptual-DRO) into a folder of
  checkpoints plus ``manifest.json``; resumable, local or on Ray.
* :func:`build_adversarial_dataset` is Algorithm 2 (with the appendix-D cluster-center reuse);
  :func:`sample_model` is Algorithm 3 (:func:`train_stacked` and :func:`train_concurrent` for a
  group of members at once); :class:`WeightedDataset` is D on disk.
* :func:`cluster_by_label` is the per-label k-means (scikit-learn or torch).
* :func:`build_model`, :func:`load_model`, :func:`save_checkpoint` are re-exported from
  :mod:`geoaudit.models`.
"""
from geoaudit.train._classifier import fit_classifier
from geoaudit.train._data import TrainingData, from_tensors, load_training_data
from geoaudit.train._dro import DROResult, build_adversarial_dataset
from geoaudit.train._kmeans import Clustering, cluster_by_label
# The model zoo and checkpoints live in geoaudit.models; re-exported here for existing code.
from geoaudit.models import (  # noqa: F401
    load_model,
    make_config,
    read_config,
    save_checkpoint,
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
from geoaudit.train._population import (
    DEFAULT_ATTACK_PARAMS,
    METHODS,
    PopulationResult,
    make_attack,
    train_population,
)
from geoaudit.train._sample import BN_SAMPLES, performance_settings, recalibrate_batchnorm, sample_model
from geoaudit.train._stacked import StackedModel, train_concurrent, train_stacked
from geoaudit.train._store import WeightedDataset

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_ATTACK_PARAMS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "METHODS",
    "MLP7",
    "Clustering",
    "DROResult",
    "LeNet5",
    "Normalize",
    "NormalizedModel",
    "PopulationResult",
    "SmallCNN",
    "StackedModel",
    "TrainingData",
    "WeightedDataset",
    "build_adversarial_dataset",
    "build_model",
    "cluster_by_label",
    "fit_classifier",
    "from_tensors",
    "load_model",
    "load_training_data",
    "make_attack",
    "make_config",
    "read_config",
    "sample_model",
    "recalibrate_batchnorm",
    "BN_SAMPLES",
    "performance_settings",
    "save_checkpoint",
    "train_concurrent",
    "train_population",
    "train_stacked",
]
