"""E2GAN on real photos with classical-editor concepts: LoRA on crucial layers vs full fine-tuning vs pix2pix.

Usage: python bench/e2gan.py [--preset cpu|gpu|tiny] [--data DIR] [--out bench/results/e2gan]
                             [--threads N] [--device cpu]

1. Images: facades photos (``facades/A/train`` for training, ``facades/A/test`` for the held-out
   evaluation images; the test photos are only evaluated on, never used to choose anything) plus square
   crops of the SinGAN images (crops of different source images for training and evaluation).
2. Pairs: every classical editor (10 concepts) edits every image (``make_pairs``, resumable).
3. Base concepts: 3 concepts are held out as "new" concepts; of the other 7, K-means over the per-concept
   mean image embeddings (the weight-free ``stats`` encoder) picks 6 for the base model. The one left
   over is the concept the LoRA rank search runs on (ranks searched on a concept the base has not seen,
   then reused for the held-out ones, as in the paper).
4. For each held-out concept, each for the same number of epochs on the same pairs:
   (a) LoRA on the crucial layers (sampling layers + transformer block) with the searched ranks,
   (b) full fine-tuning of the base, (c) pix2pix ResNet-9 from scratch (same width, same GAN + L1 loss),
   and (d) LoRA on N pairs chosen by K-means over the base model's bottleneck features vs N random pairs,
   given as many steps as (a) and repeated over seeds.
5. Evaluation: PSNR/SSIM against the editor's output on the held-out images (FID needs Inception weights,
   which are not here), trainable parameters, adapter bytes, training seconds, MACs and ONNX Runtime
   latency at 256x256 (batch 1, median). Writes ``results.json``, ``report.md`` and one sample grid per
   concept (input, editor, LoRA, full fine-tune, pix2pix). Every stage is resumable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table
from torch import nn

import edgegan
from edgegan.data.images import list_images
from edgegan.data.shared import shared_data
from edgegan.e2gan.editors import CLASSICAL
from edgegan.e2gan.image_encoder import StatsImageEncoder
from edgegan.e2gan.pairs import make_pairs
from edgegan.e2gan.text import CachedTextEncoder, HFTextEncoder, TinyTextEncoder
from edgegan.e2gan.train import (
    E2GANTrainConfig,
    build_discriminator,
    choose_base_concepts,
    evaluate,
    finetune,
    load_pairs,
    pretrain,
    rank_search,
    train_loop,
)
from edgegan.export.onnx import export_onnx
from edgegan.fileio import atomic_write_json
from edgegan.models import E2GANGenerator, ResnetGenerator
from edgegan.nn.lora import load_adapter, merge_lora
from edgegan.profile import machine_info, machine_line, onnx_latency, profile_macs
from edgegan.report import write_report

console = Console()
HELD_OUT = ("cartoon", "pencil", "cool")
PROFILE_SIZE = 256
GRID_IMAGES = 6
QUALITY_DB = 0.5  # "reaches the quality of": within this many dB
SELECT_DB = 0.1  # K-means vs random: differences this small are a tie (seed-to-seed noise is larger)

PRESETS: dict[str, dict[str, Any]] = {
    # 2-core CPU: about an hour. 64 px, base width 32 (the paper's is 64 at 256 px).
    "cpu": {
        "size": 64,
        "ngf": 32,
        "heads": 8,
        "batch": 4,
        "train_facades": 64,
        "eval_facades": 24,
        "crops": 4,
        "base_epochs": 10,
        "epochs": 8,
        "rank_every": 2,
        "select_n": 16,
        "seeds": 2,
        "fixed_ranks": [4, 16],
        "text": "default",
    },
    # A GPU: the paper's scale.
    "gpu": {
        "size": 256,
        "ngf": 64,
        "heads": 8,
        "batch": 4,
        "train_facades": 400,
        "eval_facades": 106,
        "crops": 8,
        "base_epochs": 50,
        "epochs": 30,
        "rank_every": 5,
        "select_n": 64,
        "seeds": 3,
        "fixed_ranks": [4, 16],
        "text": "default",
    },
    # Smoke run of the whole bench in about a minute.
    "tiny": {
        "size": 32,
        "ngf": 8,
        "heads": 2,
        "batch": 4,
        "train_facades": 12,
        "eval_facades": 4,
        "crops": 1,
        "base_epochs": 1,
        "epochs": 1,
        "rank_every": 1,
        "select_n": 4,
        "seeds": 1,
        "fixed_ranks": [2],
        "text": "tiny",
    },
}


class ImageOnly(nn.Module):
    """pix2pix's generator behind E2GAN's (image, text, mask) call, so it trains in the same loop."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(x)


