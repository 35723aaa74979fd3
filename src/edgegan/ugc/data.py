"""UGC's label-efficient data: a seeded split of paired training data into labelled pairs (A) and
unlabelled inputs (U), saved in the run folder so that runs at the same fraction are comparable.

The unlabelled part is built from the input images alone (the target files are never read), so
nothing downstream can use a label it should not have.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from edgegan.data.datasets import PairedDataset
from edgegan.data.images import load_image
from edgegan.errors import ConfigError
from edgegan.fileio import atomic_write_json

__all__ = ["FRACTIONS", "InputsOnly", "LabelSplit", "label_split", "load_split", "make_split"]

PathLike = str | os.PathLike[str]
FRACTIONS = (0.1, 0.25, 0.5, 1.0)
SPLIT_FILE = "split.json"


def label_split(n: int, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Sorted, disjoint ``(labelled, unlabelled)`` indices covering ``range(n)``.

    ``ceil(n * fraction)`` items (at least one) are labelled, chosen by a private
    ``numpy.random.default_rng(seed)`` permutation (global RNGs are neither used nor changed).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be a positive int, got {n!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 < fraction <= 1.0:
        raise ConfigError(f"the labelled fraction must be in (0, 1], got {fraction!r}")
    n_lab = min(n, max(1, math.ceil(n * fraction - 1e-9)))
    perm = np.random.default_rng(int(seed)).permutation(n)
    return sorted(int(i) for i in perm[:n_lab]), sorted(int(i) for i in perm[n_lab:])


class _SelfPairs(PairedDataset):
    """Each image paired with itself, read from disk once (not once per side)."""

    def _load(self, index: int) -> tuple[Any, Any, str, str]:
        path = self.pairs[index][0]
        image = load_image(path)
        return image, image, str(path), str(path)


class InputsOnly(Dataset[dict[str, Any]]):
    """Input images alone, with the same transforms as paired training: items are ``{"A": x, "path"}``."""

    def __init__(self, paths: list[Path], *, load_size: int | None, crop_size: int, train: bool = True) -> None:
        if not paths:
            raise ConfigError("the unlabelled set is empty")
        # Each input is paired with itself so the paired loader's crop/flip code is reused as is.
        self.inner = _SelfPairs([(p, p) for p in paths], load_size=load_size, crop_size=crop_size, train=train)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.inner[index]
        return {"A": item["A"], "path": item["path"]}


class LabelSplit:
    """The labelled pairs and unlabelled inputs of one split (see :func:`make_split`)."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        self.fraction: float = record["fraction"]
        self.seed: int = record["seed"]
        self.direction: str = record["direction"]
        self.labeled: list[tuple[str, str]] = [tuple(p) for p in record["labeled"]]  # type: ignore[misc]
        self.unlabeled: list[str] = list(record["unlabeled"])

    def __repr__(self) -> str:
        return f"LabelSplit(fraction={self.fraction}, {len(self.labeled)} labelled, {len(self.unlabeled)} unlabelled)"

    def labeled_set(self, *, load_size: int | None, crop_size: int, train: bool = True) -> PairedDataset:
        return PairedDataset(
            [(Path(a), Path(b)) for a, b in self.labeled],
            direction=self.direction,
            load_size=load_size,
            crop_size=crop_size,
            train=train,
        )

    def link_labeled(self, folder: PathLike) -> tuple[Path, Path]:
        """``folder/A`` and ``folder/B`` holding the labelled pairs (symbolic links, copies where links
        are not supported), so any paired recipe (a teacher, GAN Compression) trains on exactly them."""
        import shutil

        root = Path(folder)
        a_dir, b_dir = root / "A", root / "B"
        for d in (a_dir, b_dir):
            d.mkdir(parents=True, exist_ok=True)
        for a, b in self.labeled:
            for src, d in ((Path(a), a_dir), (Path(b), b_dir)):
                dst = d / src.name
                if dst.exists() or dst.is_symlink():
                    continue
                try:
                    dst.symlink_to(src.resolve())
                except OSError:
                    shutil.copy2(src, dst)
        return a_dir, b_dir

    def unlabeled_set(self, *, load_size: int | None, crop_size: int, train: bool = True) -> InputsOnly | None:
        if not self.unlabeled:
            return None
        return InputsOnly([Path(p) for p in self.unlabeled], load_size=load_size, crop_size=crop_size, train=train)


def make_split(
    a_dir: PathLike,
    b_dir: PathLike,
    fraction: float,
    *,
    seed: int = 0,
    direction: str = "AtoB",
    out: PathLike | None = None,
) -> LabelSplit:
    """Split the pairs of ``a_dir``/``b_dir`` (matched by file stem) into labelled and unlabelled parts.

    The unlabelled part keeps only the *input* side (``A`` for AtoB, ``B`` for BtoA). With ``out``, the
    split is written to ``out/split.json``; an existing file must describe the same split (ConfigError
    otherwise), so a resumed run can never silently change its labels.
    """
    if direction not in ("AtoB", "BtoA"):
        raise ConfigError(f"direction must be AtoB or BtoA, got {direction!r}")
    pairs = PairedDataset.from_folders(a_dir, b_dir).pairs
    labeled_idx, unlabeled_idx = label_split(len(pairs), fraction, seed)
    take_input = 0 if direction == "AtoB" else 1
    record = {
        "fraction": float(fraction),
        "seed": int(seed),
        "direction": direction,
        "a_dir": str(Path(a_dir).resolve()),
        "b_dir": str(Path(b_dir).resolve()),
        "n_pairs": len(pairs),
        "labeled": [[str(pairs[i][0]), str(pairs[i][1])] for i in labeled_idx],
        "unlabeled": [str(pairs[i][take_input]) for i in unlabeled_idx],
    }
    if out is not None:
        path = Path(out) / SPLIT_FILE
        if path.is_file():
            old = load_split(out).record
            same = all(old.get(k) == record[k] for k in ("fraction", "seed", "direction", "labeled", "unlabeled"))
            if not same:
                raise ConfigError(
                    f"{path} holds a different split (fraction {old.get('fraction')}, seed {old.get('seed')}); "
                    "use a new run folder"
                )
        else:
            atomic_write_json(path, record)
    return LabelSplit(record)


def load_split(run: PathLike) -> LabelSplit:
    """The split saved in ``run/split.json``."""
    import json

    path = Path(run) / SPLIT_FILE
    if not path.is_file():
        raise ConfigError(f"no label split in {run} ({SPLIT_FILE} is missing)")
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    return LabelSplit(record)
