"""The audit report as a reader meets it: every section, nothing fetched from elsewhere, numbers
that cannot mislead (per-model n, dropped countries apart, axes in range), and, where a headless
Chromium is installed, the page rendered to a screenshot."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba

from geoaudit.audit import audit_predictions, compare_populations
from geoaudit.report import write_compare, write_report
from geoaudit.report._audit import country_table, software_versions
from geoaudit.report._html import format_number, link_html
from geoaudit.report._plots import (
    TOO_FEW_COLOUR,
    plot_accuracy_vs_covariate,
    plot_world_map,
)

# src= or href= pointing outside the page (http(s), protocol-relative or file URLs)
EXTERNAL_ATTR = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//|file:)""", re.IGNORECASE)
COUNTRIES = {"USA": 65000.0, "DEU": 48000.0, "FRA": 41000.0, "BRA": 9500.0, "MEX": 10040.0, "IND": 2400.0,
             "NGA": 2100.0, "KEN": 1800.0, "ETH": 950.0, "RUS": 12000.0, "CAN": 52000.0}
SMALL = {"RUS": 3, "CAN": 5}  # too few images: dropped, as the demo's 1-5 image countries


def _frame(n_models=3, random_state=0):
    rng = np.random.default_rng(random_state)
    rows = []
    for c, g in COUNTRIES.items():
        n = SMALL.get(c, 60 + int(rng.integers(0, 40)))
        p = float(np.clip(0.3 + 0.08 * np.log(g / 1000), 0.05, 0.95))
        for m in range(n_models):
            right = rng.random(n) < p
            rows.append(pd.DataFrame({"image_id": [f"{c}{i}" for i in range(n)], "country_iso3": c,
                                      "gdp_per_capita_usd": g, "gdp_year": 2022, "label": 1,
                                      "prediction": np.where(right, 1, 0), "model": f"seed{m}"}))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    df = _frame()
    src = root / "predictions.csv"
    df.to_csv(src, index=False)
    rep = audit_predictions(df, group="country_iso3", covariate="gdp_per_capita_usd", source=str(src))
    return rep, df, write_report(rep, root / "out", predictions=df)


SECTIONS = ("Result", "Accuracy against the covariate", "World map", "Models", "Influence and sensitivity",
            "Dispersion", "Per-country results", "Method, assumptions and settings", "Software")


def test_page_holds_every_section_and_no_external_resource(written):
    _, _, w = written
    html = w["html"].read_text()
    for title in SECTIONS:
        assert f"<h2>{title}" in html, title
    assert not EXTERNAL_ATTR.search(html), EXTERNAL_ATTR.search(html)
    assert "<script" not in html and "<link" not in html and "@import" not in html and "url(" not in html
    # every image is embedded
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'<img src="([^"]+)"', html))
    # the predictions file is a link relative to the report, which resolves
    hrefs = re.findall(r'<a href="([^"]+)"', html)
    assert "../predictions.csv" in hrefs and (w["html"].parent / "../predictions.csv").exists()
    for name in ("geoaudit", "torch", "statsmodels", "numpy", "pandas", "datasets"):
        assert f"<td class=\"text\">{name}</td>" in html, name
    for a in ("independent", "linear", "binomial"):
        assert a in html


def test_counts_are_per_model_and_the_dropped_list_agrees(written):
    rep, df, w = written
    html = w["html"].read_text()
    table = country_table(rep, df)
    # RUS has 3 images seen by 3 models: n is 3, never 9
    rus = table.set_index("group").loc["RUS"]
    assert rus["n"] == 3 and bool(rus["dropped"])
    assert set(table.loc[table["dropped"], "group"]) == set(rep.dropped_groups) == {"RUS", "CAN"}
    assert (table.loc[table["dropped"], "n"] < rep.settings["min_group_size"]).all()
    assert (table.loc[~table["dropped"], "n"] >= rep.settings["min_group_size"]).all()
    assert "2 dropped" in html and "2 hollow grey dots" in html
    # covariates with thousands separators, year shown, one accuracy column per model
    assert ">9,500<" in html and ">10,040<" in html and "1.004e+04" not in html
    assert "GDP per capita, US$: year" in html and ">2022<" in html
    for m in ("seed0", "seed1", "seed2"):
        assert f"accuracy: {m}" in html
    assert "accuracy per unit of ln(GDP per capita, US$)" in html