def _square_crops(path: Path, n: int, size: int, seed: int) -> list[Image.Image]:
    """``n`` random square crops (at least half the short side) of one image, resized to ``size``."""
    img = Image.open(path).convert("RGB")
    rng = np.random.default_rng(seed)
    w, h = img.size
    crops = []
    for _ in range(n):
        side = int(rng.integers(min(w, h) // 2, min(w, h) + 1))
        left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crops.append(img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC))
    return crops


def prepare_images(data: Path, out: Path, p: dict[str, Any]) -> dict[str, list[Path]]:
    """Write the training and evaluation images (PNG, 256 px) into ``out`` once; returns their paths."""
    marker = out / "images.json"
    if marker.is_file():
        return {k: [Path(f) for f in v] for k, v in json.loads(marker.read_text()).items()}
    facades, singan = data / "facades" / "A", data / "singan" / "images"
    if not (facades / "train").is_dir() or not (facades / "test").is_dir() or not singan.is_dir():
        raise SystemExit(f"need {facades}/train, {facades}/test and {singan} (pass --data DIR)")
    sources = sorted(f for f in list_images(singan) if "_LR" not in f.name)
    n_eval_sources = max(1, len(sources) // 3)  # different scenes for evaluation than for training
    split = {"train": sources[n_eval_sources:], "eval": sources[:n_eval_sources]}
    files: dict[str, list[Path]] = {"train": [], "eval": []}
    counts = {"train": p["train_facades"], "eval": p["eval_facades"]}
    for part in ("train", "eval"):
        folder = out / part
        folder.mkdir(parents=True, exist_ok=True)
        photos = sorted(list_images(facades / ("train" if part == "train" else "test")), key=lambda f: f.name)
        for f in photos[: counts[part]]:
            dst = folder / f"facade_{f.stem}.png"
            Image.open(f).convert("RGB").resize((256, 256), Image.BICUBIC).save(dst)
            files[part].append(dst)
        for k, src in enumerate(split[part]):
            for j, crop in enumerate(_square_crops(src, p["crops"], 256, seed=k)):
                dst = folder / f"singan_{src.stem}_{j}.png"
                crop.save(dst)
                files[part].append(dst)
    atomic_write_json(marker, {k: [str(f) for f in v] for k, v in files.items()})
    return files


def _rank_line(rank: int, row: dict[str, Any], full: dict[str, Any]) -> str:
    share = 100 * row["trainable"] / full["trainable"]
    return (
        f"rank {rank}: {row['trainable']:,.0f} params ({share:.1f}% of full), "
        f"PSNR {row['psnr']:.2f} ({row['psnr'] - full['psnr']:+.2f} dB vs full)"
    )


def _holds(ok: bool) -> str:
    return "holds" if ok else "does not hold"


class FIDScorer:
    """FID of generated vs editor images when the Inception weights are found (``edgegan weights list``)."""

    def __init__(self, weights: Path | None) -> None:
        from edgegan.weights import available

        path, self.reason = available("inception-fid", weights)
        self.model = None
        if path is not None:
            from edgegan.metrics.inception import load_fid_inception

            self.model = load_fid_inception(path)

    @torch.no_grad()
    def __call__(self, model: nn.Module, data: Any, encoder: Any) -> float | None:
        if self.model is None:
            return None
        from edgegan.metrics.fid import fid_from_features
        from edgegan.metrics.inception import extract_features

        fakes = []
        for i in range(0, len(data), 16):
            t, mask = encoder.encode(data.prompts[i : i + 16])
            fakes.append(model(data.inputs[i : i + 16], t, mask))
        unit = [((x.float() + 1) / 2).clamp(0, 1) for x in (torch.cat(fakes), data.targets)]
        feats = [extract_features(self.model, u, batch_size=16) for u in unit]
        return float(fid_from_features(feats[1], feats[0]).value)


def _done(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _pix2pix(cfg: E2GANTrainConfig, pairs: Path, concept: str, out: Path, encoder: Any) -> dict[str, Any]:
    """pix2pix ResNet-9 from scratch on the concept's pairs, in the same loop, loss and epochs as E2GAN."""
    done = _done(out / "summary.json")
    if done is not None:
        return done
    data = load_pairs(pairs, [concept], cfg.size)
    train, val = data.split(cfg.val_fraction, cfg.seed)
    net = ImageOnly(ResnetGenerator(ngf=cfg.ngf, n_blocks=9))
    info = {"recipe": "pix2pix"}
    result = train_loop(net, build_discriminator(cfg), train, val, encoder, out, cfg, run_info=info, resume=True)
    net.generator.eval().save(out / "generator")
    summary = {k: v for k, v in result.items() if k != "history"} | {"generator": str(out / "generator")}
    atomic_write_json(out / "summary.json", summary)
    return summary


def _finetune(out: Path, **kwargs: Any) -> dict[str, Any]:
    return _done(out / "summary.json") or finetune(out=out, resume=True, **kwargs)


def _lora_model(base_dir: Path, adapter: Path) -> E2GANGenerator:
    model = edgegan.load(base_dir)
    load_adapter(model, adapter)
    return model.eval()


def _costs(name: str, model: nn.Module, example: Any, onnx_dir: Path, threads: int) -> dict[str, Any]:
    macs = profile_macs(model.eval(), example)
    path = onnx_dir / f"{name}.onnx"
    if not path.is_file():
        export_onnx(model, path, example=example)
    feed = tuple(t.numpy() for t in example) if isinstance(example, tuple) else example.numpy()
    ms = onnx_latency(path, feed, warmup=3, repeats=15, threads=threads).median_ms
    return {"macs": macs.macs, "params": sum(p.numel() for p in model.parameters()), "latency_ms": ms}


def main() -> None:  # noqa: C901 - a bench reads best top to bottom
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--data", type=Path, default=None, help="folder with facades/ and singan/ (default: shared data)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/e2gan"))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weights", type=Path, default=None, help="folder or file with the FID Inception weights")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    p = PRESETS[args.preset]
    data = args.data or (shared_data("facades") or Path("missing")).parent
    out: Path = args.out
    work = out / "runs"
    t_start = time.perf_counter()

    console.log("images: facades photos + SinGAN crops")
    images = prepare_images(data, work / "images", p)
    console.log(f"{len(images['train'])} training and {len(images['eval'])} evaluation images")

    concepts = {name: (editor, editor.prompt) for name, editor in CLASSICAL.items()}
    pairs_train, pairs_eval = work / "pairs" / "train", work / "pairs" / "eval"
    console.log("pairs: every classical editor on every image (resumable)")
    make_pairs(images["train"], concepts, pairs_train, size=p["size"])
    make_pairs(images["eval"], {c: concepts[c] for c in HELD_OUT}, pairs_eval, size=p["size"])

    candidates = [c for c in CLASSICAL if c not in HELD_OUT]
    choice = _done(work / "base_concepts.json")
    if choice is None:
        choice = choose_base_concepts(pairs_train, candidates, len(candidates) - 1, StatsImageEncoder(), size=p["size"])
        atomic_write_json(work / "base_concepts.json", choice)
    base_concepts = choice["chosen"]
    search_concept = next(c for c in candidates if c not in base_concepts)
    console.log(f"base concepts (K-means, stats embeddings): {base_concepts}; rank search on {search_concept!r}")

    text = TinyTextEncoder() if p["text"] == "tiny" else HFTextEncoder()
    encoder = CachedTextEncoder(text, work / "text_cache")
    cfg = E2GANTrainConfig(
        ngf=p["ngf"], ndf=p["ngf"], heads=p["heads"], size=p["size"], batch_size=p["batch"], epochs=p["epochs"]
    )

    base_sum = _done(work / "base" / "summary.json")
    if base_sum is None:
        console.log(f"pretraining the base model on {len(base_concepts)} concepts, {p['base_epochs']} epochs")
        base_cfg = dataclasses.replace(cfg, epochs=p["base_epochs"])
        base_sum = pretrain(pairs_train, base_concepts, work / "base", base_cfg, encoder, resume=True)
    base_dir = work / "base" / "base"

    ranks_rec = _done(work / "ranks" / "ranks.json")
    if ranks_rec is None:
        shutil.rmtree(work / "ranks", ignore_errors=True)  # an interrupted search restarts (it is short)
        console.log(f"LoRA rank search on {search_concept!r} (rank 1, doubling every {p['rank_every']} epochs)")
        ranks_rec = rank_search(
            base_dir,
            pairs_train,
            [search_concept],
            work / "ranks",
            dataclasses.replace(cfg, epochs=p["rank_every"]),
            encoder,
            every=p["rank_every"],
        )
    ranks = {k: int(v) for k, v in ranks_rec["ranks"].items()}

    runs: dict[str, dict[str, Any]] = {}
    n_train = None
    for concept in HELD_OUT:
        folder = work / "ft" / concept
        common = {"base_dir": base_dir, "pairs_dir": pairs_train, "concept": concept, "encoder": encoder}
        r: dict[str, Any] = {}
        console.log(f"{concept}: LoRA (searched ranks), full fine-tune, pix2pix from scratch, {p['epochs']} epochs")
        r["lora"] = _finetune(folder / "lora", cfg=cfg, mode="lora", ranks=ranks, **common)
        r["full"] = _finetune(folder / "full", cfg=cfg, mode="full", **common)
        r["pix2pix"] = _pix2pix(cfg, pairs_train, concept, folder / "pix2pix", encoder)
        for rank in p["fixed_ranks"]:  # how quality grows with the rank, next to the searched ranks
            fixed = {n: rank for n in ranks}
            r[f"rank{rank}"] = _finetune(folder / f"lora_rank{rank}", cfg=cfg, mode="lora", ranks=fixed, **common)
        n_train = r["lora"]["train_pairs"]
        # equal steps: N pairs for as many optimiser steps as (a) took on all of them
        sel_epochs = max(1, round(p["epochs"] * n_train / p["select_n"]))
        for how in ("kmeans", "random"):
            for s in range(p["seeds"]):
                r[f"{how}{s}"] = _finetune(
                    folder / f"lora_{how}{p['select_n']}_seed{s}",
                    cfg=dataclasses.replace(cfg, epochs=sel_epochs, seed=s),
                    mode="lora",
                    ranks=ranks,
                    select=p["select_n"],
                    selection=how,
                    **common,
                )
        runs[concept] = r

    console.log("evaluating on the held-out images against the editor's outputs")
    base = edgegan.load(base_dir).eval()
    fid = FIDScorer(args.weights)
    quality: dict[str, dict[str, dict[str, float | None]]] = {}
    grids: dict[str, list[list[torch.Tensor]]] = {}
    for concept, r in runs.items():
        test = load_pairs(pairs_eval, [concept], p["size"])
        models: dict[str, nn.Module] = {
            "lora": _lora_model(base_dir, Path(r["lora"]["adapter"])),
            "full": edgegan.load(r["full"]["generator"]).eval(),
            "pix2pix": ImageOnly(edgegan.load(r["pix2pix"]["generator"])).eval(),
            "base (no fine-tune)": base,
        }
        for key in r:
            if key.startswith(("kmeans", "random", "rank")):
                models[key] = _lora_model(base_dir, Path(r[key]["adapter"]))
        quality[concept] = {name: evaluate(m, test, encoder) for name, m in models.items()}
        for name, m in models.items():
            quality[concept][name]["fid"] = fid(m, test, encoder)
        with torch.no_grad():
            k = min(GRID_IMAGES, len(test))
            t, mask = encoder.encode(test.prompts[:k])
            x = test.inputs[:k]
            rows = [x, test.targets[:k], *(models[m](x, t, mask) for m in ("lora", "full", "pix2pix"))]
        grids[concept] = [[img.clamp(-1, 1) for img in row] for row in rows]

    console.log(f"MACs, params and ONNX Runtime latency at {PROFILE_SIZE}x{PROFILE_SIZE}")
    threads = torch.get_num_threads()
    e2gan_merged = merge_lora(_lora_model(base_dir, Path(runs[HELD_OUT[0]]["lora"]["adapter"])))
    tokens = encoder.encode([CLASSICAL[HELD_OUT[0]].prompt])[0]
    ex_e2gan = (torch.randn(1, 3, PROFILE_SIZE, PROFILE_SIZE), tokens)
    pix = edgegan.load(runs[HELD_OUT[0]]["pix2pix"]["generator"]).eval()
    paper = E2GANGenerator(ngf=64, text_dim=encoder.dim, heads=8).eval()
    costs = {
        "e2gan": _costs(f"e2gan_ngf{p['ngf']}", e2gan_merged, ex_e2gan, work / "onnx", threads),
        "pix2pix": _costs(f"pix2pix_ngf{p['ngf']}", pix, ex_e2gan[0], work / "onnx", threads),
        "e2gan_paper_width": _costs("e2gan_ngf64", paper, ex_e2gan, work / "onnx", threads),
    }

    def mean(key: str, field: str) -> float:
        return statistics.fmean(float(quality[c][key][field]) for c in HELD_OUT)

    def train_mean(key: str, field: str) -> float:
        return statistics.fmean(float(runs[c][key][field]) for c in HELD_OUT)

    seeds = range(p["seeds"])
    sel = {
        how: {
            "psnr": statistics.fmean(float(quality[c][f"{how}{s}"]["psnr"]) for c in HELD_OUT for s in seeds),
            "ssim": statistics.fmean(float(quality[c][f"{how}{s}"]["ssim"]) for c in HELD_OUT for s in seeds),
            "per_concept_psnr": {
                c: statistics.fmean(float(quality[c][f"{how}{s}"]["psnr"]) for s in seeds) for c in HELD_OUT
            },
        }
        for how in ("kmeans", "random")
    }
    lora_keys = ["lora", *(f"rank{r}" for r in p["fixed_ranks"])]
    summary_rows = {
        key: {
            "trainable": train_mean(key, "trainable"),
            "train_seconds": train_mean(key, "train_seconds"),
            "psnr": mean(key, "psnr"),
            "ssim": mean(key, "ssim"),
        }
        for key in lora_keys + ["full", "pix2pix"]
    }
    for key in lora_keys:
        summary_rows[key]["adapter_bytes"] = train_mean(key, "adapter_bytes")
    summary_rows["full"]["model_bytes"] = train_mean("full", "model_bytes")
    lo, fu, px = summary_rows["lora"], summary_rows["full"], summary_rows["pix2pix"]
    claim = {
        "lora_trainable_fraction_of_full": lo["trainable"] / fu["trainable"],
        "lora_minus_full_psnr_db": lo["psnr"] - fu["psnr"],
        "lora_minus_pix2pix_psnr_db": lo["psnr"] - px["psnr"],
        "lora_reaches_full": lo["psnr"] >= fu["psnr"] - QUALITY_DB,
        "lora_reaches_pix2pix": lo["psnr"] >= px["psnr"] - QUALITY_DB,
        "lora_train_time_fraction_of_full": lo["train_seconds"] / fu["train_seconds"],
        "lora_train_time_fraction_of_pix2pix": lo["train_seconds"] / px["train_seconds"],
        "kmeans_minus_random_psnr_db": sel["kmeans"]["psnr"] - sel["random"]["psnr"],
        "kmeans_beats_random": sel["kmeans"]["psnr"] > sel["random"]["psnr"] + SELECT_DB,
        "kmeans_random_tie": abs(sel["kmeans"]["psnr"] - sel["random"]["psnr"]) <= SELECT_DB,
        "quality_margin_db": QUALITY_DB,
    }
    info = machine_info(args.device)
    results = {
        "preset": args.preset,
        "settings": p,
        "held_out": list(HELD_OUT),
        "base_concepts": base_concepts,
        "rank_search_concept": search_concept,
        "ranks": ranks,
        "rank_search": ranks_rec,
        "train_pairs_per_concept": n_train,
        "eval_images": len(images["eval"]),
        "base": {k: v for k, v in base_sum.items() if k != "history"},
        "quality": quality,
        "summary": summary_rows,
        "selection": sel,
        "costs": costs,
        "claim": claim,
        "runs": {
            c: {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in r.items()} for c, r in runs.items()
        },
        "fid": "measured (quality[concept][method]['fid'])" if fid.model is not None else f"not measured: {fid.reason}",
        "machine": info,
        "machine_line": machine_line(info),
        "wall_s": time.perf_counter() - t_start,
    }
    atomic_write_json(out / "results.json", results)

    table = Table(title=f"E2GAN, held-out concepts {', '.join(HELD_OUT)} (mean), preset {args.preset}")
    for col in ("method", "trainable params", "stored bytes", "train s", "PSNR", "SSIM"):
        table.add_column(col, justify="right")
    labels = {"lora": "LoRA (searched ranks)", "full": "full fine-tune", "pix2pix": "pix2pix scratch"}
    labels |= {f"rank{r}": f"LoRA, rank {r} everywhere" for r in p["fixed_ranks"]}
    for key, label in labels.items():
        row = summary_rows[key]
        stored = row.get("adapter_bytes") or row.get("model_bytes") or costs["pix2pix"]["params"] * 4
        table.add_row(
            label,
            f"{row['trainable']:,.0f}",
            f"{stored:,.0f}",
            f"{row['train_seconds']:.1f}",
            f"{row['psnr']:.2f}",
            f"{row['ssim']:.4f}",
        )
    for how in ("kmeans", "random"):
        table.add_row(
            f"LoRA, {how} N={p['select_n']}", "", "", "", f"{sel[how]['psnr']:.2f}", f"{sel[how]['ssim']:.4f}"
        )
    console.print(table)
    verdict_select = _holds(claim["kmeans_beats_random"])
    if claim["kmeans_random_tie"]:
        verdict_select = f"does not hold: a tie within {SELECT_DB} dB"
    lines = [
        f"base: {p['ngf']}-wide 3RB+1TB on {', '.join(base_concepts)} ({p['base_epochs']} epochs, {p['size']} px); "
        f"held-out concepts {', '.join(HELD_OUT)}; {n_train} training pairs each; {p['epochs']} epochs for "
        f"LoRA, full fine-tune and pix2pix; evaluation on {len(images['eval'])} held-out images",
        f"searched ranks (on {search_concept!r}): {sorted(set(ranks.values()))} over {len(ranks)} crucial layers",
        "fixed ranks for comparison: "
        + "; ".join(_rank_line(r, summary_rows[f"rank{r}"], fu) for r in p["fixed_ranks"]),
        f"LoRA trains {100 * claim['lora_trainable_fraction_of_full']:.2f}% of the parameters of full fine-tuning, "
        f"in {100 * claim['lora_train_time_fraction_of_full']:.0f}% of its time "
        f"({100 * claim['lora_train_time_fraction_of_pix2pix']:.0f}% of pix2pix's)",
        f"claim: LoRA reaches full fine-tuning (within {QUALITY_DB} dB): {claim['lora_minus_full_psnr_db']:+.2f} dB "
        f"({'holds' if claim['lora_reaches_full'] else 'does not hold'}); reaches pix2pix from scratch: "
        f"{claim['lora_minus_pix2pix_psnr_db']:+.2f} dB ({_holds(claim['lora_reaches_pix2pix'])})",
        f"claim: K-means beats random at N={p['select_n']} (mean over {p['seeds']} seeds and 3 concepts, equal "
        f"steps): {claim['kmeans_minus_random_psnr_db']:+.2f} dB "
        f"({verdict_select})",
        f"ONNX Runtime at {PROFILE_SIZE}x{PROFILE_SIZE}: E2GAN ngf {p['ngf']} {costs['e2gan']['latency_ms']:.1f} ms "
        f"({costs['e2gan']['macs'] / 1e9:.2f} G MACs), pix2pix ngf {p['ngf']} {costs['pix2pix']['latency_ms']:.1f} ms "
        f"({costs['pix2pix']['macs'] / 1e9:.2f} G), E2GAN at the paper's width 64 "
        f"{costs['e2gan_paper_width']['latency_ms']:.1f} ms ({costs['e2gan_paper_width']['macs'] / 1e9:.2f} G)",
        "FID vs the editor's outputs: in results.json"
        if fid.model is not None
        else f"FID: not measured ({fid.reason}); quality is PSNR/SSIM against the editor's output",
    ]
    for line in lines:
        console.print(line)
    metrics: dict[str, Any] = {}
    for c in HELD_OUT:
        for m, q in quality[c].items():
            metrics[f"{c} {m} psnr"] = q["psnr"]
            metrics[f"{c} {m} ssim"] = q["ssim"]
    write_report(
        out,
        title=f"E2GAN: LoRA vs full fine-tuning vs pix2pix, preset {args.preset}",
        metrics=metrics,
        grids=grids,
        grid_labels={c: ["input", "editor", "E2GAN LoRA", "full fine-tune", "pix2pix"] for c in HELD_OUT},
        notes=[*lines, f"machine: {machine_line(info)}"],
    )
    console.print(f"machine: {machine_line(info)}; wrote {out / 'results.json'} and {out / 'report.md'}")


if __name__ == "__main__":
    main()
