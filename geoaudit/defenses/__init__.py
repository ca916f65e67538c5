"""Defenses against adversarial images: input transformations (JPEG, bit depth)."""
from geoaudit.defenses._simple import JPEG, BitDepth

__all__ = ["JPEG", "BitDepth"]