def test_report_json_has_every_model_groups_and_relative_paths(written):
    _, _, w = written
    data = json.loads(w["json"].read_text())
    assert data["format_version"] >= 2
    assert set(data["model_groups"]) == {"seed0", "seed1", "seed2"}
    for recs in data["model_groups"].values():
        by = {r["group"]: r for r in recs}
        assert by["RUS"]["n"] == 3 and by["RUS"]["dropped"] and by["USA"]["covariate_year"] == "2022"
        assert all(0 <= r["accuracy"] <= 1 for r in recs)
    assert data["source"] == "../predictions.csv"
    assert data["software"]["numpy"] == software_versions()["numpy"]


def test_accuracy_axis_stays_in_range_and_dropped_are_apart(written):
    rep, _, _ = written
    g = rep.model_groups["seed0"].assign(dropped=lambda t: t["group"].isin(rep.dropped_groups))
    fig = plot_accuracy_vs_covariate(g, rep.fits["seed0"], covariate_label="gdp_per_capita_usd")
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert -0.02 <= lo and hi <= 1.02
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("2 dropped, not in the fit" in t for t in labels)
    assert "accuracy" in ax.get_ylabel() and "GDP per capita, US$" in ax.get_xlabel()


def test_map_paints_too_few_images_in_a_neutral_colour(written):
    rep, _, _ = written
    g = rep.model_groups["seed0"].assign(dropped=lambda t: t["group"].isin(rep.dropped_groups))
    fig = plot_world_map(g, min_group_size=50)
    ax = fig.axes[0]
    colours = [tuple(np.round(fc, 3)) for coll in ax.collections for fc in coll.get_facecolors()]
    assert tuple(np.round(to_rgba(TOO_FEW_COLOUR), 3)) in colours
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("too few images" in t and "2 countries" in t for t in legend)


def test_numbers_and_links():
    assert format_number(9500.0) == "9,500" and format_number(10040.0) == "10,040"
    assert format_number(0.12345) == "0.1235" and format_number(2022) == "2022"
    assert format_number(float("nan")) == ""
    assert link_html("/a/b/c.csv", "/a/d") == '<a href="../b/c.csv">../b/c.csv</a>'


def test_compare_page_separates_the_statistic_from_the_difference(tmp_path):
    res = compare_populations({"a0": 0.01, "a1": 0.02, "a2": 0.0}, {"b0": 0.03, "b1": 0.05, "b2": 0.04},
                              test="welch")
    html = write_compare(res, tmp_path / "cmp.json")["html"].read_text()
    assert "t statistic" in html and "mean difference A - B" in html
    perm = compare_populations({"a0": 0.01, "a1": 0.02, "a2": 0.0}, {"b0": 0.03, "b1": 0.05, "b2": 0.04},
                               test="permutation", random_state=0)
    html = write_compare(perm, tmp_path / "perm.json")["html"].read_text()
    assert "t statistic" not in html and "mean difference A - B" in html
    assert "whiskers" in html and not EXTERNAL_ATTR.search(html)


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="headless Chromium is not installed")
def test_page_renders_in_headless_chromium(written, tmp_path):
    _, _, w = written
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    shot = tmp_path / "page.png"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,3000", w["html"].resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    im = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert im.shape == (3000, 1200)
    assert im.std() > 10  # text and figures, not a blank page


def test_compare_page_links_the_audit_reports(written, tmp_path):
    _, _, w = written
    res = compare_populations({"a0": 0.01, "a1": 0.02, "a2": 0.0}, {"b0": 0.03, "b1": 0.05, "b2": 0.04})
    out = tmp_path / "cmp" / "compare.json"
    out.parent.mkdir()
    html = write_compare(res, out, sources={"A": w["json"], "B": w["json"].parent})["html"].read_text()
    hrefs = re.findall(r'<a href="([^"]+)"', html)
    assert len(hrefs) == 2 and all(h.endswith("report.html") and not h.startswith("/") for h in hrefs)
    assert all((out.parent / h).resolve() == w["html"].resolve() for h in hrefs)


def test_many_models_keep_every_accuracy_in_the_page(tmp_path):
    df = _frame(n_models=13, random_state=1)
    rep = audit_predictions(df, group="country_iso3", covariate="gdp_per_capita_usd", influence=False)
    html = write_report(rep, tmp_path / "r", predictions=df)["html"].read_text()
    assert "lowest accuracy" in html and "highest accuracy" in html
    assert "accuracy of every model" in html and ">seed12<" in html
