"""The shared foundation: validation, errors, atomic IO, countries and GDP, checkpoints, CLI."""
import json
import math
import re

import numpy as np
import pytest
import torch

from geoaudit import InputError
from geoaudit._io import atomic_write_json
from geoaudit._validation import check_columns, check_images, check_interval, check_labels, check_options
from geoaudit.cli import main
from geoaudit.data import country_table, gdp_per_capita, geo_features, imagenet_classes, load_boundaries
from geoaudit.train import build_model, load_model, make_config, read_config, save_checkpoint


def test_check_interval_messages():
    assert check_interval("eps", 0.5, 0, None, caller="PGD", closed="neither") == 0.5
    msg = "The 'eps' parameter of PGD must be a float in (0, inf). Got -1.0 instead."
    with pytest.raises(InputError, match=re.escape(msg)):
        check_interval("eps", -1.0, 0, None, caller="PGD", closed="neither")
    with pytest.raises(InputError, match="must be an int in"):
        check_interval("steps", 2.5, 1, None, caller="PGD", integer=True)
    with pytest.raises(InputError):
        check_interval("eps", float("nan"), 0, 1, caller="PGD")
    with pytest.raises(InputError):
        check_interval("flag", True, 0, 1, caller="X")


def test_check_options_and_columns():
    assert check_options("norm", "l2", ("l2", "linf"), caller="PGD") == "l2"
    with pytest.raises(InputError, match=r"one of 'l2', 'linf'\. Got 'l1' instead"):
        check_options("norm", "l1", ("l2", "linf"), caller="PGD")
    with pytest.raises(InputError, match=r"no column 'country'.*columns present: 'a', 'b'"):
        check_columns(["a", "b"], ["a", "country"], source="predictions.csv")


def test_check_images_and_labels():
    x = torch.rand(2, 3, 8, 8)
    assert check_images(x, caller="T") is x
    with pytest.raises(InputError, match=r"values in \[0, 1\]"):
        check_images(x * 2, caller="T")
    with pytest.raises(InputError, match="shape \\(N, C, H, W\\)"):
        check_images(x[0], caller="T")
    with pytest.raises(InputError, match="float"):
        check_images((x * 255).to(torch.uint8), caller="T")
    with pytest.raises(InputError, match="at least 64x64"):
        check_images(x, caller="PieAPP", min_size=64)
    y = torch.tensor([0, 3])
    assert check_labels(y, 2, caller="T", num_classes=4) is y
    with pytest.raises(InputError, match=r"shape \(3,\)"):
        check_labels(y, 3, caller="T")
    with pytest.raises(InputError, match=r"in \[0, 2\]"):
        check_labels(y, 2, caller="T", num_classes=3)


def test_atomic_json_never_writes_nan(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"a": np.float64(1.5), "b": np.arange(2)})
    assert json.loads(p.read_text()) == {"a": 1.5, "b": [0, 1]}
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "bad.json", {"x": float("nan")})
    assert not (tmp_path / "bad.json").exists()
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_gdp_snapshot_values():
    # spot values from SOURCES.md (2023)
    g = gdp_per_capita(2023)
    for iso3, value in {"USA": 81695, "DEU": 52746, "CHN": 12614, "BRA": 10044, "IND": 2485, "NGA": 1621}.items():
        assert round(g.loc[iso3, "gdp_per_capita_usd"]) == value
    assert "WLD" not in g.index  # aggregates are excluded
    latest = gdp_per_capita("latest")
    assert latest.loc["USA", "gdp_year"] == 2023
    assert math.isnan(latest.loc["PRK", "gdp_per_capita_usd"])  # no value at all: kept, NaN
    with pytest.raises(InputError, match="latest"):
        gdp_per_capita(1900)


def test_boundaries_map_natural_earth_codes_to_world_bank():
    b = load_boundaries("50m")
    codes = set(b["iso3"])
    assert {"FRA", "NOR", "XKX", "PSE", "SSD"} <= codes
    assert "-99" not in set(b.loc[b["name"].isin(["France", "Norway"]), "iso3"])


def test_country_table_points_lie_inside_their_country():
    from shapely.geometry import Point

    t = country_table()
    assert len(t) > 200 and t["iso3"].is_unique
    b = load_boundaries("50m").drop_duplicates("iso3").set_index("iso3")
    for iso3 in ["FRA", "NOR", "USA", "KHM", "BRA", "XKX", "IDN"]:
        row = t.set_index("iso3").loc[iso3]
        assert b.loc[iso3, "geometry"].contains(Point(row["longitude"], row["latitude"]))
    fra = t.set_index("iso3").loc["FRA"]
    assert 41 < fra["latitude"] < 51 and -5 < fra["longitude"] < 9  # mainland, not French Guiana
    assert np.allclose(t["log_gdp_per_capita"].dropna(), np.log(t["gdp_per_capita_usd"].dropna()))


def test_schema_and_imagenet_classes():
    wnids, names = imagenet_classes()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and names[999] == "toilet_tissue"
    assert len(set(names)) == 1000 and "crane_n02012849" in names and "crane_n03126707" in names
    f = geo_features(names)
    assert f["label"].num_classes == 1000
    assert "image" not in geo_features(names, with_image=False)


