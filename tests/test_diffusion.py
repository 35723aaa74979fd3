"""Diffusion editors end to end on tiny random pipelines built fully offline (no downloaded weights)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from edgegan.data import save_image
from edgegan.e2gan.editors import DiffusionEditor
from edgegan.e2gan.pairs import make_pairs
from edgegan.errors import ConfigError

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("cv2")

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _byte_chars() -> list[str]:
    """The printable stand-ins byte-level BPE uses for the 256 byte values (GPT-2/CLIP convention)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def _tokenizer(folder):
    """A CLIP tokenizer over a vocabulary written here: every byte, alone and word-final, with no merges."""
    chars = _byte_chars()
    vocab = {tok: i for i, tok in enumerate([*chars, *(c + "</w>" for c in chars), BOS, EOS])}
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)


def _parts(tmp_path, unet_in: int):
    torch.manual_seed(0)
    tok = _tokenizer(tmp_path / f"tok{unet_in}")
    text = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            max_position_embeddings=16,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.eos_token_id,
        )
    )
    vae = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
    )
    blocks = {"block_out_channels": (16, 32), "layers_per_block": 1, "cross_attention_dim": 16}
    blocks |= {"attention_head_dim": 2, "norm_num_groups": 8}
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=unet_in,  # InstructPix2Pix concatenates the image latents: 8 input channels
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        **blocks,
    )
    parts = {"vae": vae, "text_encoder": text, "tokenizer": tok, "unet": unet}
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=50, clip_sample=False, steps_offset=1)
    parts |= {"scheduler": scheduler, "safety_checker": None}
    parts |= {"feature_extractor": None, "requires_safety_checker": False}
    return parts, blocks


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    """Tiny random InstructPix2Pix, img2img and ControlNet-img2img pipelines, saved as local folders."""
    root = tmp_path_factory.mktemp("diffusion")
    parts8, _ = _parts(root, 8)
    diffusers.StableDiffusionInstructPix2PixPipeline(**parts8).save_pretrained(root / "ip2p")
    parts4, blocks = _parts(root, 4)
    diffusers.StableDiffusionImg2ImgPipeline(**parts4).save_pretrained(root / "sd")
    diffusers.ControlNetModel(
        conditioning_channels=3,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        conditioning_embedding_out_channels=(8, 8),
        **blocks,
    ).save_pretrained(root / "canny")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    gen = torch.Generator().manual_seed(3)
    for i in range(3):
        save_image(torch.rand(3, 20, 20, generator=gen) * 2 - 1, root / f"{i}.png")
    return sorted(root.glob("*.png"))


def test_instruct_pix2pix_from_a_local_folder_is_deterministic_and_keeps_size(pipelines):
    editor = DiffusionEditor("instruct-pix2pix", pipelines / "ip2p", steps=2)
    img = (np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8)  # not a multiple of 8
    a, b = editor(img, "make it snowy", seed=1), editor(img, "make it snowy", seed=1)
    c = editor(img, "make it snowy", seed=2)
    assert a.shape == img.shape and a.dtype == np.uint8 and np.isfinite(a).all()
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    batch = editor.edit_batch([img, img], ["make it snowy", "make it snowy"], [1, 2])
    assert np.abs(batch[0].astype(int) - a).max() <= 1 and np.abs(batch[1].astype(int) - c).max() <= 1


def test_img2img_and_controlnet_editors_run(pipelines):
    img = (np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8)
    sd = DiffusionEditor("img2img", pipelines / "sd", steps=2, strength=0.5)
    cn = DiffusionEditor("controlnet", pipelines / "sd", controlnet=pipelines / "canny", steps=2, strength=0.5)
    for editor in (sd, cn):
        out = editor(img, "watercolour", seed=0)
        assert out.shape == img.shape and np.array_equal(out, editor(img, "watercolour", seed=0))


def test_make_pairs_with_a_diffusion_editor_offline(pipelines, photos, tmp_path):
    editor = DiffusionEditor("instruct-pix2pix", pipelines / "ip2p", steps=2)
    result = make_pairs(photos, {"snow": (editor, "make it snowy")}, tmp_path / "pairs", size=16)
    assert result["pairs"] == {"snow": 3}
    assert len(list((tmp_path / "pairs" / "snow" / "B").glob("*.png"))) == 3
    again = make_pairs(photos, {"snow": (editor, "make it snowy")}, tmp_path / "pairs", size=16)
    assert again["skipped"] == 3 and again["pairs"] == {"snow": 0}
    batched = make_pairs(photos, {"snow": (editor, "make it snowy")}, tmp_path / "b", size=16, batch_size=2)
    assert batched["pairs"] == {"snow": 3}
    for p in photos:  # same seeds: batching changes nothing beyond float noise
        one, two = (
            np.asarray(Image.open(d / "snow" / "B" / f"{p.stem}.png")) for d in (tmp_path / "pairs", tmp_path / "b")
        )
        assert np.abs(one.astype(int) - two).max() <= 1


def test_cli_make_pairs_with_diffusion_and_clear_errors(pipelines, photos, tmp_path, capsys):
    from edgegan.cli import main

    base = ["e2gan", "make-pairs", "--images", str(photos[0].parent), "--out", str(tmp_path / "p"), "--size", "16"]
    ok = [*base, "--diffusion", "instruct-pix2pix", "--model", str(pipelines / "ip2p"), "--prompt", "snow"]
    assert main([*ok, "--steps", "2", "--batch-size", "2"]) == 0
    assert len(list((tmp_path / "p").glob("*/B/*.png"))) == 3
    assert main([*base, "--diffusion", "img2img", "--model", str(tmp_path / "absent"), "--prompt", "x"]) != 0
    assert "cannot load the img2img pipeline" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="needs --controlnet"):
        DiffusionEditor("controlnet", pipelines / "sd")
