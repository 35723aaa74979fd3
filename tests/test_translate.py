"""`edgegan translate` on tiny real models of every kind edgegan makes; outputs are checked against the models run
directly (no padding needed: equal; odd sizes: pad-reflect, run, crop), not only for their shapes."""

import copy

import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import edgegan
from edgegan.cli import app, main
from edgegan.compress.teacher import CycleGANConfig, train_cyclegan
from edgegan.data.images import load_image, save_image
from edgegan.e2gan.text import TinyTextEncoder
from edgegan.e2gan.train import apply_adapter
from edgegan.errors import ConfigError
from edgegan.export.onnx import export_onnx
from edgegan.nn.lora import add_lora, lora_layers, merge_lora, save_adapter
from edgegan.translate import load_translator, translate_paths

LEVEL = 2 / 255 + 1e-6  # one 8-bit level in [-1, 1]: the most a PNG round trip and float noise can move a pixel
ARCHS = {
    "resnet": ("resnet_generator", {"ngf": 4, "n_blocks": 1}, 4),
    "mobile": ("mobile_resnet_generator", {"ngf": 4, "n_blocks": 1}, 4),
    "depth_width": ("depth_width_generator", {"widths": [4] * 5, "hidden": [4] * 5, "depths": [0, 1, 1, 0, 0]}, 4),
    "unet": ("unet_generator", {"ngf": 4, "num_downs": 5}, 32),
}
PROMPT = "make it sepia"


def picture(gen, h, w):
    """Smooth colours plus fine texture (so that how the borders are padded shows in the outputs)."""
    coarse = torch.rand(1, 3, 4, 4, generator=gen) * 2 - 1
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    return (0.7 * smooth + 0.3 * (torch.rand(3, h, w, generator=gen) * 2 - 1)).clamp(-1, 1)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """a.png, b.png (32×32, no padding needed), odd.png (37×29, H×W), c.bmp (written as c.png), photo.jpg."""
    root = tmp_path_factory.mktemp("images")
    gen = torch.Generator().manual_seed(3)
    for name, (h, w) in {"a.png": (32, 32), "b.png": (32, 32), "odd.png": (37, 29), "c.bmp": (32, 32)}.items():
        save_image(picture(gen, h, w), root / name)
    save_image(picture(gen, 32, 32), root / "photo.jpg")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    out = {}
    for key, (arch, options, _) in ARCHS.items():
        torch.manual_seed(1)
        model = edgegan.build(arch, **options)
        out[key] = (model.eval(), model.save(root / key))
    return out


