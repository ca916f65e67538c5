"""Which modules of a model the centroid defense hooks: the layer types it recognises and
the default and paper layer lists."""
from __future__ import annotations

from torch import nn

#: Module types hooked when ``layers=None``: every linear and convolutional layer ...
LAYER_TYPES = (nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: ... and every activation module (not Softmax/LogSoftmax, which only rescale the logits).
ACTIVATION_TYPES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.LogSigmoid, nn.Tanhshrink,
)
#: ``layers`` value hooking the layers the paper counts: every Linear / Conv module (7 in its
#: MLP, 5 in its LeNet-5), not the activations.
PAPER_LAYERS = "paper"


def paper_layer_names(model: nn.Module) -> list[str]:
    """Names of the modules the paper counts as layers: every :data:`LAYER_TYPES` module
    (Linear, Bilinear, Conv1d/2d/3d) in registration order, 7 in :class:`MLP7`, 5 in LeNet-5.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    list of str
    """
    return [name for name, m in model.named_modules() if name and isinstance(m, LAYER_TYPES)]


def default_layer_names(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_modules()``) of the modules hooked by default: every
    :data:`LAYER_TYPES` (Linear, Bilinear, Conv1d/2d/3d) and :data:`ACTIVATION_TYPES` module,
    in registration order."""
    return [name for name, m in model.named_modules()
            if name and isinstance(m, LAYER_TYPES + ACTIVATION_TYPES)]
