"""Population members trained together (train_population(stack=...)) against one at a time."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from geoaudit._errors import InputError
from geoaudit.cli import main
from geoaudit.models import build_model, load_model
from geoaudit.train import WeightedDataset, sample_model, train_population
from geoaudit.train._sample import make_model
from geoaudit.train._stacked import (
    AUTO_GROUP,
    StackedModel,
    check_stack,
    group_size,
    train_concurrent,
    train_stacked,
)

sys.path.insert(0, str(Path(__file__).parent))
from _train_data import make_dataset_dir, make_images  # noqa: E402

# grouped kernels sum in another order than one member's: equal to float tolerance, not bitwise
# (measured: small_cnn 1e-6, lenet5 3e-8, mlp7 0 after 3 epochs of 5 steps)
TOL = 1e-4
NORM = {"mean": [0.4, 0.45, 0.5], "std": [0.2, 0.25, 0.3]}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset_dir(tmp_path_factory.mktemp("data") / "geo", n_per_class=6, n_classes=3, size=16)


@pytest.fixture()
def weighted(tmp_path):
    """A D with clean rows of weight 1 and appended rows of weights 1..N (Algorithm 2's shape)."""
    ims, labs = make_images(n_per_class=4, n_classes=3, size=12)
    x, y = torch.from_numpy(ims).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labs)
    d = WeightedDataset.create(tmp_path / "D", x, y, capacity=2 * len(y), meta={})
    d.append(x.flip(-1), labs, np.arange(1, len(y) + 1, dtype=float), np.arange(len(y)), 1)
    return d, x.float() / 255


