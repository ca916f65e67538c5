"""The model zoo: a small CNN for GeoShapes, LeNet-5 and the 7-layer MLP of the centroid-defense
paper, torchvision ResNet-18/50, and the Normalize wrapper.

Every model takes float images (N, C, H, W) in [0, 1] and returns logits; any input
normalization lives inside the model (``Normalize``), so attacks work in pixel space.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from geoaudit._errors import InputError
from geoaudit._validation import check_interval, check_options

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as a module, so a model can take [0, 1] images.

    Parameters
    ----------
    mean, std : sequence of float
        One value per channel; ``std`` > 0.
    """

    def __init__(self, mean, std):
        super().__init__()
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != std.shape or mean.dim() != 1:
            raise InputError(f"Normalize needs mean and std of the same length, got {tuple(mean.shape)} and {tuple(std.shape)}.")
        if bool((std <= 0).any()):
            raise InputError(f"Normalize needs std > 0, got {std.tolist()}.")
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))

    def forward(self, x):
        """Normalize a batch.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, C, H, W)`` float images.

        Returns
        -------
        torch.Tensor
            ``(x - mean) / std``, per channel.
        """
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:  # else a grey batch broadcasts to colour
            raise InputError(f"The model takes (N, {self.mean.shape[1]}, H, W) images; got a batch of shape "
                             f"{tuple(x.shape)}. Convert the images to {self.mean.shape[1]} channel(s) first.")
        return (x - self.mean) / self.std


class NormalizedModel(nn.Sequential):
    """Normalization followed by ``model``, so the whole takes [0, 1] images.

    Parameters
    ----------
    model : torch.nn.Module
    mean, std : sequence of float
        Per channel, as :class:`Normalize` takes them.
    """

    def __init__(self, model: nn.Module, mean, std):
        super().__init__(Normalize(mean, std), model)


class SmallCNN(nn.Module):
    """A small CNN for 32-128 px images: 3 conv blocks (32-64-128 channels) and a linear head.

    About 0.1 M parameters: a GeoShapes population member trains in seconds on a CPU.

    Parameters
    ----------
    num_classes : int
    in_channels : int
    width : int
        Channels of the first block (doubled in each of the next two).
    """

    def __init__(self, num_classes=10, in_channels=3, width=32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        """Logits of a batch.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, C, H, W)`` float images in [0, 1].

        Returns
        -------
        torch.Tensor
            ``(N, num_classes)`` logits.
        """
        return self.classifier(torch.flatten(self.features(x), 1))


class LeNet5(nn.Module):
    """LeNet-5 as in the centroid-defense paper: conv 6@5x5, max-pool, conv 16@5x5, max-pool,
    then linear 120, 84, num_classes with ReLU.  Returns logits (the paper's log-softmax
    output differs from them by a per-sample constant, so argmax and attacks are the same).

    Parameters
    ----------
    num_classes : int
    in_channels : int
    image_size : int
        Side of the input images, at least 12.
    """

    def __init__(self, num_classes=10, in_channels=1, image_size=28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        side = ((image_size // 2) - 4) // 2
        if side < 1:
            raise InputError(f"LeNet5 needs images of at least 12 px, got {image_size}.")
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        """Logits of a batch.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, C, H, W)`` float images in [0, 1].

        Returns
        -------
        torch.Tensor
            ``(N, num_classes)`` logits.
        """
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.relu4(self.fc2(self.relu3(self.fc1(x))))
        return self.fc3(x)


class MLP7(nn.Module):
    """The centroid-defense paper's fully connected network: 7 linear layers, input -> 64,
    five 64 -> 64 with ReLU, 64 -> num_classes.  Returns logits.

    Parameters
    ----------
    num_classes : int
    in_features : int
        ``C * H * W`` of the input images (they are flattened).
    hidden : int
        Width of the hidden layers.
    """

    def __init__(self, num_classes=10, in_features=784, hidden=64):
        super().__init__()
        layers = [nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU()]
        for _ in range(5):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        layers.append(nn.Linear(hidden, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        """Logits of a batch.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, C, H, W)`` float images in [0, 1].

        Returns
        -------
        torch.Tensor
            ``(N, num_classes)`` logits.
        """
        return self.net(x)


def _resnet(depth, num_classes, in_channels, pretrained):
    import torchvision

    ctor = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[depth]
    weights_enum = {18: torchvision.models.ResNet18_Weights, 50: torchvision.models.ResNet50_Weights}[depth]
    source = "scratch"
    model = None
    if pretrained:
        try:
            model = ctor(weights=weights_enum.DEFAULT)
            source = f"torchvision:{weights_enum.DEFAULT}"
        except Exception as e:  # offline, or the download failed: train from scratch and say so
            log.warning("Pretrained ResNet-%d weights could not be loaded (%s); training from scratch.", depth, e)
    if model is None:
        model = ctor(weights=None)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    if num_classes != model.fc.out_features:
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model, source


ARCHITECTURES = ("small_cnn", "lenet5", "mlp7", "resnet18", "resnet50")


def build_model(arch, *, num_classes, in_channels=3, image_size=64, pretrained=False):
    """Build an architecture by name.

    Parameters
    ----------
    arch : {"small_cnn", "lenet5", "mlp7", "resnet18", "resnet50"}
    num_classes : int
        At least 2.
    in_channels : {1, 3}
    image_size : int
        Side of the input images, at least 8 (LeNet-5 and the MLP depend on it).
    pretrained : bool
        ResNets only: start from torchvision's ImageNet weights when they can be loaded
        (offline, training starts from scratch with a warning).

    Returns
    -------
    (model, weights_source)
        ``weights_source`` is "scratch" or the pretrained weights' name, for the checkpoint.
    """
    check_options("arch", arch, ARCHITECTURES, caller="build_model")
    check_interval("num_classes", num_classes, 2, None, caller="build_model", integer=True)
    check_options("in_channels", in_channels, (1, 3), caller="build_model")
    check_interval("image_size", image_size, 8, None, caller="build_model", integer=True)
    if arch == "small_cnn":
        return SmallCNN(num_classes, in_channels), "scratch"
    if arch == "lenet5":
        return LeNet5(num_classes, in_channels, image_size), "scratch"
    if arch == "mlp7":
        return MLP7(num_classes, in_channels * image_size * image_size), "scratch"
    return _resnet(18 if arch == "resnet18" else 50, num_classes, in_channels, pretrained)
