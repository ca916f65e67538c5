"""Models by name (timm, torchvision, transformers) with their own preprocessing, label maps, and
the input size of geoaudit checkpoints in audits.

Nothing is downloaded: every model is a tiny random-initialised configuration of its library
(timm ``test_resnet``, torchvision ``resnet18``/``mobilenet_v2`` with ``weights=None``, a
1-layer ViT and a 2-stage ResNet of transformers) whose weights the test saves to tmp_path.
"""
import numpy as np
import pytest
import torch

from geoaudit._errors import DependencyError, InputError
from geoaudit.models import ExternalModel, label_map, load_external, parse_spec


def _pil(h=40, w=50, seed=0):
    from PIL import Image

    return Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype("uint8"))


def _tensor(img):
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255


def test_unknown_prefix_lists_the_accepted_ones():
    with pytest.raises(InputError, match=r"Unknown model prefix 'keras' .*accepted prefixes: timm:, torchvision:, hf:"):
        load_external("keras:resnet50")
    with pytest.raises(InputError, match="accepted prefixes"):
        parse_spec("resnet50")
    assert parse_spec("torchvision:resnet50@IMAGENET1K_V1") == ("torchvision", "resnet50", "IMAGENET1K_V1")


def test_timm_model_with_weights_file_and_timm_preprocessing(tmp_path):
    timm = pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config

    net = timm.create_model("test_resnet", pretrained=False).eval()
    torch.save(net.state_dict(), tmp_path / "w.pth")
    m = load_external("timm:test_resnet", weights=tmp_path / "w.pth")
    assert isinstance(m, ExternalModel) and len(m.class_names) == 1000
    img = _pil(120, 90)
    ref_pre = create_transform(**resolve_data_config({}, model=net))(img)[None]
    ours_pre = m.preprocess(_tensor(img))
    assert ours_pre.shape == ref_pre.shape
    assert (ours_pre - ref_pre).abs().mean() < 0.02  # PIL vs tensor antialiasing only
    with torch.no_grad():
        assert torch.allclose(m(_tensor(img)), net(ours_pre), atol=1e-5)
    with pytest.raises(DependencyError, match="not on this machine"):
        load_external("timm:resnet18")


def test_torchvision_weights_versions_select_their_preprocessing(tmp_path):
    import torchvision

    net = torchvision.models.mobilenet_v2(weights=None).eval()
    torch.save(net.state_dict(), tmp_path / "mb.pth")
    v1 = load_external("torchvision:mobilenet_v2@IMAGENET1K_V1", weights=tmp_path / "mb.pth")
    v2 = load_external("torchvision:mobilenet_v2@IMAGENET1K_V2", weights=tmp_path / "mb.pth")
    assert v1.preprocess.resize == 256 and v2.preprocess.resize == 232
    x = torch.rand(1, 3, 300, 260)
    ref = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V2.transforms()(x)
    assert torch.allclose(v2.preprocess(x), ref, atol=1e-5)
    assert v1.class_names == torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    with pytest.raises(InputError, match="has no weights 'V9'"):
        load_external("torchvision:mobilenet_v2@V9", weights=tmp_path / "mb.pth")
    with pytest.raises(DependencyError, match="are not on this machine"):
        load_external("torchvision:mobilenet_v2@IMAGENET1K_V1")
    with pytest.raises(InputError, match="do not fit"):
        load_external("torchvision:resnet18", weights=tmp_path / "mb.pth")


