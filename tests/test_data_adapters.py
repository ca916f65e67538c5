"""Datasets with a country column or coordinates, country names, World Bank indicators, groups
other than countries, and audits of any classifier on them.  Offline; the Dollar Street and
GeoDE fixtures are written by the tests in the formats published on the Hub."""
import numpy as np
import pandas as pd
import pytest

from geoaudit._errors import GeoauditError, InputError
from geoaudit.data import (
    add_geo_columns,
    country_codes,
    country_groups,
    gdp_per_capita,
    income_bands,
    indicator,
    load_country_dataset,
)
from tests._geo_fixtures import dollar_street, geode, intensity_model, save_parquet_folder


def test_country_codes_accept_names_iso2_iso3_numeric_and_world_bank_names():
    values = ["in", "IND", "India", "356", "Korea, Rep.", "South Korea", "Côte d'Ivoire", "Ivory Coast",
              "Türkiye", "Turkey", "United States", "USA", "kosovo", "Egypt, Arab Rep.", "the Netherlands"]
    assert list(country_codes(values)) == ["IND", "IND", "IND", "IND", "KOR", "KOR", "CIV", "CIV", "TUR", "TUR",
                                           "USA", "USA", "XKX", "EGY", "NLD"]


def test_unmatched_country_is_named_with_closest_matches_never_dropped_silently(caplog):
    with pytest.raises(InputError, match=r"'Untied States' \(closest: United States \(USA\)"):
        country_codes(["France", "Untied States"])
    with caplog.at_level("WARNING"):
        codes = country_codes(["France", "Narnia", "Narnia"], on_unmatched="drop")
    assert list(codes) == ["FRA", None, None]
    assert "dropping 2 row(s)" in caplog.text
    assert list(country_codes(["Narnia"], aliases={"Narnia": "GBR"})) == ["GBR"]


def test_add_geo_columns_adds_gdp_with_its_year_and_groups():
    df = pd.DataFrame({"country": ["France", "nigeria", "BR"], "x": [1, 2, 3]})
    out = add_geo_columns(df, country_col="country")
    gdp = gdp_per_capita()
    assert list(out["country_iso3"]) == ["FRA", "NGA", "BRA"]
    assert out["gdp_per_capita_usd"].tolist() == pytest.approx(gdp.loc[["FRA", "NGA", "BRA"], "gdp_per_capita_usd"].tolist())
    assert list(out["gdp_year"]) == list(gdp.loc[["FRA", "NGA", "BRA"], "gdp_year"])
    assert list(out["continent"]) == ["Europe", "Africa", "South America"]
    assert list(out["income_group"]) == ["High income", "Lower middle income", "Upper middle income"]
    dropped = add_geo_columns(pd.DataFrame({"country": ["France", "Narnia"]}), country_col="country",
                              on_unmatched="drop")
    assert list(dropped["country_iso3"]) == ["FRA"]


def test_add_geo_columns_from_coordinates():
    df = pd.DataFrame({"lat": [48.85, -33.92, 35.68], "lon": [2.35, 18.42, 139.69]})
    out = add_geo_columns(df, lat_col="lat", lon_col="lon")
    assert list(out["country_iso3"]) == ["FRA", "ZAF", "JPN"]
    with pytest.raises(InputError, match="coordinates in no country"):
        add_geo_columns(pd.DataFrame({"lat": [0.0], "lon": [-30.0]}), lat_col="lat", lon_col="lon")


def test_country_groups_region_income_group_continent():
    g = country_groups(["FRA", "NGA", "XKX"])
    assert list(g["region"]) == ["Europe & Central Asia", "Sub-Saharan Africa", "Europe & Central Asia"]
    assert list(g["continent"]) == ["Europe", "Africa", "Europe"]


