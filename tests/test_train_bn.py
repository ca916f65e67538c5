"""BatchNorm statistics re-estimated after training (precise BN)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from geoaudit._errors import InputError
from geoaudit.cli import main
from geoaudit.train import (
    WeightedDataset,
    recalibrate_batchnorm,
    sample_model,
    train_population,
)

sys.path.insert(0, str(Path(__file__).parent))
from _train_data import make_dataset_dir, make_images  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


@pytest.fixture()
def weighted(tmp_path):
    ims, labs = make_images(n_per_class=6, n_classes=3, size=12)
    x, y = torch.from_numpy(ims).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labs)
    d = WeightedDataset.create(tmp_path / "D", x, y, capacity=2 * len(y), meta={})
    d.append(x.flip(-1), labs, np.arange(1, len(y) + 1, dtype=float), np.arange(len(y)), 1)
    return d


def test_statistics_are_the_average_over_the_drawn_batches(weighted):
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(3))
    model(torch.rand(2, 3, 12, 12))
    model.eval()
    weight = model[0].weight.detach().clone()
    n = recalibrate_batchnorm(model, weighted, samples=20, batch_size=8, seed=4)
    assert n == 16  # whole batches only
    draws = weighted.draw(16, np.random.default_rng([4, 5]))
    means, variances = [], []
    for lo in (0, 8):
        x, _, _ = weighted.batch(draws[lo:lo + 8], "cpu")
        means.append(x.mean((0, 2, 3)))
        variances.append(x.var((0, 2, 3), unbiased=True))
    bn = model[0]
    assert torch.allclose(bn.running_mean, torch.stack(means).mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, torch.stack(variances).mean(0), atol=1e-6)
    assert bn.momentum == 0.1 and not model.training and torch.equal(bn.weight, weight)


def test_no_batchnorm_or_zero_samples_changes_nothing(weighted):
    model = nn.Sequential(nn.BatchNorm2d(3))
    model[0].running_mean.fill_(0.3)
    assert recalibrate_batchnorm(model, weighted, samples=0) == 0
    assert torch.all(model[0].running_mean == 0.3)
    assert recalibrate_batchnorm(nn.Sequential(nn.Flatten(), nn.Linear(432, 3)), weighted, samples=64) == 0


def test_sample_model_reestimates_only_the_statistics(weighted):
    kw = dict(arch="small_cnn", class_names=["a", "b", "c"], epochs=2, batch_size=8, seed=1)
    stale, i0 = sample_model(weighted, bn_samples=0, **kw)
    fresh, i1 = sample_model(weighted, **kw)
    assert i0["bn_samples"] == 0 and i1["bn_samples"] == 32  # min(2048, one epoch of 36 draws), whole batches
    s0, s1 = stale.state_dict(), fresh.state_dict()
    moved = [k for k in s0 if not torch.equal(s0[k], s1[k])]
    assert moved and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in moved)
    assert any(k.endswith("running_mean") for k in moved)
    with pytest.raises(InputError, match="bn_samples"):
        sample_model(weighted, bn_samples=-1, **kw)


def test_population_records_and_keys_bn_samples(tmp_path):
    data = make_dataset_dir(tmp_path / "geo", n_per_class=6, n_classes=3, size=16)
    out = tmp_path / "pop"
    train_population(data, augment="plain", n_models=1, epochs=1, out_dir=out, batch_size=8, bn_samples=16)
    cfg = json.loads((out / "model_000" / "config.json").read_text())
    assert cfg["training"]["bn_samples"] == 16
    with pytest.raises(InputError, match="bn_samples"):
        train_population(data, augment="plain", n_models=1, epochs=1, out_dir=out, batch_size=8)
    with pytest.raises(InputError, match="bn_samples"):
        train_population(data, augment="plain", n_models=1, epochs=1, out_dir=tmp_path / "p2", bn_samples=-2)


def test_cli_bn_samples(tmp_path, capsys):
    data = make_dataset_dir(tmp_path / "geo", n_per_class=6, n_classes=3, size=16)
    rc = main(["train", "--data", str(data), "--augment", "plain", "--models", "1", "--epochs", "1",
               "--batch-size", "8", "--bn-samples", "0", "--out", str(tmp_path / "pop")])
    assert rc in (0, None)
    cfg = json.loads((tmp_path / "pop" / "model_000" / "config.json").read_text())
    assert cfg["training"]["bn_samples"] == 0
