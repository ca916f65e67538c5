"""Argument helpers shared by subcommands."""
from __future__ import annotations

import argparse


def add_device_arg(p: argparse.ArgumentParser):
    p.add_argument("--device", default="auto", help="torch device: auto (cuda when present), cpu, cuda, cuda:1 ...")