def test_hf_vit_and_resnet_match_their_image_processor(tmp_path):
    tr = pytest.importorskip("transformers")
    cfg = tr.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=3, id2label={0: "bag", 1: "car", 2: "stove"},
                       label2id={"bag": 0, "car": 1, "stove": 2})
    vit = tr.ViTForImageClassification(cfg).eval()
    vit.save_pretrained(tmp_path / "vit")
    proc = tr.ViTImageProcessor(size={"height": 32, "width": 32})
    proc.save_pretrained(tmp_path / "vit")
    img = _pil()
    m = load_external(f"hf:{tmp_path / 'vit'}")
    assert m.class_names == ["bag", "car", "stove"]
    with torch.no_grad():
        ref = vit(**proc(images=img, return_tensors="pt")).logits
        assert torch.allclose(m(_tensor(img)), ref, atol=1e-4)

    rc = tr.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4)
    res = tr.ResNetForImageClassification(rc).eval()
    res.save_pretrained(tmp_path / "res")
    p2 = tr.ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.875)
    p2.save_pretrained(tmp_path / "res")
    m2 = load_external(f"hf:{tmp_path / 'res'}")
    assert m2.preprocess.resize == 73 and m2.preprocess.crop == (64, 64)
    with torch.no_grad():
        ref2 = res(**p2(images=img, return_tensors="pt")).logits
        assert torch.allclose(m2(_tensor(img)), ref2, atol=0.05)  # PIL vs tensor bicubic
    with pytest.raises(DependencyError, match="is not on this machine"):
        load_external(f"hf:{tmp_path / 'missing'}")


def test_label_map_by_wnid_name_index_and_explicit():
    from geoaudit.data import imagenet_classes

    wnids, _names = imagenet_classes()
    lm = label_map(1000, [wnids[0], wnids[5]])
    assert lm.map([0, 5, 7]).tolist() == [wnids[0], wnids[5], None]
    hf_names = ["tench, Tinca tinca", "goldfish, Carassius auratus"]
    lm = label_map(hf_names, ["goldfish", "tench"])
    assert lm.map([0, 1]).tolist() == ["tench", "goldfish"]
    lm = label_map(1000, ["vehicle", "fish"], mapping={"tench": "fish", "goldfish": "fish", 817: "vehicle"})
    assert lm.map([0, 1, 817, 3]).tolist() == ["fish", "fish", "vehicle", None]
    with pytest.raises(InputError, match="The label map covers no class"):
        label_map(["cat", "dog"], ["car", "bus"])


def test_audit_classifier_with_a_timm_model_by_name(tmp_path):
    timm = pytest.importorskip("timm")
    from geoaudit.audit import audit_classifier
    from geoaudit.data import add_geo_columns
    from tests._geo_fixtures import dollar_street

    net = timm.create_model("test_resnet", pretrained=False)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    from geoaudit.audit import predict_topk

    ds = add_geo_columns(dollar_street(n_per_country=5, size=16), country_col="country.id")
    model = load_external("timm:test_resnet", weights=tmp_path / "w.pth")
    top1 = predict_topk(model, ds, k=1)[:, 0]
    right = np.random.default_rng(1).random(len(ds)) < 0.6
    ds = ds.add_column("label", [int(p) if r else int(p + 1) % 1000 for p, r in zip(top1, right)])
    rep, frame = audit_classifier("timm:test_resnet", ds, weights=tmp_path / "w.pth", top_k=1,
                                  min_group_size=1, batch_size=8)
    info = rep.model_info["timm:test_resnet"]
    assert info["library"] == "timm" and info["top_k"] == 1 and list(info["input_size"]) == [160, 160]
    assert frame["correct"].tolist() == right.astype(int).tolist()
    _, frame5 = audit_classifier(model, ds, top_k=5, min_group_size=1)
    assert frame5["topk"].str.count(";").eq(4).all() and frame5["correct"].sum() >= right.sum()


def _checkpoint(tmp_path, size=32):
    from geoaudit.models import build_model, make_config, save_checkpoint

    model, _ = build_model("small_cnn", num_classes=3, image_size=size)
    cfg = make_config(arch="small_cnn", class_names=["a", "b", "c"], in_channels=3, image_size=size)
    return save_checkpoint(tmp_path / "ckpt", model, cfg), model


