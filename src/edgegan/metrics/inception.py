"""The TensorFlow FID Inception-v3 (as ported by pytorch-fid), for FID, KID and SIFID.

Module names follow torchvision's ``Inception3`` layout (1008 classes, no aux logits), so the
published ``pt_inception-2015-12-05-6726825d.pth`` loads strictly without renaming. Where it
differs from torchvision's network, it reproduces the TensorFlow graph behind the FID reference numbers:
the average-pool branches exclude padding from the mean, and the last block (``Mixed_7c``)
max-pools in its pool branch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from edgegan import weights
from edgegan.weights import WeightsError

FID_SIZE = 299
FEATURE_DIM = 2048
SPATIAL_DIM = 64
NUM_CLASSES = 1008  # the TF graph's classifier: 1000 ImageNet classes plus 8 unused


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3, as in TF) + ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int | tuple[int, int], **kwargs: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, bias=False, **kwargs)  # type: ignore[arg-type]
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: Tensor) -> Tensor:
    # TF's average pool divides by the number of valid (non-padding) inputs.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """``max_pool=True`` reproduces the TF graph's last block, which max-pools in its pool branch."""

    def __init__(self, cin: int, *, max_pool: bool = False) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """FID Inception-v3: ``forward`` gives [N, 2048] pool features, ``spatial_features`` the
    64-channel map after the first block (SIFID)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        # Unused by FID, but part of the published file, which must load strictly.
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    @staticmethod
    def _normalize(x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, H, W] in [0, 1], got shape {tuple(x.shape)}")
        return 2 * x - 1  # the TF graph takes [-1, 1]

    def _block0(self, x: Tensor) -> Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        return F.max_pool2d(x, kernel_size=3, stride=2)

    def spatial_features(self, x: Tensor) -> Tensor:
        """[N, 3, H, W] in [0, 1] -> [N, 64, h, w] (no resizing; SIFID treats positions as samples)."""
        return self._block0(self._normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        """[N, 3, H, W] in [0, 1] -> [N, 2048]; resized bilinearly to 299×299 unless already that size."""
        if x.dim() == 4 and tuple(x.shape[-2:]) != (FID_SIZE, FID_SIZE):
            x = F.interpolate(x, size=(FID_SIZE, FID_SIZE), mode="bilinear", align_corners=False)
        x = self._block0(self._normalize(x))
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def clean_resize(x: Tensor, size: int = FID_SIZE) -> Tensor:
    """Clean-FID's resize: each channel as a 32-bit float PIL image, bicubic, no uint8 round trip.

    [N, C, H, W] float in [0, 1] -> [N, C, size, size], clipped to [0, 1] as Clean-FID clips to
    [0, 255]; returned on the input's device. Already ``size``×``size`` input is returned as is.
    """
    if x.dim() != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(x.shape)}")
    if tuple(x.shape[-2:]) == (size, size):
        return x
    arr = x.detach().to("cpu", torch.float32).numpy()
    out = np.empty((*arr.shape[:2], size, size), dtype=np.float32)
    for i in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            # A 2-D float32 array becomes a mode "F" image, resized in float precision.
            img = Image.fromarray(np.ascontiguousarray(arr[i, c]))
            out[i, c] = np.asarray(img.resize((size, size), resample=Image.Resampling.BICUBIC))
    np.clip(out, 0.0, 1.0, out=out)
    return torch.from_numpy(out).to(x.device)


def _fill_num_batches_tracked(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Add the BatchNorm step counters a file may lack (older or converted state dicts omit them);
    they do not affect eval-mode outputs."""
    state = dict(state)
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    return state


def _mismatch(model: nn.Module, state: dict[str, Tensor]) -> str | None:
    """One-line description of how ``state`` differs from the model's keys and shapes, or None."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != expected[k]
    )
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            shown = ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
            parts.append(f"{len(items)} {label}: {shown}")
    return "; ".join(parts) or None


def load_fid_inception(
    path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu"
) -> FIDInceptionV3:
    """Find and verify ``pt_inception-2015-12-05-6726825d.pth`` (see :mod:`edgegan.weights`), load it
    strictly and return the network in eval mode on ``device``."""
    from edgegan.runs import load_torch_weights

    # Same as weights.load_state_dict, but keeping the resolved path for error messages.
    found = weights.find("inception-fid", path)
    state = load_torch_weights(found)
    model = FIDInceptionV3()
    state = _fill_num_batches_tracked(model, state)
    problem = _mismatch(model, state)
    if problem is not None:
        raise WeightsError(f"{found} is not an FID Inception-v3 state dict ({problem})")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _batches(images: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    chunks: Iterable[Tensor] = [images] if isinstance(images, Tensor) else images
    for chunk in chunks:
        if chunk.dim() == 3:
            chunk = chunk.unsqueeze(0)
        yield from chunk.split(batch_size)


def _count(images: Tensor | Iterable[Tensor]) -> int | None:
    if isinstance(images, Tensor):
        return 1 if images.dim() == 3 else images.shape[0]
    if isinstance(images, list | tuple):
        return sum(1 if t.dim() == 3 else t.shape[0] for t in images)
    return None  # a generator: unknown until consumed


def extract_features(
    model: FIDInceptionV3,
    images: Tensor | Iterable[Tensor],
    *,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    resize: str = "clean",
    progress: bool = False,
) -> np.ndarray:
    """Pool features [N, 2048] (float64) of images [N, 3, H, W] in [0, 1], or of an iterable of such
    batches (to stream folders). ``resize="clean"`` uses :func:`clean_resize`; ``"bilinear"`` lets the
    model resize. The model is moved to ``device`` and put in eval mode."""
    if resize not in ("clean", "bilinear"):
        raise ValueError(f"resize must be 'clean' or 'bilinear', got {resize!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    model = model.to(device).eval()
    out: list[np.ndarray] = []

    def run(bar: object | None = None, task: object | None = None) -> None:
        for batch in _batches(images, batch_size):
            batch = batch.to(device, torch.float32)
            if resize == "clean":
                batch = clean_resize(batch)
            out.append(model(batch).double().cpu().numpy())
            if bar is not None:
                bar.advance(task, batch.shape[0])  # type: ignore[attr-defined]

    with torch.no_grad():
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = (TextColumn("Inception features"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(*columns, transient=True) as bar:
                run(bar, bar.add_task("features", total=_count(images)))
        else:
            run()
    if not out:
        return np.zeros((0, FEATURE_DIM), dtype=np.float64)
    return np.concatenate(out, axis=0)