def test_indicator_shipped_gdp_offline_and_others_through_mocked_wbgapi(monkeypatch):
    t, prov = indicator("NY.GDP.PCAP.CD", offline=True)
    assert t.loc["FRA", "value"] == pytest.approx(gdp_per_capita().loc["FRA", "gdp_per_capita_usd"])
    assert "snapshot" in prov
    with pytest.raises(GeoauditError, match="NY.GDP.PCAP.PP.CD is not shipped"):
        indicator("NY.GDP.PCAP.PP.CD", offline=True)

    import wbgapi

    calls = []

    def fake_fetch(code, economy="all", skipAggs=True, numericTimeKeys=True):
        calls.append(code)
        yield from [{"value": 58000.0, "series": code, "economy": "FRA", "aggregate": False, "time": 2022},
                    {"value": 59000.0, "series": code, "economy": "FRA", "aggregate": False, "time": 2023},
                    {"value": 6000.0, "series": code, "economy": "NGA", "aggregate": False, "time": 2022},
                    {"value": None, "series": code, "economy": "NGA", "aggregate": False, "time": 2023}]

    monkeypatch.setattr(wbgapi.data, "fetch", fake_fetch)
    t, prov = indicator("NY.GDP.PCAP.PP.CD")
    assert calls == ["NY.GDP.PCAP.PP.CD"]
    assert t.loc["FRA", "value"] == 59000.0 and t.loc["FRA", "year"] == 2023
    assert t.loc["NGA", "value"] == 6000.0 and t.loc["NGA", "year"] == 2022
    assert "wbgapi" in prov and "NY.GDP.PCAP.PP.CD" in prov
    out = add_geo_columns(pd.DataFrame({"c": ["FRA", "NGA"]}), country_col="c", indicator="NY.GDP.PCAP.PP.CD")
    assert out["ny_gdp_pcap_pp_cd"].tolist() == [59000.0, 6000.0]
    assert out["ny_gdp_pcap_pp_cd_year"].tolist() == [2023, 2022]


def test_income_bands_quantiles_and_edges():
    labels, med = income_bands([10, 20, 30, 40, 100, 200, 300, 400], bands=2)
    assert len(set(labels)) == 2 and labels[0] < labels[-1]
    assert med[0] == 25 and med[-1] == 250
    labels, med = income_bands([10, 20, 300, 400], bands=[100])
    assert list(med) == [15, 15, 350, 350]


def test_dollar_street_in_its_published_format(tmp_path):
    folder = save_parquet_folder(dollar_street(n_per_country=4), tmp_path / "ds")
    ds, fields = load_country_dataset(folder, preset_name="dollar-street")
    assert fields["label_col"] == "imagenet_sysnet_id" and fields["income_col"] == "income"
    assert sorted(set(ds["country_iso3"])) == ["BRA", "DEU", "FRA", "IND", "NGA", "USA"]
    assert ds.features["income"].dtype == "float32" and "gdp_year" in ds.column_names


def test_geode_in_its_published_format(tmp_path):
    folder = save_parquet_folder(geode(n_per_country=2), tmp_path / "geode", split="train")
    ds, fields = load_country_dataset(folder, preset_name="geode")
    assert fields["label_col"] == "object"
    assert sorted(set(ds["country_iso3"])) == ["GBR", "IDN", "IND", "ITA", "NGA", "TUR"]
    # GeoDE's own six regions are kept beside the World Bank's
    assert "WestAsia" in set(ds["dataset_region"]) and "Europe & Central Asia" in set(ds["region"])


def test_audit_dollar_street_by_country_income_band_household_and_topk():
    from geoaudit.audit import audit_classifier

    ds = add_geo_columns(dollar_street(n_per_country=30), country_col="country.id")
    model = intensity_model()
    rep, _frame = audit_classifier(model, ds, label_col="imagenet_sysnet_id", min_group_size=10)
    fit = rep.fits["model"]
    assert fit.beta > 0 and len(rep.groups) == 6
    acc = rep.groups.set_index("group")["accuracy"]
    assert acc["IND"] < acc["DEU"]
    rep5, _ = audit_classifier(model, ds, label_col="imagenet_sysnet_id", min_group_size=10, top_k=2)
    assert (rep5.groups["accuracy"] >= rep.groups["accuracy"]).all()
    assert rep5.groups["accuracy"].sum() > rep.groups["accuracy"].sum()
    bands, _ = audit_classifier(model, ds, label_col="imagenet_sysnet_id", group_by="income-band",
                                income_col="income", min_group_size=10)
    assert bands.settings["group"] == "income_band" and len(bands.groups) == 4
    house, _ = audit_classifier(model, ds, label_col="imagenet_sysnet_id", group_by="household",
                                income_col="income", household_col="place", min_group_size=5)
    assert len(house.groups) == 18
    for g in ("region", "continent", "income_group"):
        _r, f = audit_classifier(model, ds, label_col="imagenet_sysnet_id", group_by=g, min_group_size=10)
        # the group covariate is constant within each group
        assert (f.groupby(g)["gdp_per_capita_usd_geomean"].nunique() == 1).all()
    with pytest.raises(InputError, match="needs income_col"):
        audit_classifier(model, ds, label_col="imagenet_sysnet_id", group_by="income-band")


