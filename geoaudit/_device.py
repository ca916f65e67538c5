"""Choosing the torch device, for the library and the CLI alike."""
from __future__ import annotations

from itertools import chain

from geoaudit._errors import InputError


def model_device(model):
    """The device of the model's first parameter or buffer (CPU for a model with neither).

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    torch.device
    """
    import torch

    for t in chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


def resolve_device(device="auto", *, model=None):
    """A ``torch.device`` from "auto" (CUDA when present), "cpu", "cuda", "cuda:N" or a device.

    Parameters
    ----------
    device : str, torch.device or None
        ``None`` means the device of ``model``'s parameters (CPU when it has none).
    model : torch.nn.Module, optional

    Returns
    -------
    torch.device
    """
    import torch

    if device is None:
        return model_device(model) if isinstance(model, torch.nn.Module) else torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise InputError(f"The 'device' parameter must be 'auto', 'cpu', 'cuda' or 'cuda:N'. Got {device!r} instead.") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"Device {device!r} was asked for but CUDA is not available on this machine; use 'cpu'.")
    return dev
