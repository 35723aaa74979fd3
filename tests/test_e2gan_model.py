"""E2GAN's 3RB+1TB generator: the paper's size, text conditioning, masking, save/load, ONNX, crucial layers."""

import torch

import edgegan
from edgegan.export.onnx import export_onnx
from edgegan.models import E2GANGenerator
from edgegan.nn.lora import add_lora, merge_lora
from edgegan.profile.macs import profile_macs


def tiny(**kw):
    model = E2GANGenerator(ngf=8, text_dim=12, heads=2, **kw)
    with torch.no_grad():  # the residual head and the text FiLM start at zero (output = input): move them off it
        for name, p in model.named_parameters():
            if name.startswith(("head.", "up_film.", "skip_film.", "detail_film.")):
                p.normal_(0, 0.1)
    return model


def test_profile_at_256_matches_the_paper_within_3_percent():
    model = E2GANGenerator(detail=0)  # ngf 64, 3 residual blocks, one transformer block after the second
    report = profile_macs(model, model.example_input(256))
    assert abs(report.params / 7.1e6 - 1) < 0.03, report.params
    assert abs(report.macs / 23.6e9 - 1) < 0.03, report.macs


def test_the_detail_path_costs_what_the_docs_say():
    """The default generator adds a 32-wide, 5-layer full-resolution path: +2.5 G MACs (+10.7 %) at 256 px."""
    with_detail, without = E2GANGenerator(), E2GANGenerator(detail=0)
    a = profile_macs(with_detail, with_detail.example_input(256))
    b = profile_macs(without, without.example_input(256))
    per_pixel = 3 * 32 * 9 + 4 * 32 * 32 * 9 + 32 * 3 * 9  # the path's convs
    film = 384 * 2 * 32  # the text scale/shift, once per image
    assert a.macs - b.macs == per_pixel * 256 * 256 + film, (a.macs, b.macs)
    assert abs(a.macs / 26.18e9 - 1) < 0.01 and abs(a.params / 7.25e6 - 1) < 0.01, (a.macs, a.params)


def test_forward_is_text_conditioned_and_masks_padding():
    torch.manual_seed(0)
    model = tiny().eval()
    x = torch.rand(2, 3, 32, 24) * 2 - 1
    text = torch.randn(2, 5, 12)
    y = model(x, text)
    assert y.shape == x.shape and torch.isfinite(y).all() and y.abs().max() <= 1
    assert (model(x, torch.randn(2, 5, 12)) - y).abs().max() > 1e-4  # the text matters
    mask = torch.tensor([[True] * 3 + [False] * 2] * 2)
    padded = torch.cat([text[:, :3], torch.randn(2, 2, 12) * 100], 1)
    assert torch.allclose(model(x, padded, mask), model(x, text[:, :3]), atol=1e-5)  # padding is ignored


def test_save_load_onnx_and_lora_merge(tmp_path):
    torch.manual_seed(1)
    model = tiny().eval()
    x, text = torch.rand(1, 3, 32, 32) * 2 - 1, torch.randn(1, 6, 12)
    loaded = edgegan.load(model.save(tmp_path / "g")).eval()
    assert torch.equal(loaded(x, text), model(x, text))
    result = export_onnx(model, tmp_path / "g.onnx", example=(x, text))
    assert result.max_abs_diff < 1e-4

    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "g.onnx"))
    assert [i.name for i in sess.get_inputs()] == ["image", "text"]
    other = sess.run(None, {"image": torch.rand(2, 3, 40, 24).numpy(), "text": torch.randn(2, 3, 12).numpy()})[0]
    assert other.shape == (2, 3, 40, 24)  # batch, size and text length are dynamic

    parts = model.crucial_layers()
    assert parts["sampling"] == [
        "down.0.0",
        "down.1.0",
        "skip_film.proj",
        "up.0.0",
        "up.1.0",
        "up_film.0.proj",
        "up_film.1.proj",
    ]
    assert "transformer.cross_attn.k" in parts["transformer"] and "transformer.down" in parts["transformer"]
    layers = add_lora(model, {n: 2 for n in parts["sampling"] + parts["transformer"]})
    for layer in layers.values():
        with torch.no_grad():
            layer.lora_B.normal_(0, 0.1)
    want = model(x, text)
    merged = merge_lora(model)
    assert (merged(x, text) - want).abs().max() <= 1e-5


def test_a_model_saved_before_the_new_layout_loads_as_it_was(tmp_path):
    """Folders written before upsample/residual/film/input_skip/detail existed hold the paper's layout."""
    import json

    legacy = {"upsample": "transpose", "residual": False, "film": False, "input_skip": False, "detail": 0}
    old = tiny(**legacy).eval()
    folder = old.save(tmp_path / "old")
    meta = json.loads((folder / "config.json").read_text())
    for key in legacy:
        del meta["config"][key]
    (folder / "config.json").write_text(json.dumps(meta))
    loaded = edgegan.load(folder)
    x, text = torch.rand(1, 3, 32, 32) * 2 - 1, torch.randn(1, 4, 12)
    assert loaded.config.upsample == "transpose" and not loaded.config.residual
    assert torch.equal(loaded(x, text), old(x, text))
    assert edgegan.build("e2gan_generator", ngf=8, text_dim=12, heads=2).config.residual  # new models: new layout
