"""Auditing a model population: decode each image once for all models (predict_many, what
`geoaudit audit --models` does) versus one full pass over the split per model (predict in a loop).

    python benchmarks/bench_audit_predict.py [--images 2000] [--models 8] [--size 32]

Prints both timings and their ratio, measured in the same run on the same data.
"""
import argparse
import time

import numpy as np
import torch


def main(argv=None):
    import datasets

    from geoaudit.audit import predict, predict_many
    from geoaudit.train import build_model

    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--models", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--source-size", type=int, default=224, help="stored image size (resized to --size)")
    p.add_argument("--arch", default="lenet5")
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    ds = datasets.Dataset.from_dict(
        {"image": [rng.integers(0, 255, (a.source_size, a.source_size, 3), dtype=np.uint8) for _ in range(a.images)]},
        features=datasets.Features({"image": datasets.Image()}))
    models = {}
    for i in range(a.models):
        torch.manual_seed(i)
        models[f"m{i}"] = build_model(a.arch, num_classes=10, image_size=a.size)[0].eval()
    predict(models["m0"], ds.select(range(64)), image_size=a.size)  # warm up
    t = time.perf_counter()
    shared = predict_many(models, ds, image_size=a.size, batch_size=256, device="cpu")
    t_shared = time.perf_counter() - t
    t = time.perf_counter()
    loop = {k: predict(m, ds, image_size=a.size, batch_size=256, device="cpu") for k, m in models.items()}
    t_loop = time.perf_counter() - t
    assert all((shared[k] == loop[k]).all() for k in models)
    print(f"{a.models} x {a.arch} on {a.images} images of {a.source_size}px resized to {a.size}px, CPU, torch threads {torch.get_num_threads()}")
    print(f"  predict_many (decode once): {t_shared:7.2f} s")
    print(f"  predict per model:          {t_loop:7.2f} s")
    print(f"  ratio loop / shared:        {t_loop / t_shared:7.2f}x")


if __name__ == "__main__":
    main()
