"""The paper's scale on one machine: memory, FLOPs, throughput and the projected pipeline time.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/scale.py --images 62000   # the paper's size (9.3 GB)
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/scale.py --images 4000    # what fits a shared CPU

1. Builds a synthetic training split of ``--images`` uint8 images at 224 px on disk (a numpy
   memmap; random low-frequency images, 7x7 noise blown up 32x) and runs every host stage on
   it: fingerprint, channel statistics (streamed, and the former float64 copy side by side
   while it fits), k-means features (pooled to 16 px in chunks), D read in batches.  Peak host
   RSS is sampled per stage from /proc/self/status (and ru_maxrss for the whole run).
2. Peak GPU memory per stage at batch B for ResNet-50: measured with
   torch.cuda.max_memory_allocated when CUDA exists; otherwise an estimate: weights, gradients
   and SGD momentum from the parameter count, plus the bytes autograd saves for backward,
   measured on the CPU with saved_tensors_hooks at batch 1 (float32 and bf16 autocast) times B.
3. FLOPs per image (torch.utils.flop_counter.FlopCounterMode) of one SGD step, one attack step
   (forward + backward to the input) and one prediction, the achieved throughput of each on
   this machine (batch ``--batch``, ``--steps`` steps), and the projected time of the paper's
   pipeline against its floor at ``--tflops`` (default 80 TFLOPS, bf16 on an H100).
4. Decoding side by side: ``iter_image_batches`` with 0 and 2 worker processes.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

SIZE = 224
GIB = 2**30


def rss_bytes():
    """(resident set, its anonymous part) in bytes: RssAnon is the process's own heap; the rest
    is mapped file pages (the memmap) that the kernel may drop at any time."""
    got = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "RssAnon:")):
                got[line.split(":")[0]] = int(line.split()[1]) * 1024
    return got.get("VmRSS", 0), got.get("RssAnon", 0)


class PeakRSS:
    """Samples the resident set every 5 ms while a stage runs: ``peak`` and ``anon`` in bytes."""

    def __enter__(self):
        (self.peak, self.anon), self._stop = rss_bytes(), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        self.t0 = time.perf_counter()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self._sample()

    def _sample(self):
        rss, anon = rss_bytes()
        self.peak, self.anon = max(self.peak, rss), max(self.anon, anon)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._t.join()
        self._sample()


def make_images(path, n, seed=0, chunk=512):
    """Write a uint8 (n, 3, 224, 224) memmap of random low-frequency images to ``path``."""
    rng = np.random.default_rng(seed)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 3, SIZE, SIZE))
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        small = rng.integers(0, 256, size=(m, 3, 7, 7), dtype=np.uint8)
        mm[lo:lo + m] = small.repeat(32, axis=2).repeat(32, axis=3)
    mm.flush()
    del mm


def old_channel_stats(images):
    x = images.double().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def old_fingerprint(images, labels, names):
    h = hashlib.sha256()
    h.update(repr(tuple(images.shape)).encode())
    h.update(np.ascontiguousarray(images.numpy()).tobytes())
    h.update(np.ascontiguousarray(labels.numpy().astype(np.int64)).tobytes())
    h.update("\n".join(names).encode("utf-8"))
    return h.hexdigest()


def host_stages(args, rows):
    from geoaudit.train._data import channel_stats, fingerprint
    from geoaudit.train._kmeans import features

    folder = Path(args.dir or tempfile.mkdtemp(prefix="geoaudit_scale_"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train_images.npy"
    made = not (path.exists() and np.load(path, mmap_mode="r").shape == (args.images, 3, SIZE, SIZE))
    with PeakRSS() as p:
        if made:
            make_images(path, args.images)
    labels = np.random.default_rng(1).integers(0, 10, size=args.images).astype(np.int64)
    rows.append(("generate (memmap write)" if made else "reuse the memmap of --dir", p.seconds, p.peak, p.anon, ""))
    images = torch.from_numpy(np.load(path, mmap_mode="r+"))
    names = [str(i) for i in range(10)]
    nbytes = images.numel()
    print(f"synthetic split: {args.images} x 3 x {SIZE} x {SIZE} uint8 = {nbytes / GIB:.2f} GiB at {path}")
    with PeakRSS() as p:
        fp = fingerprint(images, torch.from_numpy(labels), names)
    rows.append(("fingerprint, streamed", p.seconds, p.peak, p.anon, ""))
    with PeakRSS() as p:
        stats = channel_stats(images)
    rows.append(("channel_stats, streamed", p.seconds, p.peak, p.anon, ""))
    old_need = nbytes * 8 + nbytes
    if old_need < args.old_limit_gib * GIB:
        with PeakRSS() as p:
            fp_old = old_fingerprint(images, torch.from_numpy(labels), names)
        rows.append(("fingerprint, former (tobytes copy)", p.seconds, p.peak, p.anon, f"same digest: {fp_old == fp}"))
        with PeakRSS() as p:
            old = old_channel_stats(images)
        rows.append(("channel_stats, former (float64 copy)", p.seconds, p.peak, p.anon, f"same values: {old == stats}"))
    else:
        rows.append(("channel_stats, former (float64 copy)", float("nan"), old_need, old_need,
                     "not run: needs this much (8x the split + the split)"))
    k = min(args.kmeans_images, args.images)
    with PeakRSS() as p:
        feats = features(images[:k], feature_size=16, device="cpu")
    rows.append((f"k-means features, pooled to 16 px ({k} images)", p.seconds, p.peak, p.anon,
                 (f"{tuple(feats.shape)} float32 = {feats.numel() * 4 / 2**20:.0f} MiB; "
                  f"all {args.images}: {args.images * 768 * 4 / 2**20:.0f} MiB")))
    del feats
    # D as Algorithm 3 reads it: random rows of a float16 memmap, in batches
    dpath = folder / "d_images.npy"
    with PeakRSS() as p:
        d = np.lib.format.open_memmap(dpath, mode="w+", dtype=np.float16, shape=(min(args.images, 2048), 3, SIZE, SIZE))
        for lo in range(0, d.shape[0], 256):
            d[lo:lo + 256] = images[lo:lo + 256].numpy().astype(np.float16) / 255
        d.flush()
        rng = np.random.default_rng(0)
        for _ in range(args.steps * 4):
            idx = np.sort(rng.integers(0, d.shape[0], args.batch * 8))
            torch.from_numpy(d[idx]).float()
    rows.append((f"D read in batches of {args.batch * 8} (float16 memmap)", p.seconds, p.peak, p.anon, ""))
    del images, d
    if not args.keep:
        path.unlink()
        dpath.unlink()
    return stats


def flops_and_memory(args):
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.models import resnet50

    torch.manual_seed(0)
    model = resnet50(num_classes=1000)
    params = sum(p.numel() for p in model.parameters())
    x = torch.rand(1, 3, SIZE, SIZE)
    y = torch.zeros(1, dtype=torch.long)
    out = {}

    def count(fn):
        with FlopCounterMode(display=False) as fc:
            fn()
        return fc.get_total_flops()

    model.eval()
    with torch.no_grad():
        out["prediction"] = count(lambda: model(x))
    model.train()

    def sgd():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
    out["sgd_step"] = count(sgd)
    model.zero_grad(set_to_none=True)

    def attack():
        xa = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xa), y)
        loss.backward()  # weights frozen: only the gradient to the input is computed
    model.eval()
    for p_ in model.parameters():
        p_.requires_grad_(False)
    out["attack_step"] = count(attack)
    for p_ in model.parameters():
        p_.requires_grad_(True)

    def saved_bytes(amp):
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t
        model.train()
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if amp else torch.autocast("cpu", enabled=False)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        del loss
        return total[0]
    act32, act16 = saved_bytes(False), saved_bytes(True)
    model.zero_grad(set_to_none=True)
    return model, params, out, act32, act16


def gpu_memory_table(params, act32, act16, B, n_models, kmeans_chunk=None):
    from geoaudit.train._kmeans import FEATURE_CHUNK_BYTES

    kmeans_chunk = kmeans_chunk or FEATURE_CHUNK_BYTES // (3 * SIZE * SIZE * 4)  # the default chunk
    w = params * 4
    img = 3 * SIZE * SIZE
    rows = [
        ("SGD step, float32", w * 3 + act32 * B + img * 4 * B),
        ("SGD step, bf16 autocast", w * 3 + act16 * B + img * 4 * B + w // 2),
        ("attack step (PGD), float32", w + act32 * B + img * 4 * B * 4),
        ("attack step (PGD), bf16 autocast", w + act16 * B + img * 4 * B * 4 + w // 2),
        (f"prediction, {n_models} models resident", w * n_models + img * 4 * B + 2 * 64 * 112 * 112 * 4 * B),
        (f"k-means features, chunk of {kmeans_chunk}", kmeans_chunk * img * (1 + 4)),
    ]
    return rows


def throughput(model, args):
    B, steps = args.batch, args.steps
    x = torch.rand(B, 3, SIZE, SIZE)
    y = torch.randint(0, 1000, (B,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    res = {}

    def timed(fn):
        fn()  # warm-up
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - t) / (steps * B)

    def sgd():
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    res["sgd_step"] = timed(sgd)

    def attack():
        model.eval()
        xa = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xa), y)
        (g,) = torch.autograd.grad(loss, xa)
        xa.detach().add_(g.sign(), alpha=1 / 255)
    for p_ in model.parameters():
        p_.requires_grad_(False)
    res["attack_step"] = timed(attack)
    for p_ in model.parameters():
        p_.requires_grad_(True)

    def pred():
        model.eval()
        with torch.inference_mode():
            model(x).argmax(1)
    res["prediction"] = timed(pred)
    return res


def decoding(args):
    import datasets
    from PIL import Image

    from geoaudit.data import iter_image_batches

    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 256, (7, 7, 3), dtype=np.uint8).repeat(32, 0).repeat(32, 1))
           for _ in range(args.decode_images)]
    ds = datasets.Dataset.from_dict({"image": ims, "label": [0] * len(ims)},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.Value("int64")}))
    out, ref = {}, None
    for w in (0, 2):
        t = time.perf_counter()
        got = torch.cat([b for b, _, _ in iter_image_batches(ds, 64, image_size=SIZE, num_workers=w)])
        out[w] = time.perf_counter() - t
        ref = got if ref is None else ref
        assert torch.equal(got, ref)
    return out


def switches(args):
    """sample_model (small_cnn, 32 px) with each switch, side by side; seconds of one epoch."""
    from geoaudit.train import WeightedDataset, sample_model

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.switch_images, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (args.switch_images,), generator=g)
    d = WeightedDataset.create(Path(tempfile.mkdtemp(prefix="geoaudit_switch_")) / "D", images, labels,
                               capacity=len(labels), meta={})
    kw = {"class_names": [str(i) for i in range(10)], "seed": 0, "epochs": 1, "batch_size": 64, "lr": 0.01}
    sample_model(d, **kw)  # warm-up
    out = {}
    for name, extra in (("off", {}), ("channels_last", {"channels_last": True}), ("bf16 autocast", {"amp": "bf16"})):
        t = time.perf_counter()
        _, info = sample_model(d, **kw, **extra)
        out[name] = (time.perf_counter() - t, info["history"][-1]["loss"])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=62000, help="training images (the paper: 62,000)")
    ap.add_argument("--paper-train", type=int, default=62000, help="training images of the projection")
    ap.add_argument("--test-images", type=int, default=21000, help="test images of the projection")
    ap.add_argument("--batch", type=int, default=4, help="batch of the throughput runs here (default 4)")
    ap.add_argument("--gpu-batch", type=int, default=256, help="batch B of the GPU memory table (default 256)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per stage (default 2)")
    ap.add_argument("--kmeans-images", type=int, default=4096, help="images pooled in the k-means stage")
    ap.add_argument("--decode-images", type=int, default=256, help="images of the decoding comparison")
    ap.add_argument("--switch-images", type=int, default=2048, help="images of the training-switch comparison")
    ap.add_argument("--old-limit-gib", type=float, default=6.0,
                    help="run the former float64 channel_stats only when it needs less than this")
    ap.add_argument("--tflops", type=float, default=80.0, help="realistic GPU rate for the projection")
    ap.add_argument("--t1", type=int, default=3)
    ap.add_argument("--attack-steps", type=int, default=100, help="N, attack steps per attack")
    ap.add_argument("--t2", type=int, default=350, help="T2, epochs of Algorithm 3 (the paper: 350)")
    ap.add_argument("--t2-alt", type=int, default=20, help="a second T2 to project (default 20)")
    ap.add_argument("--models", type=int, default=50, help="models per population")
    ap.add_argument("--dir", default=None, help="folder of the synthetic memmap (default: a temp folder)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--skip-host", action="store_true", help="skip the synthetic-data stages")
    ap.add_argument("--host-only", action="store_true", help="only the synthetic-data stages")
    args = ap.parse_args()
    torch.manual_seed(0)
    print("uptime:", os.popen("uptime").read().strip())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CUDA: {torch.cuda.is_available()}")

    if not args.skip_host:
        rows = []
        host_stages(args, rows)
        print("\n## Host stages (peak RSS and its anonymous part, sampled every 5 ms during the stage)")
        print(f"{'stage':52s} {'seconds':>8s} {'RSS GiB':>8s} {'anon GiB':>8s}  note")
        for name, s, peak, anon, note in rows:
            print(f"{name:52s} {s:8.2f} {peak / GIB:8.2f} {anon / GIB:8.2f}  {note}")
        print(f"ru_maxrss of the whole run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
        if args.host_only:
            return

    sw = switches(args)
    print(f"\n## Training switches on this CPU: small_cnn, {args.switch_images} images at 32 px, 1 epoch, batch 64")
    for name, (secs, loss) in sw.items():
        print(f"{name:14s} {secs:6.2f} s  ratio to off {sw['off'][0] / secs:5.2f}x  loss {loss:.4f}")

    dec = decoding(args)
    print(f"\n## Decoding {args.decode_images} PNG images to 224 px, iter_image_batches (same tensors)")
    print(f"num_workers=0: {dec[0]:.2f} s; num_workers=2: {dec[2]:.2f} s; ratio {dec[0] / dec[2]:.2f}x")

    model, params, fl, act32, act16 = flops_and_memory(args)
    print(f"\n## ResNet-50 at 224 px: {params / 1e6:.1f} M parameters; FLOPs per image (FlopCounterMode)")
    for k, v in fl.items():
        print(f"{k:14s} {v / 1e9:8.2f} GFLOP")
    print(f"autograd-saved activations per image: float32 {act32 / 2**20:.0f} MiB, bf16 autocast {act16 / 2**20:.0f} MiB")

    B = args.gpu_batch
    print(f"\n## Peak GPU memory per stage at B = {B} "
          + ("(measured)" if torch.cuda.is_available() else "(estimated: no CUDA here; see the docstring)"))
    for name, b in gpu_memory_table(params, act32, act16, B, 3 * args.models):
        print(f"{name:44s} {b / GIB:8.2f} GiB")

    tp = throughput(model, args)
    print(f"\n## Achieved here (CPU, batch {args.batch}, {args.steps} steps)")
    for k, s in tp.items():
        print(f"{k:14s} {s:8.3f} s/image  {fl[k] / s / 1e9:8.1f} GFLOPS")

    n, m = args.paper_train, args.test_images
    rate = args.tflops * 1e12
    d_rows = (args.t1 + 1) * n
    a2 = 2 * args.t1 * n * (fl["sgd_step"] + args.attack_steps * fl["attack_step"])
    a2_here = 2 * args.t1 * n * (tp["sgd_step"] + args.attack_steps * tp["attack_step"])
    audit = 3 * args.models * m * fl["prediction"]
    audit_here = 3 * args.models * m * tp["prediction"]
    for t2 in dict.fromkeys((args.t2, args.t2_alt)):
        draws = args.models * t2 * (n + 2 * d_rows)  # per seed: plain (N draws/epoch) + 2 adversarial ((T1+1)N)
        a3, a3_here = draws * fl["sgd_step"], draws * tp["sgd_step"]
        total = a2 + a3 + audit
        print(f"\n## Projected pipeline: {n} train + {m} test at 224 px, ResNet-50, 3 populations x {args.models} "
              f"models, T1 = {args.t1}, N = {args.attack_steps}, T2 = {t2} epochs over D")
        print(f"{'stage':60s} {'EFLOP':>7s} {'h @ ' + format(args.tflops, '.0f') + ' TFLOPS':>14s} {'h @ here':>10s}")
        for name, f, secs_here in (("Algorithm 2, pgd + perceptual, no reuse (floor)", a2, a2_here),
                                   (f"Algorithm 3, {3 * args.models} models", a3, a3_here),
                                   (f"audit, {3 * args.models} models x {m} test images", audit, audit_here)):
            print(f"{name:60s} {f / 1e18:7.2f} {f / rate / 3600:14.1f} {secs_here / 3600:10.0f}")
        here = a2_here + a3_here + audit_here
        print(f"{'total':60s} {total / 1e18:7.2f} {total / rate / 3600:14.1f} {here / 3600:10.0f}")
    print("uptime:", os.popen("uptime").read().strip())

if __name__ == "__main__":
    main()
