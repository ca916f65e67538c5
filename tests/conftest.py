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
