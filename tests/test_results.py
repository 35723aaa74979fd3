"""The recipes' typed results: each is its dataclass with fields of the declared types, real paths and finite
figures, and it still reads as the dict the recipe returned before (which ``summary.json`` holds)."""

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from edgegan.compress import (
    CycleGANResult,
    DistillResult,
    PipelineResult,
    Pix2PixResult,
    RecipeResult,
    SupernetResult,
)
from edgegan.compress.distill import DistillConfig, distill_from_folders
from edgegan.compress.recipe_parts import json_safe
from edgegan.compress.supernet_train import SupernetConfig, train_supernet_from_folders
from edgegan.compress.teacher import CycleGANConfig, Pix2PixConfig, train_cyclegan, train_pix2pix
from edgegan.data import save_image
from edgegan.fileio import atomic_write_json
from edgegan.models import ResnetGenerator
from edgegan.ugc.common import make_discriminator
from edgegan.ugc.data import make_split
from edgegan.ugc.pipeline import preset, run_ugc
from edgegan.ugc.results import UGCPipelineResult, UGCStage1Result, UGCStage2Result
from edgegan.ugc.stage1 import build_supernet, train_stage1
from edgegan.ugc.stage2 import train_stage2

TINY_G = {"ngf": 4, "n_blocks": 1}
SIZE = {"load_size": 32, "crop_size": 32}


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type ``hint`` (unions, ``None``, containers by their origin)."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin is not None:
        return isinstance(value, origin)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_result(result: RecipeResult, cls: type, summary_file: Path | None = None) -> dict[str, Any]:
    """Check ``result``'s class, field types, paths and figures, and its dict view; returns ``to_dict()``."""
    assert type(result) is cls and dataclasses.is_dataclass(result)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        assert _matches(value, hints[f.name]), (f.name, value, hints[f.name])
        if isinstance(value, Path):
            assert value.exists(), (f.name, value)
        if isinstance(value, float):
            assert math.isfinite(value), (f.name, value)
    old = result.to_dict()
    omitted = result._omit_when_none  # keys the old dict had only when set
    kept = [f.name for f in dataclasses.fields(result) if getattr(result, f.name) is not None or f.name not in omitted]
    assert type(old) is dict and list(old) == kept
    # The dict access kept for scripts written before: the same keys and values, paths as str.
    assert list(result) == list(old) and len(result) == len(old) and {**result} == old
    for key, value in old.items():
        assert key in result and result[key] == value and result.get(key) == value
        assert not isinstance(value, Path)
        if isinstance(getattr(result, key), Path):
            assert value == str(getattr(result, key))
    assert "no_such_key" not in result and result.get("no_such_key", 7) == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.run = Path("elsewhere")  # type: ignore[misc]
    if summary_file is not None:
        # What the recipe wrote is the result's dict, byte for byte as atomic_write_json writes it.
        assert json.loads(summary_file.read_text()) == json_safe(old)
        again = summary_file.with_name("again.json")
        atomic_write_json(again, json_safe(old))
        assert again.read_bytes() == summary_file.read_bytes()
    return old


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """6 pairs of smooth 32×32 images, B = A with colours inverted and channels rolled."""
    root = tmp_path_factory.mktemp("pairs")
    gen = torch.Generator().manual_seed(1)
    for i in range(6):
        a = F.interpolate(torch.rand(1, 3, 8, 8, generator=gen) * 2 - 1, size=32, mode="bilinear")[0]
        save_image(a, root / "A" / f"{i}.png")
        save_image(-a.roll(1, dims=0), root / "B" / f"{i}.png")
    return root / "A", root / "B"


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return ResnetGenerator(ngf=8, n_blocks=3).save(tmp_path_factory.mktemp("teacher") / "teacher")


def test_pix2pix_result(pairs, tmp_path):
    cfg = Pix2PixConfig(generator_options=dict(TINY_G), ndf=4, n_layers_d=1, epochs=1, decay_epochs=1, **SIZE)
    result = train_pix2pix(*pairs, tmp_path / "run", dataclasses.replace(cfg, select_by="ssim"))
    check_result(result, Pix2PixResult)
    assert result.run == tmp_path / "run" and result.best_generator == result.run / "best_generator"
    assert (result.epochs, result.epochs_run, result.resumed_from) == (2, 2, None)
    assert result.best_epoch in (1, 2) and isinstance(result.best_metric, float)
    assert result.discriminator == {"n_layers": 1, "patch": 16, "auto": False}
    assert result.last_metrics and all(math.isfinite(v) for v in result.last_metrics.values())
    again = train_pix2pix(*pairs, tmp_path / "run", dataclasses.replace(cfg, select_by="ssim"), resume=True)
    check_result(again, Pix2PixResult)
    assert (again.epochs_run, again.resumed_from, again.last_metrics) == (0, 2, {})


def test_cyclegan_result(tmp_path):
    gen = torch.Generator().manual_seed(2)
    for i in range(3):
        for side in ("A", "B"):
            image = F.interpolate(torch.rand(1, 3, 4, 4, generator=gen) * 2 - 1, size=32, mode="bilinear")[0]
            save_image(image, tmp_path / "data" / f"train{side}" / f"{i}.png")
    cfg = CycleGANConfig(generator_options=dict(TINY_G), ndf=4, n_layers_d=1, pool_size=2, epochs=1, decay_epochs=0)
    result = train_cyclegan(tmp_path / "data", tmp_path / "run", dataclasses.replace(cfg, **SIZE))
    old = check_result(result, CycleGANResult)
    assert result.G_A == result.last_G_A == tmp_path / "run" / "G_A" and old["G_B"] == str(tmp_path / "run" / "G_B")
    assert (result.best_epoch, result.best_metric, result.select_by) == (1, None, "last")


