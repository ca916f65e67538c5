"""Make examples/predictions.csv: a realistic, deterministic predictions file for `geoaudit audit`.

Each row is one test image as seen by one model of a small population (models trained alike with
different seeds): its country (ISO3), the country's real GDP per capita (World Bank, shipped with
geoaudit), the true class and the predicted class.  Images are over-represented in rich
countries (as in ImageNet), and the chance of a correct prediction rises with log GDP, by
``--slope`` on the logit scale per unit of ln(GDP) (0 plants no bias).

    python examples/make_predictions.py                     # writes examples/predictions.csv
    python examples/make_predictions.py --slope 0 --prefix fair --out /tmp/fair.csv
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from geoaudit.data import gdp_per_capita, load_boundaries


def make_predictions(*, n_countries=45, n_models=4, n_classes=10, slope=0.15, prefix="seed", seed=2024):
    rng = np.random.default_rng(seed)
    gdp = gdp_per_capita().dropna(subset=["gdp_per_capita_usd"])
    on_map = set(load_boundaries("110m")["iso3"])
    gdp = gdp[gdp.index.isin(on_map)].sort_index()
    iso = rng.choice(gdp.index.to_numpy(), size=n_countries, replace=False)
    iso = np.sort(iso)
    g = gdp.loc[iso, "gdp_per_capita_usd"].to_numpy(float)
    logg = np.log(g)
    # Image counts grow with wealth (an amerocentric/eurocentric dataset); a few countries fall
    # under the default min_group_size of 50 and get dropped by the audit.
    n = np.round(np.exp(4.4 + 0.35 * (logg - logg.mean()) + rng.normal(0, 0.55, n_countries))).astype(int)
    n = np.clip(n, 12, 400)
    country = np.repeat(iso, n)
    cov = np.repeat(g, n)
    n_img = len(country)
    labels = rng.integers(0, n_classes, n_img)
    image_id = [f"img{i:05d}" for i in range(n_img)]
    country_effect = np.repeat(rng.normal(0, 0.3, n_countries), n)  # what GDP does not explain
    frames = []
    for m in range(n_models):
        logit = 0.4 + slope * (np.repeat(logg, n) - logg.mean()) + country_effect + rng.normal(0, 0.08)
        correct = rng.random(n_img) < 1 / (1 + np.exp(-logit))
        wrong = (labels + rng.integers(1, n_classes, n_img)) % n_classes  # any other class
        frames.append(pd.DataFrame({
            "image_id": image_id,
            "country_iso3": country,
            "gdp_per_capita_usd": np.round(cov, 2),
            "label": labels,
            "prediction": np.where(correct, labels, wrong),
            "model": f"{prefix}{m}",
        }))
    return pd.concat(frames, ignore_index=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).with_name("predictions.csv")))
    p.add_argument("--slope", type=float, default=0.15, help="logit slope per unit of ln(GDP) (0: no bias)")
    p.add_argument("--models", type=int, default=4, help="models in the population")
    p.add_argument("--countries", type=int, default=45)
    p.add_argument("--prefix", default="seed", help="model names are PREFIX0, PREFIX1, ...")
    p.add_argument("--seed", type=int, default=2024)
    a = p.parse_args(argv)
    df = make_predictions(n_countries=a.countries, n_models=a.models, slope=a.slope, prefix=a.prefix,
                          seed=a.seed)
    df.to_csv(a.out, index=False)
    print(f"wrote {a.out}: {len(df)} rows, {df['country_iso3'].nunique()} countries, {a.models} models")


if __name__ == "__main__":
    main()
