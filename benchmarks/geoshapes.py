"""GeoShapes generation: the whole dataset without and with the capture-quality bias, the
capture corruption alone, and the image encoders side by side.

    OMP_NUM_THREADS=1 python benchmarks/geoshapes.py [--n-images 20000] [--image-size 32 64] [--encode-sample 2000]

Prints, per image size and in one run: (1) the wall time of ``geoshapes()`` with
``capture_strength=0`` (the images of earlier releases, byte for byte) and with
``capture_strength=1`` (every image below US$50,000 GDP per capita degraded), after a warm-up
that loads the country tables once, and their ratio; (2) rendering alone and
``capture_corruption`` alone on the same images (severity U(0, 1), as for augmentation);
(3) for the rendered images, the time per image of the stored-PNG writer GeoShapes uses, PIL's
PNG encoder at compress levels 0 and 6, and JPEG q95, with mean sizes.  Then ``uptime``.
"""
import argparse
import io
import subprocess
import time

import numpy as np


def main(argv=None):
    from PIL import Image

    from geoaudit.data import capture_corruption, geoshapes
    from geoaudit.data._geoshapes import GeoShapesConfig
    from geoaudit.data._geoshapes.config import CHUNK, CLASS_NAMES
    from geoaudit.data._geoshapes.plan import latents, make_plan
    from geoaudit.data._geoshapes.render import png_stored, render

    p = argparse.ArgumentParser()
    p.add_argument("--n-images", type=int, default=20000)
    p.add_argument("--image-size", type=int, nargs="+", default=[32, 64])
    p.add_argument("--encode-sample", type=int, default=2000)
    a = p.parse_args(argv)

    for size in a.image_size:
        geoshapes(n_images=200, image_size=size)  # warm-up: country tables, imports
        times = {}
        for c in (0.0, 1.0):
            t = time.perf_counter()
            dd = geoshapes(n_images=a.n_images, image_size=size, capture_strength=c)
            times[c] = time.perf_counter() - t
        n = sum(len(s) for s in dd.values())
        print(f"geoshapes(n_images={a.n_images}, image_size={size}): capture_strength=0 {times[0.0]:.2f} s, "
              f"capture_strength=1 {times[1.0]:.2f} s (x{times[1.0] / times[0.0]:.2f}; "
              f"{1e6 * times[1.0] / n:.0f} us/image)")

        cfg, plan = make_plan(GeoShapesConfig(n_images=a.n_images, image_size=size))
        lat = latents(cfg, plan)
        rng = np.random.default_rng(1)
        t = time.perf_counter()
        imgs = np.concatenate([render(lat, np.arange(s, min(s + CHUNK, a.n_images)), size, CLASS_NAMES[:10], rng)
                               for s in range(0, a.n_images, CHUNK)])
        t_render = time.perf_counter() - t
        sev = np.random.default_rng(2).random(len(imgs))
        t = time.perf_counter()
        for s in range(0, len(imgs), 1024):
            capture_corruption(imgs[s:s + 1024], sev[s:s + 1024], random_state=s)
        t_corrupt = time.perf_counter() - t
        print(f"  rendering alone {t_render:.2f} s ({1e6 * t_render / len(imgs):.0f} us/image); "
              f"capture_corruption alone (uint8, batches of 1024, severity U(0,1)) {t_corrupt:.2f} s "
              f"({1e6 * t_corrupt / len(imgs):.0f} us/image)")

        sample = [np.ascontiguousarray(x) for x in imgs[:a.encode_sample]]

        def pil(fmt, **kw):
            def enc(x):
                b = io.BytesIO()
                Image.fromarray(x).save(b, format=fmt, **kw)
                return b.getvalue()
            return enc

        encoders = {
            "stored PNG (GeoShapes)": png_stored,
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
            print(f"  {name:24s} {1e6 * dt:7.1f} us/image  x{dt / base:5.1f} vs stored PNG  "
                  f"{np.mean(sizes) / 1024:5.1f} KiB")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
