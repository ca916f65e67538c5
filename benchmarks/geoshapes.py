"""GeoShapes generation: the whole default dataset, and its image encoders side by side.

    python benchmarks/geoshapes.py [--n-images 20000] [--image-size 64] [--encode-sample 2000]

Prints (1) the wall time of ``geoshapes()`` at the given size (after a warm-up that loads the
country tables once), split into rendering and encoding; (2) for the same rendered images, the
time per image of the stored-PNG writer GeoShapes uses, PIL's PNG encoder at compress levels 0
and 6, and JPEG q95, with their ratios and mean sizes.  All in one run, on the same images.
"""
import argparse
import io
import time

import numpy as np


def main(argv=None):
    from PIL import Image

    import geoaudit.data._geoshapes as G
    from geoaudit.data import geoshapes

    p = argparse.ArgumentParser()
    p.add_argument("--n-images", type=int, default=20000)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--encode-sample", type=int, default=2000)
    a = p.parse_args(argv)

    geoshapes(n_images=200, image_size=a.image_size)  # warm-up: country tables, imports
    t = time.perf_counter()
    dd = geoshapes(n_images=a.n_images, image_size=a.image_size)
    total = time.perf_counter() - t
    n = sum(len(s) for s in dd.values())

    cfg, plan = G._plan(G._args(a.n_images, 0.9, a.image_size, 0, 10, None, 50, "high_income", "latest", "png"))
    lat = G._latents(cfg, plan, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    imgs = np.concatenate([G._render(lat, np.arange(s, min(s + G._CHUNK, a.n_images)), a.image_size,
                                     G.CLASS_NAMES[:10], rng) for s in range(0, a.n_images, G._CHUNK)])
    render = time.perf_counter() - t
    print(f"geoshapes(n_images={a.n_images}, image_size={a.image_size}): {total:.2f} s for {n} images "
          f"({1e6 * total / n:.0f} us/image); rendering alone {render:.2f} s ({1e6 * render / n:.0f} us/image)")

    sample = [np.ascontiguousarray(x) for x in imgs[:a.encode_sample]]

    def pil(fmt, **kw):
        def enc(x):
            b = io.BytesIO()
            Image.fromarray(x).save(b, format=fmt, **kw)
            return b.getvalue()
        return enc

    encoders = {
        "stored PNG (GeoShapes)": G._png_stored,
        "PIL PNG level 0": pil("PNG", compress_level=0),
        "PIL PNG level 6": pil("PNG", compress_level=6),
        "JPEG q95 4:4:4": pil("JPEG", quality=95, subsampling=0),
    }
    base = None
    for name, enc in encoders.items():
        t = time.perf_counter()
        sizes = [len(enc(x)) for x in sample]
        dt = (time.perf_counter() - t) / len(sample)
        base = base or dt
        print(f"  {name:24s} {1e6 * dt:7.1f} us/image  x{dt / base:5.1f} vs stored PNG  {np.mean(sizes) / 1024:5.1f} KiB")


if __name__ == "__main__":
    main()