def direct(model, image, multiple):
    """The model on ``image`` [3, H, W]: reflect-padded at the bottom and right to ``multiple``, then cropped."""
    h, w = image.shape[-2:]
    x = F.pad(image[None], (0, (-w) % multiple, 0, (-h) % multiple), mode="reflect")
    with torch.no_grad():
        return model(x)[0, :, :h, :w]


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def refused(capsys, *args):
    """Run through the real entry point; the refusal must be exactly one `edgegan: error:` line, exit code 2."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("edgegan: error: "), err
    return err


@pytest.mark.parametrize("key", list(ARCHS))
def test_model_folders_match_the_model_run_directly(key, models, images, tmp_path):
    model, folder = models[key]
    multiple = ARCHS[key][2]
    code, output = cli("translate", folder, images, "--out", tmp_path / "out")
    assert code == 0, output
    assert "5 written, 0 skipped, 0 failed" in output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png", "odd.png", "photo.jpg"]
    a = load_image(images / "a.png")
    with torch.no_grad():
        plain = model(a[None])[0]  # 32×32 needs no padding: the model applied as is
    assert (load_image(tmp_path / "out" / "a.png") - plain).abs().max() <= LEVEL
    odd = load_image(images / "odd.png")
    got = load_image(tmp_path / "out" / "odd.png")
    assert got.shape == odd.shape == (3, 37, 29)
    assert (got - direct(model, odd, multiple)).abs().max() <= LEVEL
    # the Python API: the float outputs themselves
    translator = load_translator(folder)
    assert translator.multiple == multiple
    torch.testing.assert_close(translator(odd), direct(model, odd, multiple), atol=1e-5, rtol=0)
    torch.testing.assert_close(translator(a[None])[0], plain, atol=1e-5, rtol=0)


def test_batches_size_and_names(models, images, tmp_path):
    model, folder = models["resnet"]
    translator = load_translator(folder)
    one = translate_paths(translator, [images], tmp_path / "one")
    three = translate_paths(translator, [images], tmp_path / "three", batch_size=3)
    assert one.ok and three.ok and len(three.written) == 5
    for name in ("a.png", "b.png", "c.png", "odd.png"):  # the three 32×32 images ran as one batch
        x, y = load_image(tmp_path / "one" / name), load_image(tmp_path / "three" / name)
        assert (x - y).abs().max() <= LEVEL
    # --size resizes first (H×W) and the output keeps that size
    code, output = cli("translate", folder, images / "odd.png", "--out", tmp_path / "sized", "--size", "16x24")
    assert code == 0, output
    resized = load_image(images / "odd.png", size=(16, 24))
    got = load_image(tmp_path / "sized" / "odd.png")
    assert got.shape == (3, 16, 24) and (got - direct(model, resized, 4)).abs().max() <= LEVEL


def _cyclegan(root, out, direction):
    gen = torch.Generator().manual_seed(2)
    for i in range(2):
        save_image(picture(gen, 32, 32), root / "trainA" / f"a{i}.png")
        save_image(picture(gen, 32, 32).flip(0), root / "trainB" / f"b{i}.png")
    cfg = CycleGANConfig(
        generator_options={"ngf": 4, "n_blocks": 1}, ndf=4, n_layers_d=1, pool_size=2, load_size=32, crop_size=32,
        epochs=1, decay_epochs=0, direction=direction,
    )  # fmt: skip
    train_cyclegan(root, out, cfg)
    return out


@pytest.mark.parametrize("trained", ["AtoB", "BtoA"])
def test_cyclegan_run_both_directions(trained, images, tmp_path, capsys):
    run = _cyclegan(tmp_path / "data", tmp_path / "run", trained)
    odd = load_image(images / "odd.png")
    # --direction names the data's trainA/trainB; a run trained BtoA swapped them, so there G_B maps A to B
    expect = {"AtoB": "G_A", "BtoA": "G_B"} if trained == "AtoB" else {"AtoB": "G_B", "BtoA": "G_A"}
    outputs = {}
    for direction, name in expect.items():
        out = tmp_path / direction
        code, output = cli("translate", run, images / "odd.png", "--direction", direction, "--out", out)
        assert code == 0 and f"CycleGAN {name}" in output, output
        outputs[direction] = load_image(out / "odd.png")
        assert (outputs[direction] - direct(edgegan.load(run / name), odd, 4)).abs().max() <= LEVEL
    assert (outputs["AtoB"] - outputs["BtoA"]).abs().max() > 0.01  # two different generators
    assert "--direction" in refused(capsys, "translate", run, images / "a.png", "--out", tmp_path / "x")


def test_onnx_file_and_runtime_agree_with_torch(models, images, tmp_path, capsys):
    odd = load_image(images / "odd.png")
    for key in ("resnet", "unet"):
        model, folder = models[key]
        onnx = export_onnx(model, tmp_path / f"{key}.onnx", size=32).path
        from_file = load_translator(onnx)
        assert from_file.runtime == "onnx" and from_file.multiple == ARCHS[key][2]  # found by trial runs
        torch.testing.assert_close(from_file(odd), direct(model, odd, ARCHS[key][2]), atol=1e-4, rtol=0)
        exported = load_translator(folder, runtime="onnx")  # a model folder, run with ONNX Runtime
        torch.testing.assert_close(exported(odd), load_translator(folder)(odd), atol=1e-4, rtol=0)
    code, output = cli("translate", tmp_path / "resnet.onnx", images, "--out", tmp_path / "o", "--batch-size", "2")
    assert code == 0 and "5 written" in output, output
    ref = tmp_path / "ref"
    assert cli("translate", models["resnet"][1], images, "--out", ref)[0] == 0
    for name in ("a.png", "odd.png", "c.png"):
        assert (load_image(tmp_path / "o" / name) - load_image(ref / name)).abs().max() <= LEVEL
    refused(capsys, "translate", tmp_path / "resnet.onnx", images, "--out", tmp_path / "t", "--runtime", "torch")


@pytest.fixture(scope="module")
def e2gan(tmp_path_factory):
    """An E2GAN base (16-d text, like `--text-encoder tiny`), a LoRA adapter on its crucial layers with non-zero
    weights, a second base, and the adapter merged into a model folder."""
    root = tmp_path_factory.mktemp("e2gan")
    torch.manual_seed(4)
    base = edgegan.build("e2gan_generator", ngf=4, n_blocks=1, tb_after=1, text_dim=16, heads=2).eval()
    with torch.no_grad():
        base.head[-1].weight.normal_(0, 0.05)  # a trained base is no longer its zero-initialised identity
    base.save(root / "base")
    tuned = copy.deepcopy(base)
    add_lora(tuned, {name: 2 for name in tuned.crucial_layers()["sampling"]})
    with torch.no_grad():
        for layer in lora_layers(tuned).values():
            layer.lora_B.normal_(0, 0.3)
    save_adapter(tuned, root / "adapter", extra={"prompt": PROMPT, "base": str((root / "base").resolve())})
    merge_lora(tuned).save(root / "merged")
    torch.manual_seed(5)
    edgegan.build("e2gan_generator", ngf=4, n_blocks=1, tb_after=1, text_dim=16, heads=2).save(root / "other")
    return root


def test_e2gan_adapter_base_prompt(e2gan, images, tmp_path, capsys):
    odd, a = load_image(images / "odd.png"), load_image(images / "a.png")
    enc = TinyTextEncoder()
    out = tmp_path / "out"
    args = ["translate", e2gan / "adapter", images / "odd.png", images / "a.png", "--text-encoder", "tiny"]
    code, output = cli(*args, "--base", e2gan / "base", "--out", out)
    assert code == 0 and "2 written" in output, output
    for name, x in (("odd.png", odd), ("a.png", a)):
        expected = apply_adapter(e2gan / "base", e2gan / "adapter", x, PROMPT, enc)  # E2GAN's own apply
        assert load_image(out / name).shape == x.shape
        assert (load_image(out / name) - expected).abs().max() <= LEVEL
    with_adapter = load_translator(e2gan / "adapter", text_encoder="tiny")  # the base the adapter records
    plain = load_translator(e2gan / "base", prompt=PROMPT, text_encoder="tiny")
    merged = load_translator(e2gan / "merged", prompt=PROMPT, text_encoder="tiny")
    y = with_adapter(odd)
    torch.testing.assert_close(y, apply_adapter(e2gan / "base", e2gan / "adapter", odd, PROMPT, enc), atol=1e-5, rtol=0)
    assert (y - plain(odd)).abs().max() > 0.01  # the adapter changes the output
    torch.testing.assert_close(merged(odd), y, atol=1e-4, rtol=0)
    onnx = load_translator(e2gan / "adapter", text_encoder="tiny", runtime="onnx")
    torch.testing.assert_close(onnx(odd), y, atol=1e-4, rtol=0)
    # refused, in one line each: an adapter made for another base, another prompt, no prompt, a text size mismatch
    err = refused(capsys, *args, "--base", e2gan / "other", "--out", tmp_path / "x")
    assert "trained on the base" in err
    err = refused(capsys, *args, "--prompt", "make it snowy", "--out", tmp_path / "x")
    assert "make it sepia" in err and "--any-prompt" in err
    assert cli(*args, "--prompt", "make it snowy", "--any-prompt", "--out", tmp_path / "snow")[0] == 0
    assert "--prompt" in refused(capsys, "translate", e2gan / "merged", images / "a.png", "--out", tmp_path / "x")
    with pytest.raises(ConfigError, match="16-d text"):
        load_translator(e2gan / "merged", prompt=PROMPT, text_encoder=TinyTextEncoder(dim=8))
    assert not (tmp_path / "x").exists()


def test_existing_outputs_are_skipped_unless_overwrite(models, images, tmp_path):
    model, folder = models["mobile"]
    out = tmp_path / "out"
    assert cli("translate", folder, images / "a.png", images / "b.png", "--out", out)[0] == 0
    save_image(torch.full((3, 32, 32), -1.0), out / "a.png")  # a stand-in the rerun must not touch
    sentinel = (out / "a.png").read_bytes()
    code, output = cli("translate", folder, images / "a.png", images / "b.png", "--out", out)
    assert code == 0 and "0 written, 2 skipped" in output, output
    assert (out / "a.png").read_bytes() == sentinel
    code, output = cli("translate", folder, images / "a.png", images / "b.png", "--out", out, "--overwrite")
    assert code == 0 and "2 written, 0 skipped" in output, output
    with torch.no_grad():
        assert (load_image(out / "a.png") - model(load_image(images / "a.png")[None])[0]).abs().max() <= LEVEL


def test_a_corrupt_image_fails_alone(models, images, tmp_path):
    model, folder = models["depth_width"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.png", "odd.png"):
        (inputs / name).write_bytes((images / name).read_bytes())
    (inputs / "garbage.png").write_bytes(b"not an image at all")
    (inputs / "cut.png").write_bytes((images / "b.png").read_bytes()[:200])  # a truncated PNG
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["translate", str(folder), str(inputs), "--out", str(out), "--batch-size", "4"])
    assert result.exit_code == 1, result.output
    err = result.stderr.splitlines()
    assert len(err) == 2 and all(line.startswith("edgegan: error: ") for line in err), err
    assert any("garbage.png" in line for line in err) and any("cut.png" in line for line in err)
    assert f"2 written, 0 skipped, 2 failed: {inputs / 'cut.png'}, {inputs / 'garbage.png'}" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "odd.png"]  # no partial or temporary files
    assert (load_image(out / "odd.png") - direct(model, load_image(images / "odd.png"), 4)).abs().max() <= LEVEL


@pytest.mark.parametrize(
    ("arch", "options", "words"),
    [
        ("patch_discriminator", {"ndf": 4, "n_layers": 1}, "discriminator"),
        ("mobile_resnet_supernet", {"ngf": 4, "n_blocks": 1}, "supernet"),
        ("depth_width_supernet", {"ngf": 4, "n_blocks": 1, "max_inserted": 1}, "supernet"),
        ("singan_generator", {"channels": 4}, "SETGAN"),
    ],
)
def test_non_generators_are_refused(arch, options, words, images, tmp_path, capsys):
    folder = edgegan.build(arch, **options).save(tmp_path / "model")
    assert words in refused(capsys, "translate", folder, images, "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_other_bad_models_and_options(models, images, tmp_path, capsys):
    run = tmp_path / "run"
    edgegan.build("resnet_generator", ngf=4, n_blocks=1).save(run / "best_generator")
    assert "best_generator" in refused(capsys, "translate", run, images, "--out", tmp_path / "o")  # a run folder
    refused(capsys, "translate", tmp_path / "missing", images, "--out", tmp_path / "o")
    folder = models["resnet"][1]
    assert "--prompt" in refused(capsys, "translate", folder, images, "--out", tmp_path / "o", "--prompt", "x")
    assert "--direction" in refused(capsys, "translate", folder, images, "--out", tmp_path / "o", "--direction", "AtoB")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "x.png").write_bytes((images / "a.png").read_bytes())
    assert "x.png" in refused(capsys, "translate", folder, tmp_path / "a", tmp_path / "b", "--out", tmp_path / "o")
    assert "replace" in refused(capsys, "translate", folder, tmp_path / "a", "--out", tmp_path / "a")
    if not torch.cuda.is_available():
        assert "cuda" in refused(capsys, "translate", folder, images, "--out", tmp_path / "o", "--device", "cuda")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        cuda = ["--device", "cuda", "--runtime", "onnx"]
        assert "CUDA" in refused(capsys, "translate", folder, images, "--out", tmp_path / "o", *cuda)
    assert not (tmp_path / "o").exists()
