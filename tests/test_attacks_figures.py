"""Attack and calibration figures (drawn in geoaudit.report, no pyplot state) and frozen results."""
import dataclasses
import warnings

import pytest
import torch

from geoaudit.attacks import calibrate_epsilon
from geoaudit.report import attack_comparison_figure, plot_calibration_heatmaps, save_attack_grid


def test_attack_grid_and_comparison(tmp_path):
    x = torch.rand(5, 3, 12, 12)
    adv = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
    path = save_attack_grid(tmp_path / "g.png", x, adv, labels=torch.arange(5), preds=torch.arange(5), k=4)
    assert path.read_bytes()[:4] == b"\x89PNG"
    fig = attack_comparison_figure(x, {"a": adv, "b": (x - 0.02).clamp(0, 1)}, k=3, captions={"a": "tiny"})
    assert len(fig.axes) == 5 * 3  # clean + (images, difference) per method, 3 columns
    assert "tiny" in fig.axes[3].get_ylabel()


def test_calibration_heatmaps_and_frozen_result(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(12, 1, 12, 12, generator=g), torch.arange(12) % 3
    res = calibrate_epsilon(x, y, norms=["l2", "ssim"], per_class=None)
    paths = plot_calibration_heatmaps(res, tmp_path)
    assert [p.name for p in paths] == ["heatmap_l2.png", "heatmap_ssim.png"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.fraction = 0.1
    with pytest.raises(TypeError):
        res.norms["l1"] = None
    with pytest.raises(ValueError):
        res.norms["l2"].eps[0] = 0.0
    assert isinstance(res.to_dict()["class_names"], list) and "global" in res.summary()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert len(res.plot_heatmaps(tmp_path / "old")) == 2
    assert any(issubclass(i.category, DeprecationWarning) for i in w)
