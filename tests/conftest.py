import os

import pytest

os.environ.setdefault("GEOAUDIT_PROGRESS", "0")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture()
def one_thread():
    """torch on one thread for the test (2 shared cores: more threads oversubscribe), restored after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def devices():
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    return out


@pytest.fixture(params=devices())
def device(request):
    """Each device test runs on the CPU, and on CUDA too where present."""
    return request.param


# Expensive fixtures are built once per test session and shared by every module that asks.

@pytest.fixture(scope="session")
def digits_mlp():
    """The centroid paper's 7-layer MLP trained on scikit-learn's 8x8 digits (offline), with the data."""
    import torch

    from geoaudit.data import load_digits_tensors
    from geoaudit.train import MLP7, fit_classifier

    torch.manual_seed(0)
    d = load_digits_tensors(image_size=8)
    model = MLP7(10, 64)
    fit_classifier(model, *d["train"], epochs=12, lr=3e-3)
    return model, d


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """``geoaudit demo --quick`` run once on the CPU: ``(out_dir, exit_code, seconds, printed)``."""
    import contextlib
    import io
    import time

    from geoaudit.cli import main

    out = tmp_path_factory.mktemp("demo") / "run"
    buf = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = main(["--threads", "1", "demo", "--quick", "--out", str(out), "--device", "cpu"])
    return out, rc, time.perf_counter() - t, buf.getvalue()
