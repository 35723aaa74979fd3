"""Image-to-image data sets for pix2pix / CycleGAN / GAN Compression training.

* :class:`PairedDataset` -- aligned pairs, either pix2pix "A|B" images (A on the left half, B on
  the right half) or two folders ``A/`` and ``B/`` whose files are matched by stem.
* :class:`UnpairedDataset` -- CycleGAN's unaligned ``trainA/``/``trainB/`` (``testA/``/``testB/``)
  folders; each A image comes with a randomly drawn B image.
* :func:`split_validation` / :func:`subset` -- a fixed, seeded validation slice carved from train.

Items hold float32 tensors ``[3, h, w]`` in ``[-1, 1]``; resizing is bicubic (antialiased) on the
float tensors, never through uint8.

Randomness: random crops, flips and the B draw of :class:`UnpairedDataset` come from torch's
**global** RNG by default, so ``torch.manual_seed`` makes a run reproducible and restoring the RNG
state saved by :mod:`edgegan.runs` resumes it exactly. With ``DataLoader(num_workers>0)`` each
worker is seeded from the global RNG too, so this stays reproducible. Passing ``generator=`` (a
``torch.Generator``) makes the data set draw from that generator instead; use it only with
``num_workers=0`` (every worker would get an identical copy of it). :func:`split_validation` never
touches torch's RNG: it uses its own seeded ``numpy.random.Generator``.

Folder and argument problems raise :class:`~edgegan.errors.ConfigError` or
:class:`~edgegan.errors.ImageLoadError` (one line, naming the path) when the data set is built;
unreadable or malformed image files raise :class:`~edgegan.errors.ImageLoadError` when the item
is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from edgegan.data.images import list_images, load_image
from edgegan.errors import ConfigError, ImageLoadError

__all__ = [
    "DIRECTIONS",
    "PairedDataset",
    "UnpairedDataset",
    "split_validation",
    "subset",
]

PathLike = str | os.PathLike[str]

DIRECTIONS: tuple[str, ...] = ("AtoB", "BtoA")
"""Valid ``direction`` values: ``"BtoA"`` swaps which image is the input (``"A"``) and the target."""


# --------------------------------------------------------------------------- helpers


def _is_pos_int(value: object) -> bool:
    return bool(isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0)


def _check_common(direction: str, load_size: int | None, crop_size: int) -> None:
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if not _is_pos_int(crop_size):
        raise ConfigError(f"crop_size must be a positive int, got {crop_size!r}")
    if load_size is not None and not _is_pos_int(load_size):
        raise ConfigError(f"load_size must be a positive int or None, got {load_size!r}")
    if load_size is not None and crop_size > load_size:
        raise ConfigError(f"crop_size ({crop_size}) must not be larger than load_size ({load_size})")


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic (antialiased) resize of ``[C, H, W]`` to ``size`` x ``size``, clamped to [-1, 1]."""
    if x.shape[-2] == size and x.shape[-1] == size:
        return x
    y = F.interpolate(x.unsqueeze(0), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return y.squeeze(0).clamp_(-1.0, 1.0)


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform int in ``[0, high)`` from ``generator`` or torch's global RNG."""
    return int(torch.randint(high, (1,), generator=generator).item())


def _coin(generator: torch.Generator | None) -> bool:
    return bool(torch.rand((), generator=generator).item() < 0.5)


def _transform(
    images: Sequence[torch.Tensor],
    where: str,
    *,
    train: bool,
    load_size: int | None,
    crop_size: int,
    flip: bool,
    generator: torch.Generator | None,
) -> list[torch.Tensor]:
    """Apply ONE resize / crop / flip to all of ``images`` (which must share a size)."""
    if not train:
        return [_resize(x, crop_size).contiguous() for x in images]
    if load_size is not None:
        images = [_resize(x, load_size) for x in images]
    h, w = images[0].shape[-2:]
    for x in images[1:]:
        if x.shape[-2:] != images[0].shape[-2:]:
            raise ImageLoadError(
                f"paired images differ in size ({h}x{w} vs {x.shape[-2]}x{x.shape[-1]}, HxW) "
                f"and load_size=None keeps native sizes: {where}"
            )
    if h < crop_size or w < crop_size:
        raise ImageLoadError(f"image too small to crop: {where} is {h}x{w} (HxW), crop_size={crop_size}")
    top = _randint(h - crop_size + 1, generator)
    left = _randint(w - crop_size + 1, generator)
    out = [x[:, top : top + crop_size, left : left + crop_size] for x in images]
    if flip and _coin(generator):
        out = [x.flip(-1) for x in out]
    return [x.contiguous() for x in out]


def _folder(path: PathLike, what: str) -> Path:
    d = Path(path)
    if not d.exists():
        raise ImageLoadError(f"{what} folder not found: {d}")
    if not d.is_dir():
        raise ImageLoadError(f"expected a {what} folder but got a file: {d}")
    return d


def _list_images(folder: Path, hint: str = "") -> list[Path]:
    """``list_images`` with a hint about subfolders when the folder holds no images directly."""
    try:
        return list_images(folder)
    except ImageLoadError as exc:
        if not folder.is_dir():
            raise
        subdirs = sorted(e.name for e in folder.iterdir() if e.is_dir() and not e.name.startswith("."))
        if subdirs:
            extra = f" (it has subfolders {', '.join(subdirs[:5])}{hint})"
            raise ImageLoadError(f"{exc}{extra}") from exc
        raise


def _by_stem(files: list[Path], folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise ConfigError(f"two images share the stem {f.stem!r} in {folder}: {out[f.stem].name} and {f.name}")
        out[f.stem] = f
    return out


def _select(available: Sequence[Path], files: Sequence[str], where: str) -> list[Path]:
    """The images of ``available`` named by ``files`` (file names, or stems if unambiguous), in that order."""
    by_name = {p.name: p for p in available}
    by_stem: dict[str, list[Path]] = {}
    for p in available:
        by_stem.setdefault(p.stem, []).append(p)
    chosen: list[Path] = []
    missing: list[str] = []
    for f in files:
        name = Path(str(f)).name
        if name in by_name:
            chosen.append(by_name[name])
        elif len(by_stem.get(name, [])) == 1:
            chosen.append(by_stem[name][0])
        elif name in by_stem:
            raise ConfigError(f"files= entry {f!r} matches several images in {where}; give the full file name")
        else:
            missing.append(str(f))
    if missing:
        raise ConfigError(f"{len(missing)} of the requested files are not in {where}, e.g. {missing[0]!r}")
    if not chosen:
        raise ConfigError(f"files= selects no images from {where}")
    return chosen


# --------------------------------------------------------------------------- paired


class PairedDataset(Dataset[dict[str, Any]]):
    """Aligned image pairs for pix2pix-style training.

    ``root_or_pairs`` is one of:

    * a folder of aligned ``A|B`` images (A on the left half, B on the right half; width must be even);
    * a folder with ``A/`` and ``B/`` subfolders whose images are matched by file stem
      (see also :meth:`from_folders`, e.g. ``from_folders("facades/A/train", "facades/B/train")``);
    * a sequence of ``(a_path, b_path)`` pairs.

    Items are ``{"A": input [3, h, w], "B": target [3, h, w], "path": str}`` in ``[-1, 1]``;
    ``direction="BtoA"`` swaps input and target (``"path"`` is the file holding the input).
    Training (``train=True``): resize both to ``load_size`` squared (``None`` keeps the native size),
    take the same random ``crop_size`` crop of both and, if ``flip``, flip both horizontally with
    probability 0.5. Evaluation: resize both to ``crop_size`` squared, no randomness.
    ``files`` optionally selects (and orders) images of a folder by file name or stem.
    Randomness comes from torch's global RNG, or from ``generator`` when given (see module docs).
    """

    def __init__(
        self,
        root_or_pairs: PathLike | Sequence[tuple[PathLike, PathLike]],
        *,
        direction: str = "AtoB",
        load_size: int | None = 286,
        crop_size: int = 256,
        train: bool = True,
        flip: bool = True,
        files: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_common(direction, load_size, crop_size)
        self.direction = direction
        self.load_size = load_size
        self.crop_size = crop_size
        self.train = bool(train)
        self.flip = bool(flip)
        self.generator = generator
        self.aligned: list[Path] = []
        self.pairs: list[tuple[Path, Path]] = []

        if isinstance(root_or_pairs, str | os.PathLike):
            root = _folder(root_or_pairs, "paired data set")
            a_dir, b_dir = root / "A", root / "B"
            if a_dir.is_dir() and b_dir.is_dir():
                self.pairs = self._match(a_dir, b_dir, files)
            elif a_dir.is_dir() or b_dir.is_dir():
                have, lack = (a_dir, b_dir) if a_dir.is_dir() else (b_dir, a_dir)
                raise ImageLoadError(f"paired data set has {have.name}/ but no {lack.name}/ folder: {lack}")
            else:
                found = _list_images(root, hint="; expected A|B images, or A/ and B/ subfolders")
                self.aligned = found if files is None else _select(found, files, str(root))
        else:
            if files is not None:
                raise ConfigError("files= only applies to folders; select the pairs yourself")
            pairs = list(root_or_pairs)
            if not pairs:
                raise ConfigError("PairedDataset got an empty list of pairs")
            for pair in pairs:
                if not isinstance(pair, tuple | list) or len(pair) != 2:
                    raise ConfigError(f"each pair must be (a_path, b_path), got {pair!r}")
            self.pairs = [(Path(a), Path(b)) for a, b in pairs]

    @classmethod
    def from_folders(
        cls,
        a_dir: PathLike,
        b_dir: PathLike,
        *,
        direction: str = "AtoB",
        load_size: int | None = 286,
        crop_size: int = 256,
        train: bool = True,
        flip: bool = True,
        files: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> PairedDataset:
        """Pairs from two folders whose images are matched by file stem (``A/1.jpg`` with ``B/1.png``)."""
        _check_common(direction, load_size, crop_size)
        pairs = cls._match(Path(a_dir), Path(b_dir), files)
        return cls(
            pairs,
            direction=direction,
            load_size=load_size,
            crop_size=crop_size,
            train=train,
            flip=flip,
            generator=generator,
        )

    @staticmethod
    def _match(a_dir: Path, b_dir: Path, files: Sequence[str] | None) -> list[tuple[Path, Path]]:
        hint = "; pass PairedDataset.from_folders(A/<sub>, B/<sub>) for a split such as train"
        a = _by_stem(_list_images(_folder(a_dir, "A image"), hint), a_dir)
        b = _by_stem(_list_images(_folder(b_dir, "B image"), hint), b_dir)
        only_a = [k for k in a if k not in b]
        only_b = [k for k in b if k not in a]
        if only_a or only_b:
            parts = []
            if only_a:
                parts.append(f"{len(only_a)} A files have no B file (e.g. {a[only_a[0]].name})")
            if only_b:
                parts.append(f"{len(only_b)} B files have no A file (e.g. {b[only_b[0]].name})")
            raise ConfigError(f"A/B folders do not match by file stem: {'; '.join(parts)} [{a_dir} vs {b_dir}]")
        chosen = list(a.values()) if files is None else _select(list(a.values()), files, str(a_dir))
        return [(p, b[p.stem]) for p in chosen]

    def __len__(self) -> int:
        return len(self.aligned) if self.aligned else len(self.pairs)

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str, str]:
        if self.aligned:
            path = self.aligned[index]
            ab = load_image(path)
            w = ab.shape[-1]
            if w % 2:
                raise ImageLoadError(f"aligned A|B image must have an even width, got {w} px: {path}")
            half = w // 2
            return ab[:, :, :half], ab[:, :, half:], str(path), str(path)
        a_path, b_path = self.pairs[index]
        return load_image(a_path), load_image(b_path), str(a_path), str(b_path)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a data set of {n} pairs")
        a, b, a_path, b_path = self._load(index % n)
        if self.direction == "BtoA":
            a, b, a_path, b_path = b, a, b_path, a_path
        where = a_path if a_path == b_path else f"{a_path} / {b_path}"
        a, b = _transform(
            [a, b],
            where,
            train=self.train,
            load_size=self.load_size,
            crop_size=self.crop_size,
            flip=self.flip,
            generator=self.generator,
        )
        return {"A": a, "B": b, "path": a_path}

    def __repr__(self) -> str:
        kind = "aligned A|B" if self.aligned else "A/B pairs"
        return (
            f"PairedDataset({len(self)} {kind}, direction={self.direction}, load_size={self.load_size}, "
            f"crop_size={self.crop_size}, train={self.train}, flip={self.flip})"
        )


# --------------------------------------------------------------------------- unpaired


class UnpairedDataset(Dataset[dict[str, Any]]):
    """CycleGAN's unaligned data: ``root/{phase}A`` and ``root/{phase}B`` image folders.

    Items are ``{"A", "B", "path_A", "path_B"}``; item ``i`` holds A image ``i % len(A)`` and a B
    image drawn uniformly at random (torch global RNG or ``generator``), or B image ``i % len(B)``
    when ``serial_b``. Length is ``max(len(A), len(B))``. ``direction="BtoA"`` swaps the folders.
    A and B get independent random crops/flips in training (``train`` defaults to
    ``phase == "train"``); evaluation resizes both to ``crop_size`` squared.
    """

    def __init__(
        self,
        root: PathLike,
        *,
        phase: str = "train",
        direction: str = "AtoB",
        load_size: int | None = 286,
        crop_size: int = 256,
        train: bool | None = None,
        flip: bool = True,
        serial_b: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(phase, str) or not phase:
            raise ConfigError(f"phase must be a non-empty string such as 'train' or 'test', got {phase!r}")
        _check_common(direction, load_size, crop_size)
        r = _folder(root, "unpaired data set")
        a_dir, b_dir = r / f"{phase}A", r / f"{phase}B"
        for d in (a_dir, b_dir):
            if not d.is_dir():
                raise ImageLoadError(f"unpaired data set folder not found: {d} (expected {phase}A/ and {phase}B/)")
        self._init(a_dir, b_dir, direction, load_size, crop_size, phase == "train" if train is None else train, flip)
        self.serial_b = bool(serial_b)
        self.generator = generator

    @classmethod
    def from_folders(
        cls,
        a_dir: PathLike,
        b_dir: PathLike,
        *,
        direction: str = "AtoB",
        load_size: int | None = 286,
        crop_size: int = 256,
        train: bool = True,
        flip: bool = True,
        serial_b: bool = False,
        generator: torch.Generator | None = None,
    ) -> UnpairedDataset:
        """Unpaired data from two explicit image folders."""
        self = cls.__new__(cls)
        self._init(Path(a_dir), Path(b_dir), direction, load_size, crop_size, train, flip)
        self.serial_b = bool(serial_b)
        self.generator = generator
        return self

    def _init(
        self,
        a_dir: Path,
        b_dir: Path,
        direction: str,
        load_size: int | None,
        crop_size: int,
        train: bool,
        flip: bool,
    ) -> None:
        _check_common(direction, load_size, crop_size)
        files_a = _list_images(_folder(a_dir, "A image"))
        files_b = _list_images(_folder(b_dir, "B image"))
        if direction == "BtoA":
            files_a, files_b = files_b, files_a
        self.files_a: list[Path] = files_a
        self.files_b: list[Path] = files_b
        self.direction = direction
        self.load_size = load_size
        self.crop_size = crop_size
        self.train = bool(train)
        self.flip = bool(flip)

    def __len__(self) -> int:
        return max(len(self.files_a), len(self.files_b))

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a data set of {n} items")
        index %= n
        a_path = self.files_a[index % len(self.files_a)]
        if self.serial_b:
            b_path = self.files_b[index % len(self.files_b)]
        else:
            b_path = self.files_b[_randint(len(self.files_b), self.generator)]
        kw: dict[str, Any] = {
            "train": self.train,
            "load_size": self.load_size,
            "crop_size": self.crop_size,
            "flip": self.flip,
            "generator": self.generator,
        }
        (a,) = _transform([load_image(a_path)], str(a_path), **kw)
        (b,) = _transform([load_image(b_path)], str(b_path), **kw)
        return {"A": a, "B": b, "path_A": str(a_path), "path_B": str(b_path)}

    def __repr__(self) -> str:
        return (
            f"UnpairedDataset(A={len(self.files_a)}, B={len(self.files_b)}, direction={self.direction}, "
            f"load_size={self.load_size}, crop_size={self.crop_size}, train={self.train}, flip={self.flip})"
        )


# --------------------------------------------------------------------------- splits


def split_validation(n: int, fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into sorted ``(train_indices, val_indices)`` with a fixed seed.

    ``round(n * fraction)`` indices (at least one when ``fraction > 0`` and ``n > 1``, and never all
    of them) go to validation. Uses its own ``numpy.random.Generator(seed)``, so the split does not
    depend on (or change) torch's or numpy's global RNG.
    """
    if not _is_pos_int(n):
        raise ConfigError(f"n must be a positive int, got {n!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction < 1.0:
        raise ConfigError(f"fraction must be a number in [0, 1), got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    n = int(n)
    n_val = int(round(n * fraction))
    if fraction > 0 and n > 1:
        n_val = max(n_val, 1)
    n_val = min(n_val, n - 1)
    perm = np.random.default_rng(int(seed)).permutation(n)
    val = sorted(int(i) for i in perm[:n_val])
    train = sorted(int(i) for i in perm[n_val:])
    return train, val


def subset(dataset: Dataset[Any], indices: Sequence[int]) -> Subset[Any]:
    """``torch.utils.data.Subset`` of ``dataset``, checking that every index is in range."""
    idx = [int(i) for i in indices]
    n = len(dataset)  # type: ignore[arg-type]
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ConfigError(f"{len(bad)} indices out of range for a data set of {n} items, e.g. {bad[0]}")
    return Subset(dataset, idx)
