"""Tests for edgegan.data.datasets (tiny images generated into tmp_path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from edgegan.data import PairedDataset, UnpairedDataset, split_validation, subset
from edgegan.errors import ConfigError, EdgeganError, ImageLoadError

SHIFT = 60  # B = A + SHIFT (uint8), so an aligned crop/flip keeps B - A constant


def _pair(seed: int, h: int = 40, w: int = 40) -> tuple[np.ndarray, np.ndarray]:
    a = np.random.default_rng(seed).integers(40, 150, size=(h, w, 3), dtype=np.uint8)
    return a, a + SHIFT


def _make_folders(tmp_path: Path, n: int = 4) -> tuple[Path, Path]:
    """The same n pairs stored as aligned A|B images (``ab/``) and as ``sep/A``, ``sep/B``."""
    ab, sep = tmp_path / "ab", tmp_path / "sep"
    for d in (ab, sep / "A", sep / "B"):
        d.mkdir(parents=True)
    for i in range(n):
        a, b = _pair(i)
        Image.fromarray(np.concatenate([a, b], axis=1)).save(ab / f"{i}.png")
        Image.fromarray(a).save(sep / "A" / f"{i}.png")
        Image.fromarray(b).save(sep / "B" / f"{i}.png")
    return ab, sep


def _offset(item: dict) -> torch.Tensor:
    return item["B"] - item["A"]


def _assert_aligned(item: dict, atol: float = 1e-5) -> None:
    diff = _offset(item)
    torch.testing.assert_close(diff, torch.full_like(diff, SHIFT / 127.5), atol=atol, rtol=0)


# --------------------------------------------------------------------------- paired


def test_aligned_and_folders_give_identical_pairs(tmp_path: Path) -> None:
    ab, sep = _make_folders(tmp_path)
    kw = {"load_size": 48, "crop_size": 32}
    sources = [
        PairedDataset(ab, **kw),
        PairedDataset(sep, **kw),
        PairedDataset.from_folders(sep / "A", sep / "B", **kw),
        PairedDataset([(sep / "A" / f"{i}.png", sep / "B" / f"{i}.png") for i in range(4)], **kw),
    ]
    assert [len(d) for d in sources] == [4, 4, 4, 4]
    for train in (False, True):
        items = []
        for d in sources:
            d.train = train
            torch.manual_seed(123)
            items.append([d[i] for i in range(4)])
        for other in items[1:]:
            for x, y in zip(items[0], other, strict=True):
                torch.testing.assert_close(x["A"], y["A"], atol=0, rtol=0)
                torch.testing.assert_close(x["B"], y["B"], atol=0, rtol=0)
    assert items[0][2]["path"] == str(ab / "2.png")
    assert items[1][2]["path"] == str(sep / "A" / "2.png")


def test_same_crop_and_flip_for_a_and_b(tmp_path: Path) -> None:
    _, sep = _make_folders(tmp_path, n=1)
    a_full = torch.from_numpy(_pair(0)[0].astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    ds = PairedDataset(sep, load_size=None, crop_size=24)  # native 40x40: crops are exact sub-arrays
    found_flip = found_plain = False
    corners = set()
    for _ in range(30):
        item = ds[0]
        assert item["A"].shape == (3, 24, 24) and item["B"].shape == (3, 24, 24)
        _assert_aligned(item, atol=1e-6)
        # locate the crop in the full image, plain or flipped
        for flipped in (False, True):
            crop = item["A"].flip(-1) if flipped else item["A"]
            hits = [
                (t, left)
                for t in range(17)
                for left in range(17)
                if torch.equal(a_full[:, t : t + 24, left : left + 24], crop)
            ]
            if hits:
                corners.add(hits[0])
                found_flip |= flipped
                found_plain |= not flipped
                break
        else:
            pytest.fail("crop not found in the source image")
    assert found_flip and found_plain and len(corners) > 5


def test_alignment_survives_resize(tmp_path: Path) -> None:
    ab, _ = _make_folders(tmp_path, n=2)
    ds = PairedDataset(ab, load_size=56, crop_size=48)
    for _ in range(5):
        item = ds[1]
        assert item["A"].shape == (3, 48, 48)
        _assert_aligned(item, atol=1e-4)
        assert item["A"].min() >= -1 and item["B"].max() <= 1


def test_no_flip_option(tmp_path: Path) -> None:
    _, sep = _make_folders(tmp_path, n=1)
    ds = PairedDataset(sep, load_size=40, crop_size=40, flip=False)
    first = ds[0]["A"]
    for _ in range(10):
        assert torch.equal(ds[0]["A"], first)


def test_direction_swap(tmp_path: Path) -> None:
    ab, sep = _make_folders(tmp_path, n=2)
    for root in (ab, sep):
        fwd = PairedDataset(root, crop_size=32, train=False)[1]
        back = PairedDataset(root, direction="BtoA", crop_size=32, train=False)[1]
        assert torch.equal(fwd["A"], back["B"]) and torch.equal(fwd["B"], back["A"])
    back = PairedDataset(sep, direction="BtoA", crop_size=32, train=False)[1]
    assert back["path"] == str(sep / "B" / "1.png")
    torch.manual_seed(5)
    t_fwd = PairedDataset(ab, load_size=40, crop_size=32)[0]
    torch.manual_seed(5)
    t_back = PairedDataset(ab, direction="BtoA", load_size=40, crop_size=32)[0]
    assert torch.equal(t_fwd["A"], t_back["B"])


def test_eval_is_deterministic_and_uses_no_rng(tmp_path: Path) -> None:
    ab, _ = _make_folders(tmp_path, n=2)
    ds = PairedDataset(ab, load_size=64, crop_size=32, train=False)
    state = torch.get_rng_state()
    torch.manual_seed(1)
    x = ds[0]
    torch.manual_seed(2)
    y = ds[0]
    assert torch.equal(x["A"], y["A"]) and torch.equal(x["B"], y["B"])
    assert x["A"].shape == (3, 32, 32)
    torch.set_rng_state(state)
    before = torch.get_rng_state()
    ds[1]
    assert torch.equal(before, torch.get_rng_state())


def test_training_reproducible_from_global_rng_and_generator(tmp_path: Path) -> None:
    ab, _ = _make_folders(tmp_path, n=2)
    ds = PairedDataset(ab, load_size=40, crop_size=24)
    torch.manual_seed(7)
    x = [ds[0]["A"] for _ in range(4)]
    torch.manual_seed(7)
    y = [ds[0]["A"] for _ in range(4)]
    assert all(torch.equal(p, q) for p, q in zip(x, y, strict=True))
    assert not all(torch.equal(x[0], p) for p in x[1:])

    gen_ds = PairedDataset(ab, load_size=40, crop_size=24, generator=torch.Generator().manual_seed(3))
    state = torch.get_rng_state()
    g1 = [gen_ds[0]["A"] for _ in range(4)]
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched
    gen_ds.generator = torch.Generator().manual_seed(3)
    g2 = [gen_ds[0]["A"] for _ in range(4)]
    assert all(torch.equal(p, q) for p, q in zip(g1, g2, strict=True))


def test_files_selects_and_orders(tmp_path: Path) -> None:
    ab, sep = _make_folders(tmp_path, n=4)
    ds = PairedDataset(ab, files=["3.png", "1"], crop_size=32, train=False)
    assert [ds[i]["path"] for i in range(2)] == [str(ab / "3.png"), str(ab / "1.png")]
    ds = PairedDataset(sep, files=["2"], crop_size=32, train=False)
    assert len(ds) == 1 and ds[0]["path"] == str(sep / "A" / "2.png")
    with pytest.raises(ConfigError, match="not in"):
        PairedDataset(ab, files=["9.png"])


def test_dataloader_batches(tmp_path: Path) -> None:
    ab, _ = _make_folders(tmp_path, n=3)
    loader = DataLoader(PairedDataset(ab, load_size=40, crop_size=32), batch_size=2, shuffle=True, num_workers=0)
    batches = list(loader)
    assert [b["A"].shape[0] for b in batches] == [2, 1]
    assert batches[0]["A"].shape == (2, 3, 32, 32) and batches[0]["B"].shape == (2, 3, 32, 32)
    assert isinstance(batches[0]["path"][0], str)
    diff = batches[0]["B"] - batches[0]["A"]
    torch.testing.assert_close(diff, torch.full_like(diff, SHIFT / 127.5), atol=1e-4, rtol=0)


def test_facades_style_layout(tmp_path: Path) -> None:
    root = tmp_path / "facades"
    for side in ("A", "B"):
        (root / side / "train").mkdir(parents=True)
        for i in (1, 2, 10):
            Image.fromarray(_pair(i)[0]).save(root / side / "train" / f"{i}.jpg")
    ds = PairedDataset.from_folders(root / "A" / "train", root / "B" / "train", crop_size=16, train=False)
    assert len(ds) == 3
    with pytest.raises(ImageLoadError, match="subfolders train"):
        PairedDataset(root)


# --------------------------------------------------------------------------- unpaired


def _make_unpaired(tmp_path: Path, n_a: int = 3, n_b: int = 5) -> Path:
    root = tmp_path / "h2z"
    for phase, na, nb in (("train", n_a, n_b), ("test", 1, 2)):
        for side, n in (("A", na), ("B", nb)):
            d = root / f"{phase}{side}"
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_pair(100 * len(side) + i, 40, 40 + i)[0]).save(d / f"{side.lower()}{i}.png")
    return root


def test_unpaired_lengths_wrapping_and_random_b(tmp_path: Path) -> None:
    root = _make_unpaired(tmp_path)
    ds = UnpairedDataset(root, load_size=36, crop_size=32)
    assert len(ds) == 5
    items = [ds[i] for i in range(5)]
    assert [Path(it["path_A"]).name for it in items] == ["a0.png", "a1.png", "a2.png", "a0.png", "a1.png"]
    assert all(Path(it["path_B"]).parent.name == "trainB" for it in items)
    assert items[0]["A"].shape == (3, 32, 32) and items[0]["B"].shape == (3, 32, 32)
    torch.manual_seed(11)
    drawn = [Path(ds[0]["path_B"]).name for _ in range(40)]
    assert len(set(drawn)) > 1
    torch.manual_seed(11)
    assert [Path(ds[0]["path_B"]).name for _ in range(40)] == drawn

    serial = UnpairedDataset(root, load_size=36, crop_size=32, serial_b=True)
    assert [Path(serial[i]["path_B"]).name for i in range(5)] == [f"b{i}.png" for i in range(5)]

    more_a = UnpairedDataset.from_folders(root / "trainB", root / "trainA", crop_size=16, load_size=20)
    assert len(more_a) == 5 and Path(more_a[4]["path_A"]).name == "b4.png"


def test_unpaired_phase_direction_and_loader(tmp_path: Path) -> None:
    root = _make_unpaired(tmp_path)
    test = UnpairedDataset(root, phase="test", crop_size=16, serial_b=True)
    assert len(test) == 2 and not test.train
    assert torch.equal(test[1]["A"], test[1]["A"])
    back = UnpairedDataset(root, direction="BtoA", crop_size=16, load_size=20)
    assert len(back) == 5 and Path(back[0]["path_A"]).parent.name == "trainB"
    batch = next(iter(DataLoader(UnpairedDataset(root, load_size=36, crop_size=32), batch_size=2)))
    assert batch["A"].shape == (2, 3, 32, 32) and len(batch["path_B"]) == 2


# --------------------------------------------------------------------------- splits


def test_split_validation_deterministic_disjoint_and_rng_free() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    train, val = split_validation(100, fraction=0.2, seed=4)
    torch.manual_seed(99)
    np.random.seed(99)
    state = torch.get_rng_state()
    assert split_validation(100, fraction=0.2, seed=4) == (train, val)
    assert torch.equal(state, torch.get_rng_state())
    assert len(val) == 20 and len(train) == 80
    assert not set(train) & set(val) and sorted(train + val) == list(range(100))
    assert train == sorted(train) and val == sorted(val)
    assert split_validation(100, fraction=0.2, seed=5)[1] != val
    assert split_validation(5, fraction=0.01)[1] != []  # at least one validation item
    assert split_validation(2, fraction=0.9) != ([], [0, 1])
    assert len(split_validation(2, fraction=0.9)[0]) == 1
    assert split_validation(10, fraction=0.0) == (list(range(10)), [])
    for bad in ({"n": 0}, {"n": 10, "fraction": 1.0}, {"n": 10, "fraction": -0.1}, {"n": 10, "seed": -1}):
        with pytest.raises(ConfigError):
            split_validation(**bad)


def test_subset(tmp_path: Path) -> None:
    ab, _ = _make_folders(tmp_path, n=4)
    ds = PairedDataset(ab, crop_size=16, train=False)
    train, val = split_validation(len(ds), fraction=0.25)
    sub = subset(ds, val)
    assert len(sub) == 1 and sub[0]["path"] == ds[val[0]]["path"]
    assert len(subset(ds, train)) == 3
    with pytest.raises(ConfigError, match="out of range"):
        subset(ds, [4])


# --------------------------------------------------------------------------- errors


def test_error_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="not found"):
        PairedDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageLoadError, match="no image files"):
        PairedDataset(tmp_path / "empty")
    with pytest.raises(ImageLoadError, match="not found"):
        UnpairedDataset(tmp_path / "empty")
    (tmp_path / "empty" / "trainA").mkdir()
    (tmp_path / "empty" / "trainB").mkdir()
    with pytest.raises(ImageLoadError, match="no image files"):
        UnpairedDataset(tmp_path / "empty")
    with pytest.raises(ImageLoadError, match="not found"):
        PairedDataset.from_folders(tmp_path / "x", tmp_path / "y")
    (tmp_path / "half" / "A").mkdir(parents=True)
    with pytest.raises(ImageLoadError, match="no B/"):
        PairedDataset(tmp_path / "half")


def test_error_unmatched_names(tmp_path: Path) -> None:
    _, sep = _make_folders(tmp_path, n=3)
    (sep / "A" / "0.png").rename(sep / "A" / "x.png")
    (sep / "A" / "1.png").rename(sep / "A" / "y.png")
    (sep / "B" / "2.png").rename(sep / "B" / "z.png")
    with pytest.raises(ConfigError) as err:
        PairedDataset(sep)
    msg = str(err.value)
    assert "\n" not in msg
    assert "3 A files have no B file (e.g. 2.png)" in msg
    assert "3 B files have no A file (e.g. 0.png)" in msg


def test_error_odd_width_and_too_small(tmp_path: Path) -> None:
    (tmp_path / "odd").mkdir()
    Image.fromarray(np.zeros((40, 81, 3), np.uint8)).save(tmp_path / "odd" / "o.png")
    with pytest.raises(ImageLoadError, match=r"even width.*o\.png"):
        PairedDataset(tmp_path / "odd", load_size=40, crop_size=32)[0]
    ab, _ = _make_folders(tmp_path, n=1)
    with pytest.raises(ImageLoadError, match=r"too small to crop.*0\.png"):
        PairedDataset(ab, load_size=None, crop_size=48)[0]


def test_error_unreadable_file(tmp_path: Path) -> None:
    ab, sep = _make_folders(tmp_path, n=2)
    (ab / "1.png").write_bytes(b"not a png at all")
    ds = PairedDataset(ab, crop_size=16, train=False)
    ds[0]
    with pytest.raises(ImageLoadError, match=r"1\.png"):
        ds[1]
    (sep / "B" / "0.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"B.0\.png"):
        PairedDataset(sep, crop_size=16)[0]


def test_error_bad_arguments(tmp_path: Path) -> None:
    ab, _ = _make_folders(tmp_path, n=1)
    with pytest.raises(ConfigError, match="direction"):
        PairedDataset(ab, direction="AB")
    with pytest.raises(ConfigError, match="direction"):
        UnpairedDataset(tmp_path, direction="btoa")
    with pytest.raises(ConfigError, match="crop_size"):
        PairedDataset(ab, load_size=32, crop_size=64)
    with pytest.raises(ConfigError, match="crop_size"):
        PairedDataset(ab, crop_size=0)
    with pytest.raises(ConfigError, match="empty"):
        PairedDataset([])
    with pytest.raises(IndexError):
        PairedDataset(ab)[5]
    assert issubclass(ConfigError, EdgeganError)
