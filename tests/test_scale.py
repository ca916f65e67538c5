"""Scale: streamed statistics and fingerprints, host-sync-free hot loops, performance switches."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from geoaudit._errors import InputError
from geoaudit.audit import predict_many
from geoaudit.cli import main
from geoaudit.data import iter_image_batches
from geoaudit.train import (
    WeightedDataset,
    from_tensors,
    performance_settings,
    sample_model,
)
from geoaudit.train._data import channel_stats, fingerprint
from geoaudit.train._sample import weighted_step

sys.path.insert(0, str(Path(__file__).parent))
from _train_data import make_dataset_dir, make_images

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


@pytest.fixture
def tiny():
    ims, labs = make_images(n_per_class=8, n_classes=3, size=16, seed=0)
    return from_tensors(torch.from_numpy(ims).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labs),
                        class_names=["a", "b", "c"])


def _old_stats(images):
    x = images.double().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


@pytest.mark.parametrize("chunk", [1, 5, 128, 10_000])
def test_channel_stats_streamed_equal_the_float64_copy(chunk):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (37, 3, 9, 9), dtype=torch.uint8, generator=g)
    assert channel_stats(images, chunk_size=chunk) == _old_stats(images)
    flat = torch.full((4, 1, 8, 8), 7, dtype=torch.uint8)  # no spread: std clamped to 1e-3
    assert channel_stats(flat, chunk_size=3) == ([round(7 / 255, 6)], [0.001])


def test_fingerprint_streamed_equals_hashing_all_bytes(tiny):
    h = hashlib.sha256()
    h.update(repr(tuple(tiny.images.shape)).encode())
    h.update(tiny.images.numpy().tobytes())
    h.update(tiny.labels.numpy().astype(np.int64).tobytes())
    h.update("\n".join(tiny.class_names).encode("utf-8"))
    assert tiny.fingerprint == h.hexdigest()
    for chunk in (1, 7, 1000):
        assert fingerprint(tiny.images, tiny.labels, tiny.class_names, chunk_size=chunk) == tiny.fingerprint


def test_decoding_workers_give_the_same_batches(tmp_path):
    import datasets

    ds = datasets.load_from_disk(str(make_dataset_dir(tmp_path / "d", n_per_class=5, size=16)))["train"]
    ref = list(iter_image_batches(ds, 4, image_size=12))
    got = list(iter_image_batches(ds, 4, image_size=12, num_workers=1))
    raw = list(iter_image_batches(ds, 4, image_size=12, uint8=True))
    assert [s for *_, s in got] == [s for *_, s in ref] == list(range(0, 15, 4))
    for (a, la, _), (b, lb, _), (u, _, _) in zip(ref, got, raw):
        assert torch.equal(a, b) and torch.equal(la, lb)
        assert u.dtype == torch.uint8 and torch.equal(u.float().div_(255.0), a)
    with pytest.raises(InputError, match="num_workers"):
        next(iter_image_batches(ds, 4, num_workers=-1))


def _dataset(tmp_path, tiny):
    return WeightedDataset.create(tmp_path / "D", tiny.images, tiny.labels, capacity=tiny.n, meta={})


class _SyncCounter:
    """Counts tensor -> Python reads (each one a host sync on a GPU)."""

    def __init__(self, monkeypatch):
        self.n = 0
        for name in ("item", "__float__", "__int__", "__bool__", "tolist"):
            orig = getattr(torch.Tensor, name)

            def wrapped(t, *a, _orig=orig, **k):
                self.n += 1
                return _orig(t, *a, **k)
            monkeypatch.setattr(torch.Tensor, name, wrapped)


def test_training_reads_loss_and_accuracy_once_per_epoch(tmp_path, tiny, monkeypatch):
    d = _dataset(tmp_path, tiny)
    counts = {}
    for bs in (2, 12):  # 12 steps per epoch vs 2
        counter = _SyncCounter(monkeypatch)
        sample_model(d, class_names=tiny.class_names, seed=0, epochs=2, batch_size=bs, lr=0.01)
        counts[bs] = counter.n
        monkeypatch.undo()
    assert counts[2] == counts[12]  # reads do not grow with the number of steps
    assert counts[2] == 2 * 2  # loss and accuracy, once per epoch


def test_training_with_switches_off_matches_the_per_step_loop(tmp_path, tiny):
    d = _dataset(tmp_path, tiny)
    # bn_samples=0: the training loop alone (precise BN afterwards is tested in test_train_bn.py)
    model, info = sample_model(d, class_names=tiny.class_names, seed=3, epochs=2, batch_size=5, lr=0.02,
                               bn_samples=0)
    assert info["performance"] == {"amp": "off", "channels_last": False, "compile": False}
    # the former loop: a Python float and int read after every step
    from geoaudit.train._sample import make_model, make_optimizer

    ref, _, _ = make_model("small_cnn", seed=3, num_classes=3, in_channels=3, image_size=16)
    opt = make_optimizer(ref, lr=0.02, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng([3, 3])
    mean_w = d.mean_sampled_weight()
    for epoch in range(2):
        draws, tot, correct = d.draw(d.size, rng), 0.0, 0
        for lo in range(0, d.size, 5):
            x, y, w = d.batch(draws[lo:lo + 5], "cpu")
            loss, corr = weighted_step(ref, opt, x, y, w, mean_weight=mean_w)
            tot += float(loss) * len(y)
            correct += int(corr)
        assert info["history"][epoch]["loss"] == pytest.approx(tot / d.size, rel=1e-12)
        assert info["history"][epoch]["train_accuracy"] == correct / d.size
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_training_switches_on_cpu(tmp_path, tiny):
    d = _dataset(tmp_path, tiny)
    kw = {"class_names": tiny.class_names, "seed": 1, "epochs": 2, "batch_size": 6, "lr": 0.02}
    base, info0 = sample_model(d, **kw)
    cl, info1 = sample_model(d, channels_last=True, **kw)
    assert info1["performance"]["channels_last"] is True
    for a, b in zip(base.state_dict().values(), cl.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    bf, info2 = sample_model(d, amp="bf16", **kw)  # bf16 autocast runs on the CPU too: loosely equal
    assert info2["performance"]["amp"] == "bf16"
    assert abs(info2["history"][-1]["loss"] - info0["history"][-1]["loss"]) < 0.1
    assert all(p.dtype == torch.float32 for p in bf.parameters())
    with pytest.raises(InputError, match="'amp'"):
        performance_settings(amp="fp8")
    with pytest.raises(InputError, match="'compile'"):
        sample_model(d, compile="yes", **kw)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_prediction_moves_labels_to_the_host_once(monkeypatch):
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    models = {"a": _Net(), "b": _Net()}
    ref = {k: m(x).argmax(1).numpy() for k, m in models.items()}
    calls = {}
    orig = torch.Tensor.cpu
    for bs in (2, 16):
        n = [0]

        def counting(t, *a, _n=n, **k):
            _n[0] += 1
            return orig(t, *a, **k)
        monkeypatch.setattr(torch.Tensor, "cpu", counting)
        out = predict_many(models, x, batch_size=bs)
        monkeypatch.undo()
        calls[bs] = n[0]
        for k in models:
            np.testing.assert_array_equal(out[k], ref[k])
            assert out[k].dtype == np.int64
    assert calls[2] == calls[16] == len(models)  # one transfer per model, not per batch
    np.testing.assert_array_equal(predict_many(models, x, batch_size=3, channels_last=True)["a"], ref["a"])
    bf = predict_many(models, x, batch_size=3, amp="bf16")["a"]
    assert (bf == ref["a"]).mean() >= 0.75  # bf16 may flip near ties
    with pytest.raises(InputError, match="'amp'"):
        predict_many(models, x, amp="fp16")


def test_prediction_callables_returning_labels_still_work():
    x = torch.rand(6, 3, 4, 4)
    out = predict_many({"f": lambda b: b.mean(dim=(1, 2, 3)).gt(0.5).long(), "g": lambda b: np.zeros(len(b))},
                       x, batch_size=4)
    assert out["f"].shape == out["g"].shape == (6,)
    assert out["g"].dtype == np.int64


def test_cli_train_records_switches_and_refuses_bad_amp(tmp_path, capsys):
    data = make_dataset_dir(tmp_path / "d", n_per_class=4, size=16)
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "p"), "--models", "1", "--epochs", "1",
               "--batch-size", "6", "--amp", "bf16", "--channels-last"])
    assert rc == 0
    cfg = json.loads((tmp_path / "p" / "model_000" / "config.json").read_text())
    assert cfg["training"]["performance"] == {"amp": "bf16", "channels_last": True, "compile": False}
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "q"), "--models", "1", "--amp", "fp8"]) == 2
    assert "--amp" in capsys.readouterr().err
    rc = main(["audit", "--models", str(tmp_path / "p"), "--data", str(data), "--split", "test",
               "--min-group-size", "2", "--out", str(tmp_path / "r"), "--num-workers", "-1"])
    assert rc == 2 and "--num-workers" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (torch's sync debug mode)")
def test_training_step_never_syncs_on_cuda(tmp_path, tiny):
    from geoaudit.train._sample import make_model, make_optimizer

    model, _, _ = make_model("small_cnn", seed=0, num_classes=3, in_channels=3, image_size=16)
    model.cuda()
    opt = make_optimizer(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = tiny.images[:8].cuda().float().div_(255.0)
    y, w = tiny.labels[:8].cuda(), torch.ones(8, device="cuda")
    weighted_step(model, opt, x, y, w, mean_weight=1.0)  # warm-up (allocations, cuDNN choice)
    tot = torch.zeros((), dtype=torch.float64, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            loss, _ = weighted_step(model, opt, x, y, w, mean_weight=1.0)
            tot.add_(loss, alpha=8)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(tot).item()