def test_geode_needs_a_label_map_and_uses_one():
    from geoaudit.audit import audit_classifier
    from geoaudit.models import label_map

    ds = add_geo_columns(geode(n_per_country=12), country_col="ip_country")
    with pytest.raises(InputError, match="The label map covers no class: none of the model's 1000 classes"):
        label_map(1000, ["bag", "car", "house"])
    auto = label_map(1000, sorted(set(ds["object"])))  # ImageNet-1k has a "stove" class, no "bag"
    assert auto.n_covered == 1 and "bag" in auto.uncovered
    mapping = {0: "bag", 1: "car", 2: "stove", 3: "tree", 4: "house"}
    rep, frame = audit_classifier(intensity_model(), ds, label_col="object", min_group_size=5, label_map=mapping)
    shown = np.array([np.asarray(im).mean() / 40 for im in ds["image"]]).round().astype(int)
    truth = np.array([list(mapping.values()).index(o) for o in ds["object"]])
    assert frame["correct"].tolist() == (shown == truth).astype(int).tolist()
    assert rep.model_info["model"]["label_map"].endswith("5 of 5 dataset classes")


def test_cli_predictions_with_a_country_column_grouped_by_continent_and_income_band(tmp_path, capsys):
    import json

    from geoaudit.cli import main

    rng = np.random.default_rng(0)
    countries = ["India", "Nigeria", "Brazil", "France", "United States", "Germany", "Japan", "Egypt"]
    n = 30
    label = rng.integers(0, 5, n * len(countries))
    right = np.concatenate([rng.random(n) < a for a in np.linspace(0.3, 0.9, len(countries))])
    pd.DataFrame({"label": label, "prediction": np.where(right, label, (label + 1) % 5),
                  "country": np.repeat(countries, n), "income": rng.lognormal(6, 1, len(label))}).to_csv(
        tmp_path / "p.csv", index=False)
    assert main(["audit", str(tmp_path / "p.csv"), "--country-col", "country", "--min-group-size", "5",
                 "--out", str(tmp_path / "by_country")]) == 0
    rep = json.loads((tmp_path / "by_country" / "report.json").read_text())
    assert "covariate: World Bank" in json.dumps(rep) and "years" in json.dumps(rep)
    assert main(["audit", str(tmp_path / "p.csv"), "--country-col", "country", "--group-by", "continent",
                 "--min-group-size", "5", "--out", str(tmp_path / "by_continent")]) == 0
    assert "accuracy by 'continent'" in capsys.readouterr().out
    assert main(["audit", str(tmp_path / "p.csv"), "--group-by", "income-band", "--income-col", "income",
                 "--min-group-size", "5", "--out", str(tmp_path / "by_band")]) == 0
    assert "accuracy by 'income_band' against ln 'income_band_median'" in capsys.readouterr().out


def test_list_labels_stored_as_text_in_a_csv():
    import datasets

    from geoaudit.audit._external import _label_values

    ds = datasets.Dataset.from_dict({"y": ['["n01440764", "n01443537"]', "['n01484850']", "n01491361"]})
    assert _label_values(ds, "y") == [["n01440764", "n01443537"], ["n01484850"], ["n01491361"]]


def test_audit_classifier_adds_gdp_to_a_split_with_only_country_codes():
    from geoaudit.audit import audit_classifier

    ds = dollar_street(n_per_country=20)
    ds = ds.add_column("country_iso3", list(country_codes(ds["country.id"])))
    rep, _frame = audit_classifier(intensity_model(), ds, label_col="imagenet_sysnet_id", group_by="continent",
                                  min_group_size=5)
    assert set(rep.groups["group"]) == {"Asia", "Africa", "South America", "Europe", "North America"}
    assert rep.model_info["model"]["covariate_years"]