@pytest.mark.parametrize("arch,channels,size", [("small_cnn", 3, 32), ("lenet5", 1, 28), ("mlp7", 1, 28)])
def test_checkpoint_round_trip(tmp_path, arch, channels, size):
    model, source = build_model(arch, num_classes=4, in_channels=channels, image_size=size)
    cfg = make_config(arch=arch, class_names=list("abcd"), in_channels=channels, image_size=size,
                      normalization={"mean": [0.5] * channels, "std": [0.25] * channels},
                      weights_source=source, training={"method": "plain", "seed": 3})
    save_checkpoint(tmp_path / "ck", model, cfg)
    loaded, cfg2 = load_model(tmp_path / "ck")
    assert cfg2 == cfg and not loaded.training
    x = torch.rand(2, channels, size, size)
    model.eval()
    from geoaudit.train import NormalizedModel

    ref = NormalizedModel(model, [0.5] * channels, [0.25] * channels).eval()
    assert torch.allclose(loaded(x), ref(x))


def test_checkpoint_errors(tmp_path):
    model, _ = build_model("small_cnn", num_classes=3, image_size=32)
    cfg = make_config(arch="small_cnn", class_names=list("abc"), in_channels=3, image_size=32)
    save_checkpoint(tmp_path / "ck", model, cfg)
    with pytest.raises(InputError, match="holds a 'small_cnn' model, not 'lenet5'"):
        load_model(tmp_path / "ck", arch="lenet5")
    with pytest.raises(InputError, match="No geoaudit checkpoint"):
        load_model(tmp_path / "nothing")
    (tmp_path / "ck" / "weights.pt").write_bytes(b"garbage")
    with pytest.raises(InputError, match="Corrupt checkpoint weights"):
        load_model(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="Corrupt checkpoint config"):
        read_config(tmp_path / "ck")
    # weights of another architecture
    other, _ = build_model("lenet5", num_classes=3, in_channels=3, image_size=32)
    save_checkpoint(tmp_path / "ck2", other, cfg)
    with pytest.raises(InputError, match="do not fit a 'small_cnn' model"):
        load_model(tmp_path / "ck2")


def test_build_model_validation():
    with pytest.raises(InputError, match="'arch' parameter of build_model must be one of"):
        build_model("vgg", num_classes=3)
    with pytest.raises(InputError, match="'num_classes'"):
        build_model("small_cnn", num_classes=1)


def test_cli_help_and_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert main([]) == 2


def test_resolve_device_and_model_device():
    from geoaudit._device import model_device, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None, model=torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")  # no parameters
    with pytest.raises(InputError, match="'device' parameter"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_get_the_mode_open_would_give(tmp_path, mask, mode):
    import os

    from geoaudit._io import atomic_save, atomic_write_text

    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_save(tmp_path / "b.bin", lambda t: open(t, "wb").write(b"y"))
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("z")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.bin", "plain.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_check_flag_names_the_option():
    from geoaudit._validation import check_flag

    assert check_flag("--limit", None, 1) is None and check_flag("--limit", 3, 1) == 3
    with pytest.raises(InputError, match=r"^--limit must be at least 1, got 0\.$"):
        check_flag("--limit", 0, 1)
    with pytest.raises(InputError, match=r"^--quantile must be in \[0, 1\], got 1\.5\.$"):
        check_flag("--quantile", 1.5, 0, 1, integer=False)
    with pytest.raises(InputError, match="finite"):
        check_flag("--quantile", float("nan"), 0, 1, integer=False)
    assert main(["--threads", "0", "audit", "p.csv", "--out", "o"]) == 2


@pytest.mark.parametrize("argv,resumes", [
    (["audit", "p.csv", "--out", "o"], False),
    (["train", "--data", "d", "--out", "o"], True),
    (["demo", "--quick"], True),
])
def test_ctrl_c_promises_resume_only_where_the_command_resumes(monkeypatch, capsys, argv, resumes):
    import importlib

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(f"geoaudit.commands.{argv[0]}"), "run", interrupted)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert ("re-run the same command to resume" in err) is resumes
    assert ("does not resume" in err) is not resumes


def test_library_has_no_global_matplotlib_state():
    """Figures are drawn with matplotlib.figure.Figure only, never pyplot or a backend switch."""
    from pathlib import Path

    import geoaudit

    root = Path(geoaudit.__file__).parent
    files = [*root.glob("defenses/*.py"), *root.glob("report/*.py"), root / "demo.py",
             root / "commands" / "defend.py", root / "commands" / "demo.py", root / "data" / "_builtin.py"]
    offenders = [str(p.relative_to(root)) for p in files
                 if re.search(r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot",
                              p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_to_json_writes_frozen_results():
    from types import MappingProxyType

    from geoaudit._io import to_json
    from geoaudit.demo import DemoResult

    assert json.loads(to_json({"r": DemoResult({"a": {"b": [1, 2]}}), "m": MappingProxyType({"x": 1})})) == \
        {"r": {"a": {"b": [1, 2]}}, "m": {"x": 1}}
