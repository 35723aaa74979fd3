"""Run any image-to-image generator edgegan makes on image files: ``edgegan translate``.

:func:`load_translator` turns a model source into a :class:`Translator`, a callable from images ``[N, 3, H, W]``
in [-1, 1] of any size to the generator's outputs of the same size. Sources:

* a saved model folder of a generator (``resnet_generator``: pix2pix/CycleGAN teachers;
  ``mobile_resnet_generator``: GAN Compression students; ``depth_width_generator``: UGC students;
  ``unet_generator``; ``e2gan_generator`` with a prompt: an E2GAN base or a merged/fully fine-tuned model);
* a CycleGAN run folder (``G_A/`` and ``G_B/``, see :mod:`edgegan.compress.teacher`) with a direction;
* an E2GAN LoRA adapter folder (``adapter.json``) with its base model folder and a prompt;
* an ONNX file with one image input (run with ONNX Runtime).

Anything else (discriminators, supernets, SETGAN scales and runs) is refused with one line. Inputs are padded
(reflect, bottom and right, as :func:`edgegan.e2gan.train.apply_adapter` does) to the multiple the network
needs and cropped back: 4 for the ResNet-style generators (two stride-2 downs), ``2 ** num_downs`` for the
U-Net, 8 for E2GAN (its transformer block halves the trunk once more), and for an ONNX file the smallest
power of two whose trial run gives back its input size.

:func:`translate_paths` runs a translator over files and folders and writes each output atomically under the
input's name; unreadable images fail alone and the :class:`TranslateSummary` says which.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from edgegan.errors import CheckpointError, ConfigError, EdgeganError
from edgegan.weights import sha256_of

__all__ = [
    "GENERATORS",
    "TranslateSummary",
    "Translator",
    "collect_inputs",
    "load_translator",
    "output_path",
    "pad_to_multiple",
    "translate_paths",
]

PathLike = str | os.PathLike[str]
Runner = Callable[[torch.Tensor], torch.Tensor]

GENERATORS: dict[str, str] = {
    "resnet_generator": "pix2pix/CycleGAN teacher",
    "mobile_resnet_generator": "GAN Compression student",
    "depth_width_generator": "UGC student",
    "unet_generator": "U-Net",
    "e2gan_generator": "E2GAN (needs a prompt)",
}
"""Architectures translate runs, and what each is."""

_REFUSED: dict[str, str] = {
    "patch_discriminator": "a discriminator, not a generator",
    "multiscale_discriminator": "a discriminator, not a generator",
    "singan_discriminator": "a SETGAN discriminator, not a generator",
    "singan_generator": "a SETGAN scale generator (noise to image); use `edgegan setgan sample` or `setgan apply`",
    "mobile_resnet_supernet": "a once-for-all supernet; extract a student first (`edgegan compress search`)",
    "depth_width_supernet": "a UGC supernet; use the student its search exported (`edgegan ugc run`)",
}
_OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg")
_MAX_PROBE = 256


# ----------------------------------------------------------------------------- the translator


@dataclass
class Translator:
    """``translator(images)``: images ``[N, 3, H, W]`` (or ``[3, H, W]``) in [-1, 1], any H and W, to the model's
    outputs of the same shape, on the CPU. ``run`` maps a batch whose sides are multiples of ``multiple``."""

    run: Runner
    multiple: int
    description: str
    runtime: str
    device: str
    fixed_size: tuple[int, int] | None = None  # an ONNX file exported with a static height and width

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        single = images.dim() == 3
        x = images[None] if single else images
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(f"expected images [N, 3, H, W], got {tuple(images.shape)}")
        h, w = x.shape[-2:]
        if self.fixed_size is not None and (h, w) != self.fixed_size:
            fh, fw = self.fixed_size
            raise ConfigError(f"{self.description} takes {fh}x{fw} images only, got {h}x{w}; pass --size {fh}x{fw}")
        y = self.run(pad_to_multiple(x, self.multiple))
        if y.dim() != 4 or y.shape[-2] < h or y.shape[-1] < w:
            raise EdgeganError(f"{self.description} returned {tuple(y.shape)} for input {tuple(x.shape)}")
        y = y[:, :, :h, :w]
        return y[0] if single else y


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``x`` ``[N, C, H, W]`` at the bottom and right to multiples of ``multiple``: reflect, or replicate where
    the image is too small to reflect that far."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def load_translator(
    model: PathLike,
    *,
    base: PathLike | None = None,
    prompt: str | None = None,
    any_prompt: bool = False,
    text_encoder: Any = "auto",
    direction: str | None = None,
    runtime: str | None = None,
    device: str = "cpu",
    multiple: int | None = None,
) -> Translator:
    """Load ``model`` (a generator folder, a CycleGAN run folder, an E2GAN adapter folder or an ONNX file; see the
    module docs) as a :class:`Translator`.

    ``base``/``prompt``: an adapter's E2GAN base folder (default: the one the adapter records) and the prompt
    (default: the adapter's; a different one is refused unless ``any_prompt``). ``text_encoder``: ``auto`` (the one
    the base's training run records, else the bundled default), ``default``, ``tiny``, a local folder, or an
    encoder object. ``direction``: ``AtoB`` or ``BtoA`` for a CycleGAN run (the run's trainA/trainB folders).
    ``runtime``: ``torch`` or ``onnx`` (default: onnx for ONNX files, torch otherwise). ``multiple`` overrides
    the padding multiple. Bad combinations are one-line :class:`ConfigError` s.
    """
    from edgegan.runs import check_device

    if runtime not in (None, "torch", "onnx"):
        raise ConfigError(f"--runtime must be torch or onnx, got {runtime!r}")
    path = Path(model)
    if runtime == "onnx" or (runtime is None and path.suffix.lower() == ".onnx"):
        _onnx_providers(device)
    else:
        device = check_device(device)  # torch must see the GPU
    if direction not in (None, "AtoB", "BtoA"):
        raise ConfigError(f"--direction must be AtoB or BtoA, got {direction!r}")
    if multiple is not None and multiple < 1:
        raise ConfigError(f"--multiple must be positive, got {multiple}")
    if not path.exists():
        raise ConfigError(f"model not found: {path}")
    is_e2gan = base is not None or (path / "adapter.json").is_file()
    if path.is_file():
        if path.suffix.lower() != ".onnx":
            raise ConfigError(f"{path} is a file but not an .onnx model; give a model folder or an ONNX file")
        if runtime == "torch":
            raise ConfigError(f"{path} is an ONNX file; it runs with --runtime onnx only")
        _only_for(path, "an ONNX file", base=base, prompt=prompt, direction=direction)
        return _onnx_translator(path.read_bytes(), f"ONNX file {path}", device, multiple)
    if is_e2gan:
        if direction is not None:
            raise ConfigError("--direction applies to a CycleGAN run folder, not to an E2GAN adapter")
        module, what, default_multiple = _e2gan_adapter(path, base, prompt, any_prompt, text_encoder)
    elif (path / "config.json").is_file():
        module, what, default_multiple = _model_folder(path, prompt, any_prompt, text_encoder, direction)
    elif _run_recipe(path) == "cyclegan":
        _only_for(path, "a CycleGAN run", base=base, prompt=prompt)
        module, what, default_multiple = _cyclegan(path, direction)
    else:
        raise ConfigError(_not_a_model(path))
    return _torch_or_onnx(module, what, default_multiple if multiple is None else multiple, runtime, device)


def _only_for(path: Path, what: str, **given: Any) -> None:
    for name, value in given.items():
        if value is not None:
            raise ConfigError(f"--{name} does not apply to {what} ({path})")


def _torch_or_onnx(module: nn.Module, what: str, multiple: int, runtime: str | None, device: str) -> Translator:
    module = module.eval()
    if runtime == "onnx":
        return _onnx_translator(_export(module, multiple), what, device, multiple)
    module = module.to(device)

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        return module(x.to(device)).float().cpu()

    return Translator(run, multiple, what, "torch", device)


# ----------------------------------------------------------------------------- model sources


def _generator(path: Path, arch: str, config: dict[str, Any]) -> None:
    """Refuse, in one line, a model folder that is not an RGB image-to-image generator."""
    if arch in _REFUSED:
        raise ConfigError(f"{path} holds {arch}: {_REFUSED[arch]}")
    if arch not in GENERATORS:
        raise ConfigError(f"{path} holds {arch}, not an image-to-image generator ({', '.join(GENERATORS)})")
    for side in ("input_nc", "output_nc"):
        if config.get(side, 3) != 3:
            raise ConfigError(f"{path}: {arch} has {side}={config[side]}; translate reads and writes RGB images")


def _multiple(arch: str, config: dict[str, Any]) -> int:
    if arch == "unet_generator":
        return 2 ** int(config.get("num_downs", 8))
    return 8 if arch == "e2gan_generator" else 4  # E2GAN's transformer block halves the trunk once more


def _model_folder(
    path: Path, prompt: str | None, any_prompt: bool, text_encoder: Any, direction: str | None
) -> tuple[nn.Module, str, int]:
    from edgegan.registry import load, read_model_config

    arch, config = read_model_config(path)
    _generator(path, arch, config)
    if direction is not None:
        raise ConfigError(f"--direction applies to a CycleGAN run folder (G_A/ and G_B/), not to {arch} ({path})")
    if arch == "e2gan_generator":
        return _prompted(load(path), path, None, prompt, any_prompt, text_encoder)
    if prompt is not None:
        raise ConfigError(f"--prompt applies to E2GAN models, not to {arch} ({path})")
    return load(path), f"{arch} ({GENERATORS[arch]}) from {path}", _multiple(arch, config)


def _run_recipe(path: Path) -> str | None:
    record = _run_config(path)
    return str(record.get("recipe")) if record else None


def _run_config(path: Path) -> dict[str, Any] | None:
    """A training run's ``config.yaml`` (see :class:`edgegan.runs.RunDir`), or None."""
    file = path / "config.yaml"
    if not file.is_file():
        return None
    try:
        record = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return record if isinstance(record, dict) else None


def _cyclegan(path: Path, direction: str | None) -> tuple[nn.Module, str, int]:
    """``G_A`` maps the run's first domain to its second; a run trained with ``direction: BtoA`` swapped trainA and
    trainB, so there ``G_A`` maps trainB to trainA. ``direction`` names the data folders, as the user sees them."""
    from edgegan.registry import load, read_model_config

    if direction is None:
        raise ConfigError(f"{path} is a CycleGAN run with two generators; pass --direction AtoB or BtoA")
    trained = str(((_run_config(path) or {}).get("train") or {}).get("direction", "AtoB"))
    name = "G_A" if (direction == "AtoB") == (trained == "AtoB") else "G_B"
    folder = path / name
    arch, config = read_model_config(folder)
    _generator(folder, arch, config)
    return load(folder), f"CycleGAN {name} ({direction}) from {path}", _multiple(arch, config)


def _not_a_model(path: Path) -> str:
    from edgegan.registry import read_model_config

    if (path / "pyramid.json").is_file() or (path / "scales").is_dir():
        return f"{path} is a SETGAN run; translate runs image-to-image generators (use `edgegan setgan apply`)"
    inside = []
    for child in sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []:
        try:
            arch, _ = read_model_config(child)
        except EdgeganError:
            continue
        if arch in GENERATORS:
            inside.append(child.name)
    if inside:
        return f"{path} is not a model folder (no config.json); the generator folders in it: {', '.join(inside)}"
    return f"{path} is not a model folder, an E2GAN adapter, a CycleGAN run or an ONNX file"


# ----------------------------------------------------------------------------- E2GAN


class _Prompted(nn.Module):
    """An E2GAN generator with its prompt's token embeddings fixed: an image-to-image model (also for export)."""

    text: torch.Tensor
    mask: torch.Tensor | None

    def __init__(self, model: nn.Module, text: torch.Tensor, mask: torch.Tensor | None) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("text", text)
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        mask = None if self.mask is None else self.mask.expand(n, -1)
        return self.model(x, self.text.expand(n, -1, -1), mask)


def _e2gan_adapter(
    adapter: Path, base: PathLike | None, prompt: str | None, any_prompt: bool, text_encoder: Any
) -> tuple[nn.Module, str, int]:
    from edgegan.nn.lora import load_adapter, read_adapter
    from edgegan.registry import load, read_model_config

    if not (adapter / "adapter.json").is_file():
        raise ConfigError(f"--base goes with an E2GAN adapter folder (adapter.json), and {adapter} is not one")
    _, info = read_adapter(adapter)
    recorded = info.get("base")
    if base is None:
        if not recorded or not Path(recorded).is_dir():
            raise ConfigError(f"{adapter} is an E2GAN adapter; pass --base with the base model folder it was made for")
        base = recorded
    base_dir = Path(base)
    arch, _ = read_model_config(base_dir)
    if arch != "e2gan_generator":
        raise ConfigError(f"--base {base_dir} holds {arch}; an E2GAN adapter needs its e2gan_generator base")
    _check_same_base(adapter, base_dir, recorded)
    model = load(base_dir)
    try:
        load_adapter(model, adapter)
    except CheckpointError as exc:
        raise ConfigError(f"the adapter in {adapter} does not fit the base {base_dir}: {exc}") from None
    return _prompted(model, base_dir, adapter, prompt, any_prompt, text_encoder, info)


def _check_same_base(adapter: Path, base: Path, recorded: str | None) -> None:
    """Refuse an adapter trained on another base model: one whose recorded base folder still exists and holds
    other weights (a moved or copied base with the same weights is fine; a recorded base that is gone cannot be
    checked)."""
    if not recorded or not (Path(recorded) / "model.safetensors").is_file():
        return
    if Path(recorded).resolve() == base.resolve():
        return
    if _sha256(Path(recorded) / "model.safetensors") != _sha256(base / "model.safetensors"):
        raise ConfigError(f"the adapter in {adapter} was trained on the base {recorded}, not on {base}")


def _sha256(file: Path) -> str | None:
    return sha256_of(file) if file.is_file() else None


def _same_prompt(a: str, b: str) -> bool:
    return " ".join(a.split()).lower() == " ".join(b.split()).lower()


def _prompted(
    model: nn.Module,
    base_dir: Path,
    adapter: Path | None,
    prompt: str | None,
    any_prompt: bool,
    text_encoder: Any,
    adapter_info: dict[str, Any] | None = None,
) -> tuple[nn.Module, str, int]:
    recorded = (adapter_info or {}).get("prompt")
    if prompt is None:
        if not recorded:
            where = f"the adapter in {adapter} records no prompt" if adapter else f"{base_dir} is an E2GAN model"
            raise ConfigError(f"{where}; pass --prompt TEXT")
        prompt = str(recorded)
    if not prompt.strip():
        raise ConfigError("--prompt must not be empty")
    if recorded and not any_prompt and not _same_prompt(prompt, str(recorded)):
        raise ConfigError(
            f"the adapter in {adapter} was trained for the prompt {recorded!r}, not {prompt!r}; "
            "leave out --prompt to use its own (or pass --any-prompt)"
        )
    encoder = _text_encoder(text_encoder, base_dir, adapter)
    text_dim = model.config.text_dim  # type: ignore[union-attr]
    if encoder.dim != text_dim:
        raise ConfigError(
            f"{base_dir} expects {text_dim}-d text, the text encoder {encoder.name} gives {encoder.dim}-d; "
            "pass the --text-encoder it was trained with"
        )
    text, mask = encoder.encode([prompt])
    what = f"e2gan_generator from {base_dir}" + (f" + adapter {adapter}" if adapter else "") + f", prompt {prompt!r}"
    return _Prompted(model, text.float(), mask), what, 8


def _recorded_encoder(run: Path) -> str | None:
    """The text encoder an E2GAN training run (``config.yaml`` with an ``e2gan`` section) records."""
    record = _run_config(run)
    if not record or "e2gan" not in record or not record.get("text_encoder"):
        return None
    return str(record["text_encoder"])


def _text_encoder(spec: Any, base_dir: Path, adapter: Path | None) -> Any:
    """The encoder ``spec`` names (``auto``: the one the base's or adapter's run records); refuse one that differs
    from what those runs record."""
    from edgegan.e2gan.text import HFTextEncoder, TinyTextEncoder

    runs = [base_dir.parent] + ([adapter.parent] if adapter is not None else [])
    recorded = {str(r): name for r in runs if (name := _recorded_encoder(r))}
    if not isinstance(spec, str):
        encoder = spec
    elif spec == "auto":
        name = next(iter(recorded.values()), "all-MiniLM-L6-v2")
        if name.startswith("tiny:") and name.endswith("d") and name[5:-1].isdigit():
            encoder = TinyTextEncoder(dim=int(name[5:-1]))
        elif name == "all-MiniLM-L6-v2":
            encoder = HFTextEncoder()
        else:
            raise ConfigError(f"{base_dir} was trained with the text encoder {name}; pass --text-encoder FOLDER")
    elif spec == "tiny":
        encoder = TinyTextEncoder()
    elif spec == "default":
        encoder = HFTextEncoder()
    else:
        encoder = HFTextEncoder(spec)
    for run, name in recorded.items():
        if name != encoder.name:
            raise ConfigError(f"the run {run} trained with the text encoder {name}, not {encoder.name}")
    return encoder


# ----------------------------------------------------------------------------- ONNX


def _export(module: nn.Module, multiple: int) -> bytes:
    from edgegan.export.onnx import export_onnx

    side = multiple * max(1, -(-32 // multiple))
    with tempfile.TemporaryDirectory(prefix="edgegan-translate-") as tmp:
        file = Path(tmp) / "model.onnx"
        export_onnx(module.cpu(), file, example=torch.zeros(1, 3, side, side), check=False)
        return file.read_bytes()


def _onnx_providers(device: str) -> list[Any]:
    """ONNX Runtime's execution providers for ``device`` (cpu or cuda[:N]); a one-line error when it has no CUDA."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    kind, _, index = device.partition(":")
    if kind != "cuda" or not (index or "0").isdigit():
        raise ConfigError(f"--device must be cpu or cuda[:N], got {device!r}")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ConfigError(f"--device {device}: this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


def _onnx_session(model: bytes, device: str) -> Any:
    import onnxruntime as ort

    providers = _onnx_providers(device)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model, sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime's own exception types
        raise ConfigError(f"ONNX Runtime cannot load the model: {' '.join(str(exc).split())}") from None


def _onnx_translator(model: bytes, what: str, device: str, multiple: int | None) -> Translator:
    sess = _onnx_session(model, device)
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    channels = inputs[0].shape[1] if len(inputs) == 1 and len(inputs[0].shape) == 4 else None
    if channels is None or (isinstance(channels, int) and channels != 3):
        shapes = ", ".join(f"{i.name} {i.shape}" for i in inputs)
        raise ConfigError(f"{what} takes {shapes}; translate runs models with one RGB image input [N, 3, H, W]")
    name = inputs[0].name
    batch, _, h, w = inputs[0].shape
    fixed = (h, w) if isinstance(h, int) and isinstance(w, int) else None
    if isinstance(batch, int) and batch != 1:
        raise ConfigError(f"{what} has a fixed batch of {batch}; export it with a dynamic or unit batch")

    def run(x: torch.Tensor) -> torch.Tensor:
        arrays = x.detach().cpu().numpy().astype(np.float32)
        chunks = [arrays[i : i + 1] for i in range(len(arrays))] if batch == 1 else [arrays]
        outs = [sess.run([outputs[0].name], {name: c})[0] for c in chunks]
        return torch.from_numpy(np.concatenate(outs, 0)).float()

    if fixed is not None:
        return Translator(run, multiple or 1, what, "onnx", device, fixed_size=fixed)
    return Translator(run, multiple or _probe_multiple(run, what), what, "onnx", device)


def _probe_multiple(run: Runner, what: str) -> int:
    """The smallest power of two ``m`` for which a ``3m × 5m`` input comes back at its own size."""
    m = 1
    while m <= _MAX_PROBE:
        h, w = 3 * m, 5 * m
        try:
            y = run(torch.zeros(1, 3, h, w))
        except Exception:  # too small for the network: try the next size
            y = None
        if y is not None and tuple(y.shape) == (1, 3, h, w):
            return m
        m *= 2
    raise ConfigError(f"{what} gives no RGB output of its input's size (tried multiples up to {_MAX_PROBE})")


# ----------------------------------------------------------------------------- files


@dataclass
class TranslateSummary:
    """What :func:`translate_paths` did: outputs written, outputs skipped (they existed), inputs that failed."""

    out: Path
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        """One line: counts, and the inputs that failed."""
        text = f"{len(self.written)} written, {len(self.skipped)} skipped"
        if self.skipped:
            text += " (already there; --overwrite replaces them)"
        text += f", {len(self.failed)} failed"
        if self.failed:
            text += ": " + ", ".join(str(p) for p, _ in self.failed)
        return f"{text} (in {self.out})"


def output_path(source: PathLike, out: PathLike) -> Path:
    """``out/<name>``: the input's name, with ``.png`` unless the input is a PNG or JPEG."""
    src = Path(source)
    name = src.name if src.suffix.lower() in _OUTPUT_SUFFIXES else src.stem + ".png"
    return Path(out) / name


def collect_inputs(inputs: Sequence[PathLike]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files from ``inputs`` (files as given, folders' image files, not recursive), without repeats; and the
    inputs that cannot be listed, with why."""
    from edgegan.data.images import list_images

    files: list[Path] = []
    failed: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            try:
                found = list_images(p)
            except EdgeganError as exc:
                failed.append((p, str(exc)))
                continue
        elif p.exists():
            found = [p]
        else:
            failed.append((p, f"input not found: {p}"))
            continue
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files, failed


def translate_paths(
    translator: Callable[[torch.Tensor], torch.Tensor],
    inputs: Sequence[PathLike],
    out: PathLike,
    *,
    size: int | tuple[int, int] | None = None,
    batch_size: int = 1,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    on_error: Callable[[Path, str], None] | None = None,
) -> TranslateSummary:
    """Translate image files and folders into ``out`` (same names, see :func:`output_path`), ``batch_size`` images of
    equal size at a time, after resizing to ``size`` (``(H, W)`` or a side) when given.

    Outputs that exist are skipped unless ``overwrite``; each is written atomically. An input that cannot be read
    (or a batch the model fails on) is recorded in the summary and reported to ``on_error``; the others go on.
    ``progress(done, total)`` is called as inputs are finished. Two inputs with one output name, or an output that
    would replace its input, are a :class:`ConfigError` before anything runs.
    """
    from edgegan.data.images import load_image, save_image

    hw = _size(size)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {batch_size}")
    fixed = getattr(translator, "fixed_size", None)
    if fixed is not None and (hw or fixed) != fixed:
        raise ConfigError(f"the model takes {fixed[0]}x{fixed[1]} images only; pass --size {fixed[0]}x{fixed[1]}")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    files, failed = collect_inputs(inputs)
    plan = _plan(files, out_dir)
    summary = TranslateSummary(out_dir)
    total, done = len(plan) + len(failed), 0

    def finish(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    def fail(src: Path, reason: str) -> None:
        reason = " ".join(reason.split())
        summary.failed.append((src, reason))
        if on_error is not None:
            on_error(src, reason)

    def flush(group: list[tuple[Path, Path, torch.Tensor]]) -> None:
        try:
            ys = translator(torch.stack([x for _, _, x in group]))
        except Exception as exc:  # the model (or its runtime) failed on this batch: its images fail, others go on
            for src, _, _ in group:
                fail(src, f"the model failed on it: {type(exc).__name__}: {exc}")
            finish(len(group))
            return
        for (src, dst, _), y in zip(group, ys, strict=True):
            try:
                save_image(y, dst)
                summary.written.append(dst)
            except (OSError, ValueError) as exc:
                fail(src, f"cannot write {dst}: {exc}")
            finish()

    for src, reason in failed:
        fail(src, reason)
        finish()
    pending: dict[tuple[int, int], list[tuple[Path, Path, torch.Tensor]]] = {}
    for src, dst in plan:
        if dst.exists() and not overwrite:
            summary.skipped.append(dst)
            finish()
            continue
        try:
            x = load_image(src, size=hw)
        except (EdgeganError, OSError, ValueError) as exc:
            fail(src, str(exc))
            finish()
            continue
        key = (int(x.shape[-2]), int(x.shape[-1]))
        group = pending.setdefault(key, [])
        group.append((src, dst, x))
        if len(group) >= batch_size:
            flush(pending.pop(key))
    for group in pending.values():
        flush(group)
    return summary


def _size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw):
        raise ConfigError(f"size must be a positive int or (height, width), got {size!r}")
    return int(hw[0]), int(hw[1])


def _plan(files: list[Path], out: Path) -> list[tuple[Path, Path]]:
    plan: list[tuple[Path, Path]] = []
    taken: dict[Path, Path] = {}
    for src in files:
        dst = output_path(src, out)
        key = dst.resolve()
        if key == src.resolve():
            raise ConfigError(f"the output for {src} would replace it; choose another --out folder")
        if key in taken:
            raise ConfigError(f"{taken[key]} and {src} would both be written to {dst}")
        taken[key] = src
        plan.append((src, dst))
    return plan
