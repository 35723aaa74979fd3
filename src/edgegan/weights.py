"""Pretrained weights: found locally, verified by hash, never downloaded behind the user's back.

Lookup order for a known file: an explicit path (CLI ``--weights``; a file or a folder),
the ``EDGEGAN_WEIGHTS`` environment variable (a file or a folder, ``os.pathsep``-separated),
then torch's hub cache (``$TORCH_HOME/hub/checkpoints``). Files whose published name carries
a sha256 prefix (``pt_inception-2015-12-05-6726825d.pth``) are checked against it. Only
``edgegan weights fetch NAME`` downloads, and only when asked.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from edgegan.errors import EdgeganError

ENV_VAR = "EDGEGAN_WEIGHTS"


class WeightsError(EdgeganError, FileNotFoundError):
    """A weights file is missing, has the wrong hash, or cannot be read."""


@dataclass(frozen=True)
class WeightsSpec:
    name: str  # short name used on the command line
    filename: str  # the published file name
    url: str
    sha256_prefix: str | None  # from the published file name, when it carries one
    used_for: str


KNOWN: dict[str, WeightsSpec] = {
    spec.name: spec
    for spec in (
        WeightsSpec(
            "inception-fid",
            "pt_inception-2015-12-05-6726825d.pth",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
            "6726825d",
            "FID, KID and SIFID (the TensorFlow FID Inception-v3, ported to PyTorch)",
        ),
        WeightsSpec(
            "alexnet",
            "alexnet-owt-7be5be79.pth",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            "7be5be79",
            "LPIPS backbone (torchvision AlexNet)",
        ),
        WeightsSpec(
            "lpips-alex",
            "alex.pth",
            "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
            None,
            "LPIPS v0.1 linear heads for AlexNet",
        ),
        WeightsSpec(
            "vgg16",
            "vgg16-397923af.pth",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "397923af",
            "UGC/OMGD perceptual feature and style losses (torchvision VGG16)",
        ),
    )
}


def get_spec(name: str) -> WeightsSpec:
    if name not in KNOWN:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(KNOWN)}")
    return KNOWN[name]


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(spec: WeightsSpec, path: Path) -> Path:
    """Check ``path`` against the hash prefix in the spec's published name."""
    if spec.sha256_prefix is not None:
        digest = sha256_of(path)
        if not digest.startswith(spec.sha256_prefix):
            raise WeightsError(
                f"{path} is not {spec.filename}: its sha256 starts with {digest[:8]}, expected {spec.sha256_prefix}; "
                f"download it again from {spec.url}"
            )
    return path


def _candidates(spec: WeightsSpec, explicit: str | os.PathLike[str] | None) -> list[Path]:
    """Where to look, in order. An explicit file may have any name (the hash decides);
    folders (explicit, from the environment, the hub cache) must hold the published name."""
    out: list[Path] = []
    if explicit:
        p = Path(explicit)
        out.append(p / spec.filename if p.is_dir() else p)
    for entry in filter(None, os.environ.get(ENV_VAR, "").split(os.pathsep)):
        p = Path(entry)
        out.append(p if p.name == spec.filename else p / spec.filename)
    out.append(cache_dir() / spec.filename)
    return out


def find(name: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Locate and verify the weights file ``name``; a clear WeightsError says where to put it."""
    spec = get_spec(name)
    if path is not None and not Path(path).exists():
        raise WeightsError(f"weights path {path} does not exist (needed: {spec.filename}, for {spec.used_for})")
    for candidate in _candidates(spec, path):
        if candidate.is_file():
            return verify(spec, candidate)
    raise WeightsError(
        f"{spec.filename} not found (needed for {spec.used_for}); put it in {cache_dir()} or a folder named by "
        f"${ENV_VAR} or --weights, or run `edgegan weights fetch {spec.name}` on a machine that is online"
    )


def available(name: str, path: str | os.PathLike[str] | None = None) -> tuple[Path | None, str | None]:
    """(path, None) when ``name`` is found and verified, else (None, the reason)."""
    try:
        return find(name, path), None
    except WeightsError as exc:
        return None, str(exc)


def load_state_dict(name: str, path: str | os.PathLike[str] | None = None) -> dict[str, Tensor]:
    """Find, verify and read a weights file without unpickling arbitrary objects."""
    from edgegan.runs import load_torch_weights

    return load_torch_weights(find(name, path))


def fetch(name: str, dest: str | os.PathLike[str] | None = None, url: str | None = None) -> Path:
    """Download the published file to ``dest`` (default: the torch hub cache), verifying it."""
    spec = get_spec(name)
    folder = Path(dest) if dest else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / spec.filename
    with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{spec.filename}.", delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            with urllib.request.urlopen(url or spec.url, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
        except OSError as exc:
            tmp_path.unlink(missing_ok=True)
            raise WeightsError(f"cannot download {spec.filename} from {url or spec.url}: {exc}") from None
    try:
        verify(spec, tmp_path)
    except WeightsError:
        tmp_path.unlink(missing_ok=True)
        raise
    os.replace(tmp_path, target)
    return target
