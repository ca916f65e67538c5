"""Argument helpers shared by subcommands."""
from __future__ import annotations

import argparse


def add_device_arg(p: argparse.ArgumentParser):
    p.add_argument("--device", default="auto", help="torch device: auto (cuda when present), cpu, cuda, cuda:1 ...")


def resolve_device(name: str):
    import torch

    from geoaudit._errors import InputError

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise InputError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"Device {name!r} was asked for but CUDA is not available on this machine; use --device cpu.")
    return dev
