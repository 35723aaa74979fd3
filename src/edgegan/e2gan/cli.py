"""``edgegan e2gan``: make pairs with an editor, pretrain the base model, fine-tune a concept (LoRA or full),
search LoRA ranks, study the crucial layers, apply an adapter."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from edgegan.cli_options import option_field, shared, with_shared_options
from edgegan.errors import ConfigError
from edgegan.progress import RunBar

app = typer.Typer(
    help="E2GAN: efficient editing GANs distilled from editors, adapted per concept with LoRA.", no_args_is_help=True
)
console = Console()

ENCODER_HELP = "Text encoder: 'default' (bundled all-MiniLM-L6-v2), 'tiny' (random, for tests) or a local folder."


def _encoder(spec: str, cache: Path | None = None) -> Any:
    from edgegan.e2gan.text import CachedTextEncoder, HFTextEncoder, TinyTextEncoder

    if spec == "tiny":
        enc: Any = TinyTextEncoder()
    elif spec == "default":
        enc = HFTextEncoder()
    else:
        enc = HFTextEncoder(spec)
    return CachedTextEncoder(enc, cache)


def _device(device: str) -> str:
    from edgegan.runs import check_device

    return check_device(device)


def _bar(label: str, total_epochs: int) -> RunBar:
    return RunBar(label, total_epochs, console=console)


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _picked(s: dict[str, Any]) -> str:
    """'epoch N (selected by last), val PSNR x dB, SSIM y' from a train_loop result or summary."""
    text = f"epoch {s['epoch']} (selected by {s['select_by']}), val PSNR {_num(s['val_psnr'])} dB"
    text += f", SSIM {_num(s['val_ssim'], '.4f')}"
    best = s.get("best_psnr_epoch")
    if best is not None and best != s["epoch"]:
        text += f" (best PSNR at epoch {best})"
    return text


EPOCHS_HELP = "Epochs at the learning rate (pix2pix's n_epochs)."
DECAY_HELP = "Epochs after --epochs with the learning rate falling linearly to 0 (pix2pix's n_epochs_decay)."
LR_HELP = "Learning rate of the generator's full weights and the discriminator (default 2e-4)."
LORA_LR_HELP = "Learning rate of the LoRA adapters (default 3e-3)."
DETAIL_LORA_LR_HELP = "Learning rate of the LoRA adapters on the full-resolution detail path (default 2e-3)."
LORA_BIAS_HELP = "LoRA adapters also learn a shift of each adapted layer's bias (a few k parameters)."
DETAIL_LR_HELP = "Learning rate of the generator's full-resolution detail path when it trains in full (default 1e-3)."
GAN_MODE_HELP = "Adversarial loss: vanilla (pix2pix's BCE), lsgan or hinge."
RECON_HELP = "Reconstruction loss: l1 (pix2pix's, per channel) or pixel_l1 (on each pixel's RGB error vector)."
SELECT_BY_HELP = "Model to keep: the last epoch's (pix2pix), or the best on the validation pairs by psnr or ssim."
DEVICE_HELP = "cpu or cuda[:N]."


@dataclasses.dataclass
class E2GANTraining:
    """The training options every E2GAN training command shares (a command restates one to change its default)."""

    size: int = option_field(256, "--size", help="Images are resized to SIZE x SIZE.")
    epochs: int = option_field(10, "--epochs", help=EPOCHS_HELP)
    epochs_decay: int = option_field(10, "--epochs-decay", help=DECAY_HELP)
    lr: float | None = option_field(None, "--lr", help=LR_HELP)
    detail_lr: float | None = option_field(None, "--detail-lr", help=DETAIL_LR_HELP)
    batch_size: int = option_field(1, "--batch-size")
    recon: str = option_field("l1", "--recon", help=RECON_HELP)
    gan_mode: str = option_field("vanilla", "--gan-mode", help=GAN_MODE_HELP)
    text_encoder: str = option_field("default", "--text-encoder", help=ENCODER_HELP)
    device: str = option_field("cpu", "--device", help=DEVICE_HELP)
    seed: int = option_field(0, "--seed")

    def config(
        self,
        ngf: int,
        *,
        lora_lr: float | None = None,
        detail_lora_lr: float | None = None,
        lora_bias: bool = True,
        select_by: str = "last",
    ) -> Any:
        """The run's E2GANTrainConfig (None: the config's default); bad values are one-line ConfigErrors. Checks
        the device too."""
        from edgegan.e2gan.train import E2GANTrainConfig

        self.device = _device(self.device)
        given = (
            ("lr", self.lr),
            ("lora_lr", lora_lr),
            ("detail_lr", self.detail_lr),
            ("detail_lora_lr", detail_lora_lr),
        )
        rates = {k: v for k, v in given if v is not None}
        return E2GANTrainConfig(
            size=self.size,
            ngf=ngf,
            ndf=ngf,
            batch_size=self.batch_size,
            epochs=self.epochs,
            epochs_decay=self.epochs_decay,
            select_by=select_by,
            lora_bias=lora_bias,
            recon=self.recon,
            gan_mode=self.gan_mode,
            seed=self.seed,
            **rates,
        )


@app.command("make-pairs")
def make_pairs_cmd(
    images: Path = typer.Option(..., "--images", help="Folder of input images."),
    out: Path = typer.Option(..., "--out", help="Pairs folder (rerun to resume)."),
    editor: list[str] = typer.Option([], "--editor", help="Classical editor name (repeatable; see --list), or 'all'."),
    diffusion: str | None = typer.Option(None, "--diffusion", help="instruct-pix2pix, img2img or controlnet."),
    model: str | None = typer.Option(None, "--model", help="Diffusion pipeline folder or hub id."),
    controlnet: str | None = typer.Option(None, "--controlnet", help="Canny ControlNet folder or id."),
    prompt: list[str] = typer.Option([], "--prompt", help="Concept prompt for the diffusion editor (repeatable)."),
    steps: int = typer.Option(20, "--steps"),
    guidance: float = typer.Option(7.5, "--guidance"),
    image_guidance: float = typer.Option(1.5, "--image-guidance"),
    strength: float = typer.Option(0.6, "--strength"),
    batch_size: int = typer.Option(1, "--batch-size", help="Images per diffusion pipeline call."),
    size: int = typer.Option(256, "--size", help="Square size of the pairs."),
    limit: int | None = typer.Option(None, "--limit", help="Use only the first N images."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device"),
    image_encoder: str | None = typer.Option(
        None, "--image-encoder", help="Drop failed edits: 'stats' (no weights) or a local CLIP vision folder."
    ),
    min_similarity: float = typer.Option(0.5, "--min-similarity", help="Keep edits with cos(input, edit) >= this."),
    list_editors: bool = typer.Option(False, "--list", help="List the classical editors and exit."),
) -> None:
    """Edit a folder of images with classical or diffusion editors into (input, edit) pairs per concept."""
    from edgegan.data.images import list_images
    from edgegan.e2gan.editors import CLASSICAL, DiffusionEditor, classical_editor
    from edgegan.e2gan.pairs import make_pairs

    if list_editors:
        for e in CLASSICAL.values():
            console.print(f"{e.name:10s} {e.prompt}")
        return
    _device(device)
    concepts: dict[str, Any] = {}
    names = list(CLASSICAL) if editor == ["all"] else editor
    for name in names:
        e = classical_editor(name)
        concepts[name] = (e, e.prompt)
    if diffusion is not None:
        if not prompt:
            raise ConfigError("--diffusion needs at least one --prompt")
        d = DiffusionEditor(
            diffusion,
            model,
            controlnet=controlnet,
            steps=steps,
            guidance=guidance,
            image_guidance=image_guidance,
            strength=strength,
            device=device,
        )
        for p in prompt:
            concepts[p] = (d, p)
    if not concepts:
        raise ConfigError("give --editor NAME (see --list) or --diffusion KIND --model PATH --prompt TEXT")
    similarity = None
    if image_encoder is not None:
        from edgegan.e2gan.image_encoder import cosine_similarity_fn
        from edgegan.e2gan.image_encoder import image_encoder as build_image_encoder

        similarity = cosine_similarity_fn(build_image_encoder(image_encoder, device=device))
    files = list_images(images)[: limit or None]
    total = len(files) * len(concepts)
    with _bar("edits", 1) as bar:
        result = make_pairs(
            files,
            concepts,
            out,
            size=size,
            seed=seed,
            similarity=similarity,
            min_similarity=min_similarity,
            batch_size=batch_size,
            progress=lambda done, _t: bar.update(1, done, total),
        )
    console.print(f"pairs: {result['pairs']}; dropped: {result['dropped']}; already done: {result['skipped']}")


@app.command("pretrain")
@with_shared_options
def pretrain_cmd(
    pairs: Path = typer.Option(..., "--pairs", help="Pairs folder from make-pairs."),
    concept: list[str] = typer.Option(
        [], "--concept", help="Concept for the base model (repeatable); with --pick, the candidates (default: all)."
    ),
    out: Path = typer.Option(..., "--out"),
    pick: int | None = typer.Option(None, "--pick", help="Choose N base concepts by K-means over image embeddings."),
    image_encoder: str = typer.Option("stats", "--image-encoder", help="For --pick: 'stats' or a CLIP folder."),
    ngf: int = typer.Option(64, "--ngf"),
    select_by: str = typer.Option("last", "--select-by", help=SELECT_BY_HELP),
    resume: bool = typer.Option(False, "--resume"),
    train: E2GANTraining = shared(E2GANTraining),
) -> None:
    """Train the multi-concept base generator (3RB+1TB)."""
    from edgegan.e2gan.train import pretrain

    cfg = train.config(ngf, select_by=select_by)
    if pick is not None:
        concept = _pick(pairs, concept, pick, image_encoder, train.seed)
    elif not concept:
        raise ConfigError("give --concept NAME (repeatable) or --pick N")
    enc = _encoder(train.text_encoder, out / "text_cache")
    with _bar("pretrain", cfg.total_epochs) as bar:
        s = pretrain(pairs, concept, out, cfg, enc, resume=resume, device=train.device, progress=bar.update)
    console.print(f"base model: {s['base']} ({s['params']:,} params); {_picked(s)}; {s['train_seconds']:.1f} s")


def _pick(pairs: Path, candidates: list[str], n: int, encoder_spec: str, seed: int) -> list[str]:
    from edgegan.e2gan.image_encoder import image_encoder
    from edgegan.e2gan.pairs import load_pairs_index
    from edgegan.e2gan.train import choose_base_concepts

    names = candidates or sorted(load_pairs_index(pairs)["concepts"])
    picked = choose_base_concepts(pairs, names, n, image_encoder(encoder_spec), seed=seed)["chosen"]
    console.print(f"base concepts (K-means over {encoder_spec} embeddings of the edits): {', '.join(picked)}")
    return picked


def _parse_ranks(spec: str, base: Path) -> dict[str, int] | None:
    if spec == "auto":
        # the rank search saves its result next to the base model for every later concept
        saved = base.parent / "ranks.json"
        if saved.is_file():
            console.print(f"LoRA ranks from {saved}")
            return {k: int(v) for k, v in json.loads(saved.read_text())["ranks"].items()}
        from edgegan.e2gan.train import DETAIL_RANK_SCALE

        console.print(
            "no rank search saved with the base model: rank 4 on the crucial layers "
            f"(the detail path's: {4 * DETAIL_RANK_SCALE}, capped at each conv's rank)"
        )
        return None
    path = Path(spec)
    if path.is_file():
        return {k: int(v) for k, v in json.loads(path.read_text())["ranks"].items()}
    try:
        return {k: int(v) for k, v in (item.split("=") for item in spec.split(","))}
    except ValueError:
        raise ConfigError(f"--lora must be auto, a ranks.json file or name=rank,... (got {spec!r})") from None


@app.command("finetune")
@with_shared_options
def finetune_cmd(
    base: Path = typer.Option(..., "--base", help="The pretrain run folder's base/ model."),
    pairs: Path = typer.Option(..., "--pairs"),
    concept: str = typer.Option(..., "--concept"),
    out: Path = typer.Option(..., "--out"),
    lora: str = typer.Option(
        "auto", "--lora", help="auto (the base's saved rank search, else rank 4), ranks.json or name=rank,..."
    ),
    full: bool = typer.Option(False, "--full", help="Fine-tune every weight instead of LoRA."),
    select: int | None = typer.Option(None, "--select", help="Keep N training pairs (K-means nearest-to-centre)."),
    selection: str = typer.Option("kmeans", "--selection", help="kmeans or random."),
    lora_lr: float | None = typer.Option(None, "--lora-lr", help=LORA_LR_HELP),
    detail_lora_lr: float | None = typer.Option(None, "--detail-lora-lr", help=DETAIL_LORA_LR_HELP),
    lora_bias: bool = typer.Option(True, "--lora-bias/--no-lora-bias", help=LORA_BIAS_HELP),
    select_by: str = typer.Option("last", "--select-by", help=SELECT_BY_HELP),
    resume: bool = typer.Option(False, "--resume"),
    train: E2GANTraining = shared(
        E2GANTraining,
        lr=typer.Option(
            None,
            "--lr",
            help="Learning rate of the discriminator and, with --full, of every generator weight (default 2e-4).",
        ),
    ),
) -> None:
    """Adapt the base model to a new concept; LoRA adapters on the crucial layers by default."""
    import edgegan
    from edgegan.e2gan.train import finetune

    cfg = train.config(
        edgegan.load(base).config.ngf,
        lora_lr=lora_lr,
        detail_lora_lr=detail_lora_lr,
        lora_bias=lora_bias,
        select_by=select_by,
    )
    enc = _encoder(train.text_encoder, out / "text_cache")
    ranks = None if full else _parse_ranks(lora, base)
    with _bar("finetune", cfg.total_epochs) as bar:
        s = finetune(
            base,
            pairs,
            concept,
            out,
            cfg,
            enc,
            mode="full" if full else "lora",
            ranks=ranks,
            select=select,
            selection=selection,
            resume=resume,
            device=train.device,
            progress=bar.update,
        )
    if s.get("feature_spread"):
        spread = s["feature_spread"]
        console.print(
            f"--select {select}: {s['train_pairs']} pairs by {s['selection']}; the base's stem features spread "
            f"{spread['relative_spread']:.3g} of their mean level (near 0: the images look alike to K-means)"
        )
    what = f"adapter {s['adapter']} ({s['adapter_bytes']:,} bytes)" if "adapter" in s else f"model {s['generator']}"
    console.print(f"{what}; {s['trainable']:,} trainable params; {_picked(s)}; {s['train_seconds']:.1f} s")


@app.command("rank-search")
@with_shared_options
def rank_search_cmd(
    base: Path = typer.Option(..., "--base"),
    pairs: Path = typer.Option(..., "--pairs"),
    concept: list[str] = typer.Option(..., "--concept", help="Sampled concept (repeatable)."),
    out: Path = typer.Option(..., "--out"),
    max_rank: int | None = typer.Option(None, "--max-rank"),
    max_params: float | None = typer.Option(
        None,
        "--max-params",
        help="Storage budget: the adapter's parameters as a fraction of the model's (0.02: 2%); the detail path's "
        "adapters take what the other layers' rank leaves.",
    ),
    min_margin: float = typer.Option(
        0.05, "--min-margin", help="dB floor of the margin (rank-1 seed-to-seed PSNR noise) a larger rank must beat."
    ),
    lora_lr: float | None = typer.Option(None, "--lora-lr", help=LORA_LR_HELP),
    detail_lora_lr: float | None = typer.Option(None, "--detail-lora-lr", help=DETAIL_LORA_LR_HELP),
    lora_bias: bool = typer.Option(True, "--lora-bias/--no-lora-bias", help=LORA_BIAS_HELP),
    train: E2GANTraining = shared(
        E2GANTraining,
        epochs=typer.Option(4, "--epochs", help=EPOCHS_HELP + " Every rank is a fresh adapter on this schedule."),
        epochs_decay=typer.Option(4, "--epochs-decay", help=DECAY_HELP),
    ),
) -> None:
    """Search LoRA ranks for the crucial layers over sampled concepts; writes OUT/ranks.json (rerun to resume)."""
    import edgegan
    from edgegan.e2gan.train import rank_search
    from edgegan.fileio import atomic_write_json

    cfg = train.config(
        edgegan.load(base).config.ngf, lora_lr=lora_lr, detail_lora_lr=detail_lora_lr, lora_bias=lora_bias
    )
    enc = _encoder(train.text_encoder, out / "text_cache")
    rec = rank_search(
        base,
        pairs,
        concept,
        out,
        cfg,
        enc,
        max_rank=max_rank,
        max_params=max_params,
        min_margin_db=min_margin,
        device=train.device,
        progress=lambda msg: console.print(f"training {msg} ({_plural(cfg.total_epochs, 'epoch')})"),
    )
    for name, c in rec["concepts"].items():
        by_rank = ", ".join(f"{t['rank']}: {t['val_psnr']:.2f}" for t in c["trail"])
        console.print(
            f"{name}: rank {c['rank']} (seed noise {c['noise_db']:.3f} dB, margin {c['margin_db']:.3f} dB; "
            f"val PSNR by rank {by_rank})"
        )
    share = 100 * rec["adapter_params"] / rec["model_params"]
    t = Table(title=f"searched LoRA ranks: {rec['adapter_params']:,} parameters ({share:.1f}% of the model)")
    t.add_column("layer")
    t.add_column("rank", justify="right")
    for name, r in rec["ranks"].items():
        t.add_row(name, str(r))
    console.print(t)
    atomic_write_json(base.parent / "ranks.json", rec)  # `finetune --lora auto` picks these up
    console.print(f"wrote {out / 'ranks.json'} and {base.parent / 'ranks.json'} (used by finetune --lora auto)")


@app.command("layer-study")
@with_shared_options
def layer_study_cmd(
    base: Path = typer.Option(..., "--base"),
    pairs: Path = typer.Option(..., "--pairs"),
    concept: str = typer.Option(..., "--concept"),
    out: Path = typer.Option(..., "--out"),
    select_by: str = typer.Option("last", "--select-by", help=SELECT_BY_HELP),
    resume: bool = typer.Option(False, "--resume"),
    train: E2GANTraining = shared(
        E2GANTraining,
        epochs=typer.Option(5, "--epochs", help=EPOCHS_HELP),
        epochs_decay=typer.Option(5, "--epochs-decay", help=DECAY_HELP),
    ),
) -> None:
    """Freeze each part (sampling layers, transformer block, residual blocks, first and last convs) in turn;
    report quality and size."""
    import edgegan
    from edgegan.e2gan.train import layer_study

    cfg = train.config(edgegan.load(base).config.ngf, select_by=select_by)
    enc = _encoder(train.text_encoder, out / "text_cache")
    rec = layer_study(base, pairs, concept, out, cfg, enc, resume=resume, device=train.device)
    t = Table(title=f"layer study: {concept} ({_plural(cfg.total_epochs, 'epoch')}, selected by {cfg.select_by})")
    for col in ("frozen", "trainable params", "val PSNR", "val SSIM"):
        t.add_column(col, justify="right")
    for frozen, r in rec["rows"].items():
        t.add_row(frozen, f"{r['trainable']:,}", _num(r["val_psnr"]), _num(r["val_ssim"], ".4f"))
    console.print(t)


@app.command("apply")
def apply_cmd(
    adapter: Path = typer.Argument(..., help="Adapter folder (or 'none' for the base model alone)."),
    image: Path = typer.Argument(..., help="Input image."),
    base: Path = typer.Option(..., "--base"),
    out: Path = typer.Option(..., "--out", help="Output image file."),
    prompt: str | None = typer.Option(None, "--prompt", help="Default: the adapter's concept prompt."),
    size: int | None = typer.Option(None, "--size", help="Resize the input to SIZE×SIZE first."),
    text_encoder: str = typer.Option("default", "--text-encoder", help=ENCODER_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
) -> None:
    """Edit one image with the base model plus a concept adapter."""
    from edgegan.data.images import load_image, save_image
    from edgegan.e2gan.train import adapter_info, apply_adapter

    device = _device(device)
    adapter_dir = None if str(adapter) == "none" else adapter
    if prompt is None:
        if adapter_dir is None:
            raise ConfigError("--prompt is required without an adapter")
        prompt = adapter_info(adapter_dir).get("prompt")
        if not prompt:
            raise ConfigError(f"{adapter_dir} records no prompt; pass --prompt")
    x = load_image(image, size=size)
    y = apply_adapter(base, adapter_dir, x, prompt, _encoder(text_encoder), device)
    save_image(y, out)
    console.print(f"wrote {out}")
