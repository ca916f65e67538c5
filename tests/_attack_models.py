"""Tiny synthetic data and a tiny model trained on it, shared by the attack tests.

Three classes of striped images (horizontal, vertical, diagonal stripes over noise): a small
CNN learns them in well under a second, and the images have structure for SSIM to measure.
"""
import functools

import torch
from torch import nn


def striped_images(n, *, size=16, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    i = torch.arange(size, dtype=torch.float32)
    rows, cols = i.view(-1, 1).expand(size, size), i.view(1, -1).expand(size, size)
    patterns = torch.stack([
        torch.sin(rows * 1.6), torch.sin(cols * 1.6), torch.sin((rows + cols) * 1.1),
    ])
    phase = torch.rand(n, generator=g) * 0.4 + 0.8
    base = patterns[labels] * phase.view(-1, 1, 1)
    imgs = 0.5 + 0.25 * base.unsqueeze(1).expand(n, channels, size, size)
    imgs = imgs + 0.08 * torch.randn(n, channels, size, size, generator=g)
    return imgs.clamp(0, 1), labels


class TinyCNN(nn.Module):
    def __init__(self, channels=3, num_classes=3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(16, num_classes),
        )

    def forward(self, x):
        return self.net(x)


@functools.lru_cache(maxsize=None)
def _trained_state(size, channels):
    torch.manual_seed(0)
    model = TinyCNN(channels)
    x, y = striped_images(120, size=size, channels=channels, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(50):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y, label_smoothing=0.3).backward()
        opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def trained_model(size=16, channels=3, device="cpu"):
    """A fresh TinyCNN (eval mode, no .grad) with the cached trained weights."""
    model = TinyCNN(channels)
    model.load_state_dict(_trained_state(size, channels))
    return model.eval().to(device)
