"""Predictions from torch modules, callables, image tensors and datasets splits."""
import numpy as np
import pytest
import torch
from torch import nn

from geoaudit import InputError
from geoaudit.audit import audit_model, predict, predict_many


class _MeanColour(nn.Module):
    """Class = the brightest channel: predictable without training."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_module_callable_and_label_outputs_agree(device):
    x = torch.rand(37, 3, 8, 8)
    expect = x.mean(dim=(2, 3)).argmax(1).numpy()
    model = _MeanColour().train()
    p = predict(model, x, batch_size=10, device=device)
    assert p.dtype == np.int64 and p.tolist() == expect.tolist()
    assert model.training  # mode restored
    labels_np = predict(lambda b: b.mean(dim=(2, 3)).argmax(1).cpu().numpy(), x, batch_size=8, device=device)
    logits_np = predict(lambda b: b.mean(dim=(2, 3)).cpu().numpy(), x.numpy(), batch_size=64)
    assert labels_np.tolist() == logits_np.tolist() == expect.tolist()
    both = predict_many({"a": model, "b": lambda b: b.mean(dim=(2, 3))}, x, device=device)
    assert both["a"].tolist() == both["b"].tolist() == expect.tolist()


def test_predict_rejects_bad_outputs_and_inputs():
    x = torch.rand(4, 3, 8, 8)
    with pytest.raises(InputError, match="must return logits of shape"):
        predict(lambda b: torch.zeros(len(b), 2, 2), x)
    with pytest.raises(InputError, match="must return logits of shape"):
        predict(lambda b: torch.zeros(3), x)
    with pytest.raises(InputError, match="an 'image' column"):
        predict(_MeanColour(), {"a": 1})
    with pytest.raises(InputError, match="batch_size"):
        predict(_MeanColour(), x, batch_size=0)


def test_audit_model_on_a_datasets_split():
    import datasets

    rng = np.random.default_rng(0)
    countries = [("USA", 80000.0), ("BRA", 9000.0), ("IND", 2400.0), ("FRA", 45000.0)]
    rows = {"image": [], "label": [], "country_iso3": [], "gdp_per_capita_usd": []}
    for k, (c, g) in enumerate(countries):
        for i in range(20):
            img = rng.integers(0, 80, (6, 6, 3), dtype=np.uint8)
            lab = int(rng.integers(0, 3))
            if rng.random() < 0.3 + 0.2 * k:  # richer countries: the label's channel is brightest
                img[..., lab] = 250
            rows["image"].append(img)
            rows["label"].append(lab)
            rows["country_iso3"].append(c)
            rows["gdp_per_capita_usd"].append(g)
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3),
                               "country_iso3": datasets.Value("string"),
                               "gdp_per_capita_usd": datasets.Value("float64")})
    ds = datasets.Dataset.from_dict(rows, features=feats)
    report, frame = audit_model({"mean": _MeanColour(), "fn": lambda b: b.mean(dim=(2, 3))}, ds,
                                min_group_size=10, batch_size=16)
    assert len(frame) == 160 and list(report.fits) == ["mean", "fn"]
    assert report.fits["mean"].beta == pytest.approx(report.fits["fn"].beta)
    acc = report.model_groups["mean"].set_index("group")["accuracy"]
    f = frame[frame["model"] == "mean"]
    direct = (f["label"] == f["prediction"]).groupby(f["country_iso3"]).mean()
    assert acc.to_dict() == pytest.approx(direct.to_dict())
    assert acc["FRA"] > acc["USA"]  # 90% vs 30% planted bright-channel images