def test_distill_result(pairs, teacher_dir, tmp_path):
    cfg = DistillConfig(channels="4_4_4_4_4_4_4_4", epochs=1, decay_epochs=1, ndf=8, d_layers=2, val_fraction=0.2)
    result = distill_from_folders(teacher_dir, *pairs, tmp_path / "run", dataclasses.replace(cfg, select_by="ssim"))
    check_result(result, DistillResult, tmp_path / "run" / "summary.json")
    assert result.selection == "val_ssim" and isinstance(result.best_score, float)
    assert result.selected_metrics == next(r for r in result.history if r["epoch"] == result.best_epoch)
    assert result.best_student == tmp_path / "run" / "best_student" and len(result.history) == 2
    assert result.student_channels == [4] * 8 and 0 < result.student_params < result.teacher_params


def test_supernet_result(pairs, teacher_dir, tmp_path):
    cfg = SupernetConfig(ngf=8, choices=(4, 8), epochs=1, decay_epochs=1, ndf=8, d_layers=2, val_fraction=0.2)
    result = train_supernet_from_folders(
        teacher_dir, *pairs, tmp_path / "run", dataclasses.replace(cfg, select_by="psnr")
    )
    check_result(result, SupernetResult, tmp_path / "run" / "summary.json")
    assert (
        result.supernet == tmp_path / "run" / "best_supernet" and result.last_supernet == tmp_path / "run" / "supernet"
    )
    assert isinstance(result.best_score, float) and result.init is None and result.val_reference == "target"
    assert result.largest_config == [8] * 8 and result.smallest_config == [4] * 8
    assert 0 < result.smallest_params < result.largest_params


def test_dict_view_is_the_old_dict():
    """The dict view by hand: paths read as str, a key the old dict lacked while unset stays absent."""
    partial = PipelineResult(run=Path("runs/gc"), stages={"teacher": {"epochs": 1}}, ran=["teacher"], skipped=[])
    assert partial.to_dict() == {
        "run": "runs/gc",
        "stages": {"teacher": {"epochs": 1}},
        "ran": ["teacher"],
        "skipped": [],
    }
    assert "summary" not in partial and partial.get("summary") is None and partial.summary is None
    with pytest.raises(KeyError):
        partial["summary"]
    done = dataclasses.replace(partial, summary={"size": 32})
    assert done["summary"] == {"size": 32} and list(done) == ["run", "stages", "ran", "skipped", "summary"]
    assert done != partial and done == dataclasses.replace(partial, summary={"size": 32})
    assert json_safe(done) == done.to_dict() and type(json_safe(done)) is dict  # ready for a JSON file, as before


# ------------------------------------------------------------------ UGC


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No VGG16, Inception or LPIPS weights anywhere: the substitutes and SSIM are what run (fast, deterministic)."""
    monkeypatch.setenv("EDGEGAN_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "none"))


def test_ugc_stage1_result(pairs, tmp_path, no_weights):
    cfg = preset("tiny", labeled_fraction=0.5)
    split = make_split(*pairs, 0.5, seed=0, out=tmp_path / "split")
    result = train_stage1(split, tmp_path / "run", cfg)
    check_result(result, UGCStage1Result, tmp_path / "run" / "summary.json")
    assert result.supernet == tmp_path / "run" / "supernet" and result.discriminator == result.run / "discriminator"
    assert (result.epochs, result.resumed_from, len(result.history)) == (1, None, 1) and result.unlabeled_used
    assert set(result.data) == {"labeled_train", "labeled_val", "unlabeled"}


def test_ugc_stage2_result(pairs, tmp_path, no_weights):
    cfg = preset("tiny", labeled_fraction=0.5, select_by="ssim")
    split = make_split(*pairs, 0.5, seed=0, out=tmp_path / "split")
    torch.manual_seed(3)
    net = build_supernet(cfg)
    choices = net.gene_choices(cfg.widths, cfg.depths, cfg.trunk_depths)
    small, large = net.smallest_config(choices), net.largest_config(choices)
    searched = {"student": {"best_config": list(small)}, "wide": {"best_config": list(large)}}
    searched["deep"] = {"best_config": list(small[:10] + large[10:])}
    result = train_stage2(split, net, make_discriminator(cfg), searched, tmp_path / "run", cfg)
    old = check_result(result, UGCStage2Result, tmp_path / "run" / "summary.json")
    assert result.student == tmp_path / "run" / "best_student" and old["student"] == str(result.student)
    assert result.last_student == result.run / "last_student" and (result.select_by, result.selected_epoch) == (
        "ssim",
        1,
    )
    assert result.last == result.history[-1] and result.genes["student"] == list(small)


def test_ugc_pipeline_result(pairs, tmp_path, no_weights):
    cfg = preset("tiny", labeled_fraction=0.5)
    partial = run_ugc(*pairs, tmp_path / "ugc", cfg, until="stage1")
    old = check_result(partial, UGCPipelineResult)
    assert partial.student is None and "student" not in partial and list(old) == ["run", "stages"]
    result = run_ugc(*pairs, tmp_path / "ugc", cfg)
    old = check_result(result, UGCPipelineResult)
    assert list(old) == ["run", "stages", "student"] and old["student"] is result.student
    assert list(result.stages) == ["split", "stage1", "search", "stage2", "export"]
    for stage, summary in result.stages.items():  # each stage's summary is what its marker recorded
        assert json.loads((result.run / stage / "stage.json").read_text())["summary"] == summary, stage
    assert result.student(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
