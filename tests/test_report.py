"""Reports: composable HTML pieces, self-contained pages, the figures, atomic writing."""
import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from geoaudit import InputError
from geoaudit.audit import audit_predictions, compare_populations, gls_test, write_report
from geoaudit.report import (
    fig_to_data_uri,
    figure_html,
    html_page,
    looks_like_iso3,
    plot_accuracy_vs_covariate,
    plot_beta_distributions,
    plot_dispersion,
    plot_model_betas,
    plot_world_map,
    render_audit,
    section,
    table_html,
    write_compare,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def _frame(groups=("USA", "BRA", "IND", "DEU", "NGA"), gdp=(80000, 9000, 2400, 52000, 1600), models=("m0", "m1")):
    rng = np.random.default_rng(0)
    rows = []
    for mi, name in enumerate(models):
        for i, (g, c) in enumerate(zip(groups, gdp)):
            n = 60 + 10 * i
            p = 0.5 + 0.04 * np.log(c / 1000) + 0.01 * mi
            rows.append(pd.DataFrame({"country": g, "gdp": float(c), "label": 0,
                                      "prediction": (rng.random(n) >= p).astype(int), "model": name}))
    return pd.concat(rows, ignore_index=True)


def test_fig_to_data_uri_is_an_embedded_png():
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    uri = fig_to_data_uri(fig)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]).startswith(PNG_MAGIC)


def test_html_pieces_compose_and_escape():
    t = table_html([{"name": "<b>x</b>", "value": 0.123456, "ok": True, "none": None}])
    assert "&lt;b&gt;x&lt;/b&gt;" in t and "0.1235" in t and "yes" in t
    assert table_html([]) == "<p><em>(no rows)</em></p>"
    assert "2 more rows" in table_html([{"a": i} for i in range(5)], max_rows=3)
    page = html_page("T & co", [section("S <1>", t, anchor="s1")], subtitle="sub")
    assert page.startswith("<!DOCTYPE html>") and "<title>T &amp; co</title>" in page
    assert '<section id="s1"><h2>S &lt;1&gt;</h2>' in page and "<style>" in page


def test_audit_report_html_is_self_contained(tmp_path):
    rep = audit_predictions(_frame(), group="country", covariate="gdp")
    written = write_report(rep, tmp_path / "r")
    html = written["html"].read_text()
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    assert "<link" not in html and "<script" not in html
    names = {"accuracy_vs_covariate.png", "world_map.png", "model_betas.png", "betas.png", "dispersion.png"}
    assert names <= set(written)
    for name in names:
        assert (tmp_path / "r" / name).read_bytes().startswith(PNG_MAGIC)
    assert html.count("data:image/png;base64,") == 5
    for part in ("Method, assumptions and settings", "Influence and sensitivity", "Dispersion", "Knapp-Hartung",
                 "differs from the paper", "independent"):
        assert part in html, part
    assert json.loads(written["json"].read_text())["format"] == "geoaudit-audit-report"
    assert not list((tmp_path / "r").glob(".*tmp"))  # no temporary files left behind


def test_non_country_groups_get_no_map():
    df = _frame(groups=("north", "south", "east", "west", "up"))
    assert not looks_like_iso3(df["country"].unique())
    assert looks_like_iso3(["USA", "FRA", "XKX"])
    rep = audit_predictions(df[df["model"] == "m0"], group="country", covariate="gdp")
    html, figs = render_audit(rep)
    assert "world_map.png" not in figs and "model_betas.png" not in figs
    assert "confidence band" in html


def test_write_report_refuses_a_file_as_out_and_writes_nothing(tmp_path):
    rep = audit_predictions(_frame(), group="country", covariate="gdp")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        write_report(rep, f)
    assert f.read_text() == "x"


def test_plots_return_figures():
    rep = audit_predictions(_frame(), group="country", covariate="gdp")
    fit = gls_test({"group": ["USA", "BRA", "IND", "DEU"], "accuracy": [0.7, 0.6, 0.5, 0.68],
                    "covariate": [80000, 9000, 2400, 52000], "n": [100, 80, 60, 90]})
    figs = [
        plot_accuracy_vs_covariate(rep.groups, rep.fits),
        plot_accuracy_vs_covariate(rep.model_groups["m0"], fit, log_covariate=True, annotate=False),
        plot_world_map(rep.groups),
        plot_beta_distributions({"A": [0.01, 0.02, 0.015], "B": [0.03, 0.05]}, reference=0.04),
        plot_model_betas(rep.fits),
        plot_dispersion(rep.model_groups, rep.fits),
    ]
    for fig in figs:
        assert isinstance(fig, Figure) and fig.axes


def test_compare_report_files(tmp_path):
    r = compare_populations({"a0": 0.01, "a1": 0.02, "a2": 0.0}, {"b0": 0.03, "b1": 0.05, "b2": 0.04}, test="welch")
    w = write_compare(r, tmp_path / "cmp.json")
    assert json.loads(w["json"].read_text())["test"] == "welch"
    html = w["html"].read_text()
    assert w["html"].name == "cmp.html" and not EXTERNAL.search(html)
    assert w["figure"].read_bytes().startswith(PNG_MAGIC)
    assert figure_html("data:image/png;base64,AA", caption="c<").endswith("<figcaption>c&lt;</figcaption></figure>")


def test_beta_plot_refuses_two_dimensional_betas():
    with pytest.raises(InputError, match=re.escape("must be one number per model (1-D), got shape (2, 2)")):
        plot_beta_distributions({"A": [[0.01, 0.02], [0.03, 0.04]]})


def test_fragile_verdict_is_flagged_in_the_html():
    rng = np.random.default_rng(3)
    rows = []
    for i, (c, n) in enumerate(zip(np.exp(np.linspace(7.5, 11, 12)), [300] * 12)):
        rows.append(pd.DataFrame({"country": f"G{i:02d}", "gdp": c, "label": 0,
                                  "prediction": (rng.random(n) >= 0.75).astype(int)}))
    rows.append(pd.DataFrame({"country": "OUT", "gdp": 400.0, "label": 0,
                              "prediction": (np.arange(2000) >= 900).astype(int)}))
    rep = audit_predictions(pd.concat(rows, ignore_index=True), group="country", covariate="gdp",
                            variance="paper")
    fit = rep.fits["model"]
    assert fit.significant and fit.influence.hinges_on_one_group
    html, _ = render_audit(rep)
    assert "Fragile" in html and "OUT" in html and "FRAGILE" in rep.summary()