def _max_diff(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


@pytest.mark.parametrize("arch,perf", [("small_cnn", {}), ("lenet5", {}), ("mlp7", {}),
                                       ("small_cnn", {"channels_last": True})])
def test_stacked_members_equal_one_at_a_time(weighted, arch, perf):
    d, x = weighted
    # batch 5 over 24 draws: a short last batch; weighted loss and weighted draws
    kw = dict(arch=arch, class_names=["a", "b", "c"], epochs=2, batch_size=5, normalization=NORM)
    alone = [sample_model(d, seed=s, **kw) for s in (0, 3, 7)]
    together = train_stacked(d, seeds=[0, 3, 7], **kw, **perf)
    for (ma, ia), (mb, ib) in zip(alone, together):
        assert _max_diff(ma, mb) < TOL
        assert not mb.training and ib["stacked"] == 3 and ib["resumed_from_epoch"] == 0
        with torch.no_grad():
            la, lb = ma(x), mb(x)
        assert float((la - lb).abs().max()) < TOL
        assert torch.equal(la.argmax(1), lb.argmax(1))
        assert [h["train_accuracy"] for h in ia["history"]] == [h["train_accuracy"] for h in ib["history"]]
        assert np.allclose([h["loss"] for h in ia["history"]], [h["loss"] for h in ib["history"]], atol=1e-5)
    # the members stay distinct: each its own seed's weights and draws
    assert _max_diff(together[0][0], together[1][0]) > 1e-3


def test_stacked_members_equal_in_float64(weighted, monkeypatch):
    """In float64 the rounding of reordered sums vanishes: what is left would be an algorithmic
    difference (another draw, loss weight or step); float32 gaps grow with steps and noise."""
    d, _ = weighted
    batch = WeightedDataset.batch

    def batch64(self, idx, dev):
        x, y, w = batch(self, idx, dev)
        return x.double(), y, w

    monkeypatch.setattr(WeightedDataset, "batch", batch64)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        kw = dict(arch="small_cnn", class_names=["a", "b", "c"], epochs=3, batch_size=4, normalization=NORM)
        alone = [sample_model(d, seed=s, **kw)[0] for s in (0, 1, 2)]
        together = [m for m, _ in train_stacked(d, seeds=[0, 1, 2], **kw)]
    finally:
        torch.set_default_dtype(old)
    assert together[0].state_dict()["1.classifier.weight"].dtype == torch.float64
    assert max(_max_diff(a, b) for a, b in zip(alone, together)) < 1e-10


def test_stacked_model_layout_and_refusals():
    ms = [make_model("small_cnn", seed=s, num_classes=3, in_channels=3, image_size=16, normalization=NORM)[0]
          for s in (1, 2)]
    st = StackedModel(ms)
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        out = st.train(False)(st.arrange(torch.cat([x, x])))
        for k, m in enumerate(ms):
            assert torch.allclose(out[k], m.eval()(x), atol=1e-5)
    for k, m in enumerate(ms):  # unstacked names and values are the members' own
        assert all(torch.equal(v, m.state_dict()[n]) for n, v in st.member_states()[k].items())
        assert st.member_states()[k].keys() == m.state_dict().keys()
    with pytest.raises(InputError, match="one architecture"):
        StackedModel([ms[0], make_model("lenet5", seed=0, num_classes=3, in_channels=3, image_size=16,
                                        normalization=NORM)[0]])
    with pytest.raises(InputError, match="small_cnn, lenet5 or mlp7"):
        StackedModel([build_model("resnet18", num_classes=3)[0]])


def test_stack_option_checked_and_resolved():
    for ok in (False, 1, 4, "auto", np.int64(3)):
        assert check_stack(ok, caller="t") == ok
    for bad in (True, 0, -2, 2.5, "yes", None):
        with pytest.raises(InputError, match="'stack' parameter of t must be False, a group size"):
            check_stack(bad, caller="t")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert group_size("auto", arch="small_cnn", device=cpu) == 1  # measured not to pay on a CPU
    assert group_size("auto", arch="small_cnn", device=cuda) == AUTO_GROUP == 10
    assert group_size(4, arch="resnet18", device=cuda) == 4  # on 4 CUDA streams
    assert group_size(4, arch="resnet18", device=cpu) == 1  # not stackable: one at a time
    assert group_size("auto", arch="resnet50", device=cuda) == 1  # streams: not measured
    assert group_size(4, arch="mlp7", device=cpu) == 4
    assert group_size(False, arch="small_cnn", device=cuda) == 1


def test_population_stacked_matches_sequential(tmp_path, data_dir):
    kw = dict(augment="plain", n_models=3, epochs=2, batch_size=8)
    seq = train_population(data_dir, out_dir=tmp_path / "seq", **kw)
    stk = train_population(data_dir, out_dir=tmp_path / "stk", stack=2, **kw)
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == sorted(p.name for p in (tmp_path / "stk").iterdir())
    assert stk.manifest["stack"] == {"requested": 2, "group_size": 2, "mode": "grouped"}
    assert seq.manifest["settings_hash"] == stk.manifest["settings_hash"]  # same population identity
    x = torch.from_numpy(make_images(n_per_class=6, n_classes=3, size=16, seed=1)[0]).permute(0, 3, 1, 2) / 255
    for a, b, k in zip(seq.checkpoints, stk.checkpoints, (2, 2, 1)):
        (ma, ca), (mb, cb) = load_model(a), load_model(b)
        assert set(ca) == set(cb) and set(ca["training"]) == set(cb["training"])
        assert ca["training"]["stacked"] == 1 and cb["training"]["stacked"] == k
        assert cb["training"]["stack_mode"] == ("grouped" if k > 1 else "alone")
        assert _max_diff(ma, mb) < TOL
        if k == 1:  # the last member of an odd population trains alone: bitwise the same
            assert _max_diff(ma, mb) == 0
        with torch.no_grad():
            assert torch.equal(ma(x).argmax(1), mb(x).argmax(1))
        assert ca["training"]["train_accuracy"] == cb["training"]["train_accuracy"]
    # "auto" on a CPU trains one at a time
    auto = train_population(data_dir, out_dir=tmp_path / "auto", stack="auto", **dict(kw, n_models=1))
    assert auto.manifest["stack"]["group_size"] == 1
    assert load_model(auto.checkpoints[0])[1]["training"]["stacked"] == 1


class _Stop(Exception):
    pass


def _stop_at(name_, epoch_):
    def cb(name, epoch, stats):
        if name == name_ and epoch == epoch_:
            raise _Stop
    return cb


def test_interrupted_group_restarts_finished_kept(tmp_path, data_dir):
    out = tmp_path / "pop"
    kw = dict(augment="plain", n_models=4, epochs=2, batch_size=8, stack=2)
    with pytest.raises(_Stop):
        train_population(data_dir, out_dir=out, on_epoch_end=_stop_at("model_003", 1), **kw)
    m = json.loads((out / "manifest.json").read_text())
    assert [e["status"] for e in m["models"]] == ["done", "done", "pending", "pending"]
    assert not (out / "model_002").exists() and not any((out / ".state").glob("*.pt"))
    w0 = (out / "model_000" / "weights.pt").stat().st_mtime_ns
    seen = []
    res = train_population(data_dir, out_dir=out, on_epoch_end=lambda n, e, s: seen.append((n, e)), **kw)
    assert res.manifest["timing"]["models_trained_this_run"] == 2
    assert seen == [("model_002", 1), ("model_003", 1), ("model_002", 2), ("model_003", 2)]  # the group anew
    assert (out / "model_000" / "weights.pt").stat().st_mtime_ns == w0
    ref = train_population(data_dir, out_dir=tmp_path / "ref", **dict(kw, n_models=1, seeds=[3], stack=False))
    assert _max_diff(load_model(out / "model_003")[0], load_model(ref.checkpoints[0])[0]) < TOL


def test_partial_member_resumes_alone(tmp_path, data_dir):
    out = tmp_path / "pop"
    kw = dict(augment="plain", n_models=4, epochs=2, batch_size=8)
    with pytest.raises(_Stop):  # one at a time: model_001 leaves a resume state after epoch 1
        train_population(data_dir, out_dir=out, on_epoch_end=_stop_at("model_001", 1), **kw)
    assert (out / ".state" / "model_001.pt").exists()
    res = train_population(data_dir, out_dir=out, stack=2, **kw)
    cfgs = [load_model(p)[1]["training"] for p in res.checkpoints]
    assert [c["stacked"] for c in cfgs] == [1, 1, 2, 2]
    assert cfgs[1]["timing"]["resumed_from_epoch"] == 1 and not (out / ".state").exists()
    ref = train_population(data_dir, out_dir=tmp_path / "ref", **dict(kw, n_models=1, seeds=[1]))
    assert _max_diff(load_model(out / "model_001")[0], load_model(ref.checkpoints[0])[0]) == 0


def test_stack_refused_with_ray_and_bad_values(tmp_path, data_dir):
    with pytest.raises(InputError, match="applies to backend='local'"):
        train_population(data_dir, out_dir=tmp_path / "a", n_models=2, epochs=1, backend="ray", stack=2)
    with pytest.raises(InputError, match="'stack' parameter of train_population"):
        train_population(data_dir, out_dir=tmp_path / "a", n_models=2, epochs=1, stack="yes")
    assert not (tmp_path / "a").exists()


def test_cli_stack_flag(tmp_path, data_dir, capsys):
    out = tmp_path / "p"
    argv = ["train", "--data", str(data_dir), "--models", "2", "--epochs", "1", "--batch-size", "8",
            "--device", "cpu", "--out", str(out)]
    assert main(argv + ["--stack", "2"]) == 0
    assert "groups of up to 2" in capsys.readouterr().out
    assert [load_model(out / f"model_00{i}")[1]["training"]["stacked"] for i in (0, 1)] == [2, 2]
    assert main(argv[:-1] + [str(tmp_path / "q"), "--stack", "many"]) == 2
    assert "--stack must be off, auto or a group size" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
    assert main(argv[:-1] + [str(tmp_path / "q"), "--stack", "2", "--backend", "ray"]) == 2
    assert "--stack 2 applies to --backend local" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("arch", ["small_cnn", "lenet5"])
def test_concurrent_members_bitwise_on_one_stream(weighted, tmp_path, arch):
    """The streams path on a CPU (one stream): the interleaved members are bitwise the same as one
    at a time, and its resume states are sample_model's."""
    d, _ = weighted
    kw = dict(arch=arch, class_names=["a", "b", "c"], batch_size=5, normalization=NORM)
    alone = [sample_model(d, seed=s, epochs=2, **kw)[0] for s in (0, 4)]
    paths = [tmp_path / "s0.pt", tmp_path / "s4.pt"]
    together = train_concurrent(d, seeds=[0, 4], epochs=2, state_paths=paths, **kw)
    for a, (b, info) in zip(alone, together):
        assert _max_diff(a, b) == 0 and info["stacked"] == 2 and info["stack_mode"] == "streams"
    # stopped after epoch 1, a member resumes alone from its state file, bitwise
    train_concurrent(d, seeds=[0, 4], epochs=1, state_paths=paths, **kw)
    resumed, info = sample_model(d, seed=4, epochs=2, state_path=paths[1], **kw)
    assert info["resumed_from_epoch"] == 1 and _max_diff(resumed, alone[1]) == 0


def test_population_on_streams_routing(tmp_path, data_dir, monkeypatch):
    """A non-stackable architecture with stack=K goes to the streams path (CUDA only; forced here)."""
    import geoaudit.train._population as pop
    import geoaudit.train._stacked as stk

    kw = dict(augment="plain", n_models=2, epochs=1, batch_size=8, arch="lenet5")
    ref = train_population(data_dir, out_dir=tmp_path / "seq", **kw)
    monkeypatch.setattr(stk, "STACKABLE", ())
    monkeypatch.setattr(pop, "group_size", lambda stack, arch, device: 2)
    res = train_population(data_dir, out_dir=tmp_path / "streams", stack=2, **kw)
    assert res.manifest["stack"] == {"requested": 2, "group_size": 2, "mode": "streams"}
    for a, b in zip(ref.checkpoints, res.checkpoints):
        (ma, _), (mb, cb) = load_model(a), load_model(b)
        assert _max_diff(ma, mb) == 0 and cb["training"]["stack_mode"] == "streams"
    assert not (tmp_path / "streams" / ".state").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_stacked_on_cuda_matches_one_at_a_time(weighted):
    d, _ = weighted
    kw = dict(arch="small_cnn", class_names=["a", "b", "c"], epochs=2, batch_size=5, normalization=NORM,
              device="cuda")
    alone = [sample_model(d, seed=s, **kw)[0] for s in (0, 1)]
    together = [m for m, _ in train_stacked(d, seeds=[0, 1], **kw)]
    for a, b in zip(alone, together):
        assert _max_diff(a, b) < 1e-3  # cuDNN picks its own algorithms per shape
    on_streams = [m for m, _ in train_concurrent(d, seeds=[0, 1], **kw)]
    for a, b in zip(alone, on_streams):
        assert _max_diff(a, b) < 1e-3