def _geo_split(size=64, n=40):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = {"image": [Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8")) for _ in range(n)],
            "label": list(rng.integers(0, 3, n)), "country_iso3": ["FRA", "NGA", "BRA", "IND"] * (n // 4),
            "gdp_per_capita_usd": [40000.0, 2000.0, 9000.0, 2300.0] * (n // 4)}
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"]),
                               "country_iso3": datasets.Value("string"),
                               "gdp_per_capita_usd": datasets.Value("float64")})
    return datasets.Dataset.from_dict(rows, features=feats)


def test_audit_model_reads_the_checkpoint_input_size_and_refuses_a_mismatch(tmp_path):
    from geoaudit.audit import audit_model, predict

    path, _ = _checkpoint(tmp_path, size=32)
    ds = _geo_split(size=64)
    rep, frame = audit_model(path, ds, min_group_size=1)
    from geoaudit.models import load_model

    model, _ = load_model(path)
    expected = predict(model, ds, image_size=32)
    assert frame["prediction"].tolist() == expected.tolist()
    assert rep.model_info["model"]["image_size"] == 32
    with pytest.raises(InputError, match="trained on 32-px images; auditing it at 224 px"):
        audit_model(path, ds, image_size=224, min_group_size=1)
    # load_model marks the module with its config, so a loaded module is checked too
    assert model.geoaudit_config["image_size"] == 32
    with pytest.raises(InputError, match="trained on 32-px images"):
        audit_model(model, ds, image_size=224, min_group_size=1)


def _bytes_to_unicode():
    """GPT-2/CLIP byte-level alphabet (for a tiny CLIP tokenizer vocabulary)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def make_tiny_clip(folder, image_size=32):
    """A random 1-layer CLIP with a byte-level tokenizer without merges, saved to ``folder``."""
    import json

    tr = pytest.importorskip("transformers")
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = tr.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    n = len(vocab)
    cfg = tr.CLIPConfig(
        text_config={"vocab_size": n, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": n - 2,
                         "eos_token_id": n - 1, "pad_token_id": n - 1},
        vision_config={"image_size": image_size, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32,
                           "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=8)
    torch.manual_seed(0)
    clip = tr.CLIPModel(cfg).eval()
    clip.save_pretrained(folder)
    proc = tr.CLIPProcessor(image_processor=tr.CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}), tokenizer=tok)
    proc.save_pretrained(folder)
    return clip, proc


def test_clip_zero_shot_matches_logits_per_image(tmp_path):
    clip, proc = make_tiny_clip(tmp_path / "clip")
    classes = ["bag", "car", "stove"]
    m = load_external(f"clip:{tmp_path / 'clip'}", class_names=classes)
    img = _pil(48, 40)
    with torch.no_grad():
        ref = clip(**proc(text=[f"a photo of a {c}." for c in classes], images=img, return_tensors="pt",
                          padding=True)).logits_per_image
        assert torch.allclose(m(_tensor(img)), ref, atol=1e-2, rtol=1e-2)
    with pytest.raises(InputError, match="zero-shot"):
        load_external(f"clip:{tmp_path / 'clip'}")


def test_audit_classifier_zero_shot_on_geode(tmp_path):
    from geoaudit.audit import audit_classifier
    from geoaudit.data import add_geo_columns
    from tests._geo_fixtures import geode

    make_tiny_clip(tmp_path / "clip", image_size=16)
    ds = add_geo_columns(geode(n_per_country=4, size=16), country_col="ip_country")
    rep, frame = audit_classifier(f"clip:{tmp_path / 'clip'}", ds, label_col="object", top_k=2, min_group_size=1)
    assert set(frame["prediction"]) <= {"bag", "car", "stove", "tree", "house"}
    assert rep.model_info[f"clip:{tmp_path / 'clip'}"]["label_map"].endswith("5 of 5 dataset classes")


def test_audit_model_gives_a_named_model_one_image_size(tmp_path):
    import torchvision

    from geoaudit.audit import predictions_frame
    from geoaudit.audit._predict import _resolve_models

    torch.save(torchvision.models.resnet18(weights=None, num_classes=3).state_dict(), tmp_path / "r.pth")
    m = load_external("torchvision:resnet18", weights=tmp_path / "r.pth", num_classes=3)
    items, size, _, _, _ = _resolve_models({"r18": m}, image_size=None, channels=3, class_names=None,
                                           model_info=None, device=None)
    assert size == 256  # the resize of torchvision's preprocessing; crop and normalisation follow inside
    ds = _geo_split(size=24, n=8)
    frame = predictions_frame(items, ds, image_size=size, class_names={"r18": ["a", "b", "c"]})
    assert len(frame) == 8 and frame["prediction"].between(0, 2).all()
