"""Input-transformation defenses used in section 3.3 of the paper: JPEG compression and
bit-depth reduction.  Each is a batch callable ``defense(images) -> images`` on float
(N, C, H, W) tensors in [0, 1], returning the same shape, device and dtype (detached: pass
them through ``geoaudit.attacks.Defended`` / ``BPDA`` to attack them adaptively)."""
from __future__ import annotations

import io

import numpy as np
import torch

from geoaudit._errors import InputError
from geoaudit._validation import check_images, check_interval


class JPEG:
    """Real JPEG compression: each image is encoded and decoded with Pillow.

    Pixels are rounded to 8 bits, encoded at ``quality`` (4:2:0 chroma subsampling, Pillow's
    default) and decoded.  Grey (C=1) and RGB (C=3) images are accepted.

    Parameters
    ----------
    quality : int
        JPEG quality in [1, 100] (Guo et al. 2018 and the paper's defense use 75).
    quality_range : (int, int) or None
        When given, a randomised defense: each image of each call is compressed at a quality
        drawn uniformly from ``[low, high]`` (``quality`` is then unused).  Attack it
        adaptively with EOT (``geoaudit.attacks.Defended`` averages over draws).
    random_state : int, numpy.random.Generator or None
        Seed of the quality draws (randomised defense only).

    Examples
    --------
    >>> defended = JPEG(quality=75)(images)                     # doctest: +SKIP
    >>> JPEG(quality_range=(50, 90), random_state=0).randomised
    True
    """

    name = "jpeg"

    def __init__(self, quality=75, *, quality_range=None, random_state=None):
        self.quality = check_interval("quality", quality, 1, 100, caller="JPEG", integer=True)
        if quality_range is not None:
            if not (isinstance(quality_range, (tuple, list)) and len(quality_range) == 2):
                raise InputError(f"The 'quality_range' parameter of JPEG must be a pair (low, high). "
                                 f"Got {quality_range!r} instead.")
            lo = check_interval("quality_range[0]", quality_range[0], 1, 100, caller="JPEG", integer=True)
            hi = check_interval("quality_range[1]", quality_range[1], lo, 100, caller="JPEG", integer=True)
            quality_range = (lo, hi)
        self.quality_range = quality_range
        self.random_state = random_state
        self._rng = np.random.default_rng(random_state)

    @property
    def randomised(self):
        """True when each call draws the qualities at random."""
        return self.quality_range is not None

    def __repr__(self):
        if self.randomised:
            return f"JPEG(quality_range={self.quality_range})"
        return f"JPEG(quality={self.quality})"

    def to_dict(self):
        """The defense and its setting.

        Returns
        -------
        dict
            ``{"defense": "jpeg", "quality": ...}``.
        """
        if self.randomised:
            return {"defense": self.name, "quality_range": list(self.quality_range)}
        return {"defense": self.name, "quality": self.quality}

    def __call__(self, images):
        from PIL import Image

        check_images(images, caller="JPEG")
        if images.shape[1] not in (1, 3):
            raise InputError(f"JPEG needs grey (1) or RGB (3) channel images, got {images.shape[1]} channels.")
        arr = (images.detach().to("cpu", torch.float32).clamp(0, 1) * 255.0).round().to(torch.uint8)
        arr = arr.permute(0, 2, 3, 1).numpy()
        out = np.empty_like(arr)
        if self.randomised:
            qualities = self._rng.integers(self.quality_range[0], self.quality_range[1] + 1, size=len(arr))
        else:
            qualities = [self.quality] * len(arr)
        for i, a in enumerate(arr):
            img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a, mode="L" if a.shape[-1] == 1 else "RGB")
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=int(qualities[i]))
            buf.seek(0)
            dec = np.asarray(Image.open(buf).convert(img.mode))
            out[i] = dec[..., None] if dec.ndim == 2 else dec
        res = torch.from_numpy(out).permute(0, 3, 1, 2).to(dtype=images.dtype) / 255.0
        return res.to(images.device)


class BitDepth:
    """Bit-depth reduction (Xu et al., 2018): ``round(x * (2^bits - 1)) / (2^bits - 1)``.

    Deterministic and piecewise constant (zero gradient almost everywhere): evaluate it
    adaptively with BPDA (``geoaudit.attacks.Defended``).

    Parameters
    ----------
    bits : int
        Bits per channel kept, in [1, 8].
    """

    name = "bit-depth"

    def __init__(self, bits=4):
        self.bits = check_interval("bits", bits, 1, 8, caller="BitDepth", integer=True)

    def __repr__(self):
        return f"BitDepth(bits={self.bits})"

    def to_dict(self):
        """The defense and its setting.

        Returns
        -------
        dict
            ``{"defense": "bit-depth", "bits": ...}``.
        """
        return {"defense": self.name, "bits": self.bits}

    def __call__(self, images):
        check_images(images, caller="BitDepth")
        levels = 2**self.bits - 1
        return (images.detach() * levels).round() / levels
