"""GAN Compression pipeline: all stages on tiny data, markers, resume after --until, auto budget, CLI."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import edgegan
from edgegan.compress.distill_cli import app
from edgegan.compress.pipeline import (
    PRESETS,
    STAGES,
    PipelineConfig,
    PipelineResult,
    preset,
    resolve_budget,
    run_pipeline,
    scaled,
    stage_done,
)
from edgegan.data import save_image
from edgegan.errors import ConfigError
from edgegan.models import MobileResnetGenerator
from edgegan.profile.macs import profile_macs


@pytest.fixture
def folders(tmp_path):
    """6 pairs of 32×32 images: smooth random A, B = A with colours inverted and channels rolled."""
    gen = torch.Generator().manual_seed(1)
    a_dir, b_dir = tmp_path / "A", tmp_path / "B"
    for i in range(6):
        a = F.interpolate(torch.rand(1, 3, 8, 8, generator=gen) * 2 - 1, size=32, mode="bilinear")[0]
        save_image(a, a_dir / f"{i}.png")
        save_image(-a.roll(1, dims=0), b_dir / f"{i}.png")
    return a_dir, b_dir


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One complete tiny run shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("pipeline")
    gen = torch.Generator().manual_seed(1)
    for i in range(6):
        a = F.interpolate(torch.rand(1, 3, 8, 8, generator=gen) * 2 - 1, size=32, mode="bilinear")[0]
        save_image(a, tmp / "A" / f"{i}.png")
        save_image(-a.roll(1, dims=0), tmp / "B" / f"{i}.png")
    events = []
    result = run_pipeline(tmp / "A", tmp / "B", tmp / "run", "tiny", progress=lambda s, e, _: events.append((s, e)))
    return tmp, result, events


def test_tiny_runs_all_stages(full_run):
    tmp, result, events = full_run
    assert result["ran"] == list(STAGES) and result["skipped"] == []
    assert [e for e in events if e[1] == "done"] == [(s, "done") for s in STAGES]
    for stage in STAGES:
        assert (tmp / "run" / stage / "stage.json").is_file()
    summary = json.loads((tmp / "run" / "export" / "summary.json").read_text())
    assert summary == result["summary"]
    student = edgegan.load(summary["student"]["path"])
    assert isinstance(student, MobileResnetGenerator)
    cost = profile_macs(student, student.example_input(32))
    assert cost.macs_gc == summary["student"]["macs_gc"] <= summary["budget_macs"]
    assert (tmp / "run" / "export" / "student.onnx").is_file()
    assert summary["student"]["onnx_max_abs_diff"] < 1e-3
    assert summary["compression"]["macs_gc"] == pytest.approx(
        summary["teacher"]["macs_gc"] / summary["student"]["macs_gc"]
    )
    assert summary["compression"]["macs_gc"] >= 10
    assert set(summary["stages"]) == set(STAGES[:-1])
    assert summary["val_psnr"]["student"] is not None and summary["val_ssim"]["student"] is not None
    assert result["stages"]["search"]["metric"] == "ssim"  # candidates ranked by SSIM; PSNR kept beside it
    assert set(result["stages"]["search"]["best_metrics"]) == {"psnr", "ssim"}
    # Each stage starts from what the one before it ended on: the last epoch's generator and discriminator.
    run = tmp / "run"
    lineage = summary["lineage"]
    assert lineage["distill"]["teacher"] == str(run / "teacher" / "last_generator")
    assert lineage["distill"]["discriminator"] == str(run / "teacher" / "last_discriminator")
    assert lineage["distill"]["student"].startswith("teacher's leading channels (stem, down.0")
    assert lineage["supernet"]["supernet"] == str(run / "distill" / "best_student")
    assert lineage["supernet"]["discriminator"] == str(run / "distill" / "last_discriminator")
    assert lineage["search"]["supernet"] == str(run / "supernet" / "supernet")
    assert lineage["finetune"]["student"] == str(run / "search" / "student")
    assert lineage["finetune"]["discriminator"] == str(run / "supernet" / "last_discriminator")
    assert lineage["export"]["student"] == str(run / "finetune" / "best_student")
    for stage in ("distill", "supernet", "finetune"):
        assert result["stages"][stage]["select_by"] == "last"
        assert "inherited: true" in (run / stage / "config.yaml").read_text(), stage
    # The distilled student is the supernet's full width, so the supernet started as exactly that student.
    student = edgegan.load(run / "distill" / "best_student")
    assert student.config.channels == (8,) * 8


def test_the_pipeline_returns_a_typed_result(full_run):
    """A PipelineResult whose dict view is what run_pipeline returned before; stage summaries are their markers'."""
    tmp, result, _ = full_run
    assert type(result) is PipelineResult and result.run == tmp / "run"
    assert (result.ran, result.skipped) == (list(STAGES), [])
    assert result.summary == json.loads((tmp / "run" / "export" / "summary.json").read_text())
    assert result.stages == {stage: stage_done(tmp / "run", stage) for stage in STAGES}
    assert result.to_dict() == {
        "run": str(tmp / "run"),
        "stages": result.stages,
        "ran": result.ran,
        "skipped": [],
        "summary": result.summary,
    }
    assert result["run"] == str(tmp / "run") and "summary" in result
    # The trainers' stage summaries are their results' dicts (the distill stage's with its last history rows).
    distilled = json.loads((tmp / "run" / "distill" / "summary.json").read_text())
    assert {k: v for k, v in result.stages["distill"].items() if k != "init"} == distilled


def test_a_run_without_the_distill_stage_skips_it(full_run, tmp_path):
    """A run folder whose supernet completed before the distill stage existed continues without it."""
    tmp, result, _ = full_run
    old = tmp_path / "run"
    shutil.copytree(tmp / "run", old)
    shutil.rmtree(old / "distill")
    again = run_pipeline(tmp / "A", tmp / "B", old, "tiny")
    assert again["ran"] == [] and again["skipped"] == list(STAGES)


def test_auto_budget_is_a_tenth_of_the_teacher(full_run):
    tmp, result, _ = full_run
    teacher_dir = result["stages"]["teacher"]["best_generator"]
    teacher = edgegan.load(teacher_dir)
    expected = profile_macs(teacher, teacher.example_input(32)).macs_gc // 10
    assert resolve_budget("auto", teacher_dir, 32) == expected
    assert result["stages"]["search"]["budget_macs"] == expected
    assert resolve_budget("1.5M", teacher_dir, 32) == 1_500_000


def test_rerun_skips_every_stage(full_run):
    tmp, first, _ = full_run
    before = {s: (tmp / "run" / s / "stage.json").stat().st_mtime_ns for s in STAGES}
    again = run_pipeline(tmp / "A", tmp / "B", tmp / "run", "tiny")
    assert again["ran"] == [] and again["skipped"] == list(STAGES)
    assert again["summary"] == first["summary"]
    assert {s: (tmp / "run" / s / "stage.json").stat().st_mtime_ns for s in STAGES} == before


def test_until_then_rerun_completes(folders, tmp_path):
    a, b = folders
    part = run_pipeline(a, b, tmp_path / "run", "tiny", until="supernet")
    assert part["ran"] == ["teacher", "distill", "supernet"] and "summary" not in part
    assert stage_done(tmp_path / "run", "search") is None
    with pytest.raises(ConfigError, match="has not completed"):
        run_pipeline(a, b, tmp_path / "run", "tiny", only="export")
    rest = run_pipeline(a, b, tmp_path / "run", "tiny")
    assert rest["skipped"] == ["teacher", "distill", "supernet"]
    assert rest["ran"] == ["search", "finetune", "export"]
    assert rest["summary"]["student"]["macs_gc"] <= rest["summary"]["budget_macs"]


def test_interrupted_stage_resumes(folders, tmp_path, full_run):
    """A stage folder without a marker is continued with resume=True; an external teacher skips training."""
    a, b = folders
    _, result, _ = full_run
    teacher_dir = result["stages"]["teacher"]["best_generator"]
    run = tmp_path / "run"
    run_pipeline(a, b, run, "tiny", teacher_dir=teacher_dir, until="supernet")
    assert stage_done(run, "teacher")["external"] is True
    assert stage_done(run, "distill")["init"]["discriminator"] == "fresh"  # an external teacher brings no critic
    (run / "supernet" / "stage.json").unlink()  # as if killed after its last epoch
    again = run_pipeline(a, b, run, "tiny", teacher_dir=teacher_dir, only="supernet")
    assert again["ran"] == ["supernet"]
    assert again["stages"]["supernet"]["resumed_from"] is not None
    with pytest.raises(ConfigError, match="teacher"):
        run_pipeline(a, b, run, "tiny", teacher_dir=run / "supernet" / "supernet", until="teacher")


def test_bad_preset_and_stage(folders, tmp_path):
    a, b = folders
    with pytest.raises(ConfigError, match="preset"):
        preset("nope")
    with pytest.raises(ConfigError, match="preset"):
        run_pipeline(a, b, tmp_path / "run", "nope")
    with pytest.raises(ConfigError, match="until"):
        run_pipeline(a, b, tmp_path / "run", "tiny", until="train")
    with pytest.raises(ConfigError, match="only"):
        run_pipeline(a, b, tmp_path / "run", "tiny", only="deploy")
    with pytest.raises(ConfigError):
        PipelineConfig(budget_macs="lots")
    with pytest.raises(ConfigError, match="direction"):
        cfg = preset("tiny")
        PipelineConfig(teacher=cfg.teacher, supernet=cfg.supernet, finetune=cfg.finetune.__class__(direction="BtoA"))


def test_presets():
    assert set(PRESETS) == {"tiny", "facades-cpu", "editor-cpu", "facades-gpu"}
    cpu = preset("facades-cpu")
    assert cpu.direction == "BtoA" and cpu.teacher.crop_size == 64 and cpu.teacher.load_size == 72
    assert cpu.search_size == 64 and cpu.budget_macs == "auto"
    gpu = preset("facades-gpu")
    assert gpu.teacher.crop_size == 256 and gpu.teacher.epochs + gpu.teacher.decay_epochs == 200
    half = scaled(cpu, 0.5)
    assert half.teacher.epochs == cpu.teacher.epochs // 2 and cpu.teacher.epochs == 20
    assert half.distill.epochs == cpu.distill.epochs // 2 and cpu.distill.epochs == cpu.finetune.epochs
    for cfg in (cpu, gpu, preset("tiny")):
        assert cfg.search_metric == "ssim"
        for stage in (cfg.distill, cfg.supernet, cfg.finetune):
            assert (stage.lambda_recon, stage.lambda_distill, stage.select_by) == (100.0, 1.0, "last")
    assert preset("tiny").with_direction("BtoA").finetune.direction == "BtoA"
    editor = preset("editor-cpu")  # photo -> an editor's output: the teacher gets the input paths
    assert editor.direction == "AtoB" and editor.teacher.load_size == editor.teacher.crop_size == 64
    assert editor.teacher.generator_options["residual"] and editor.teacher.generator_options["input_skip"]


def test_cli_distill_student_finetunes(folders, tmp_path, full_run):
    a, b = folders
    _, result, _ = full_run
    teacher_dir = result["stages"]["teacher"]["best_generator"]
    student_dir = result["stages"]["search"]["student"]["model_dir"]
    given = edgegan.load(student_dir)
    args = ["distill", "--teacher", teacher_dir, "--a", str(a), "--b", str(b), "--out", str(tmp_path / "ft")]
    args += ["--student", student_dir, "--epochs", "1", "--decay-epochs", "0", "--load-size", "32"]
    args += ["--crop-size", "32", "--ndf", "8"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    tuned = edgegan.load(tmp_path / "ft" / "last_student")
    assert isinstance(tuned, MobileResnetGenerator)
    assert tuned.config.channels == given.config.channels
    changed = any(
        not torch.equal(p, q) for p, q in zip(tuned.state_dict().values(), given.state_dict().values(), strict=True)
    )
    assert changed
    bad = CliRunner().invoke(app, [*args[:-8], "--student", teacher_dir, "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0


def test_cli_run(folders, tmp_path):
    a, b = folders
    base = ["run", "--a", str(a), "--b", str(b), "--out", str(tmp_path / "run"), "--preset", "tiny"]
    res = CliRunner().invoke(app, [*base, "--until", "search", "--budget-macs", "auto"])
    assert res.exit_code == 0, res.output
    assert "stage teacher: starting" in res.output and "stopped after search" in res.output
    res = CliRunner().invoke(app, base)
    assert res.exit_code == 0, res.output
    assert "stage search: complete, skipped" in res.output and "stage export: done" in res.output
    assert "compression" in res.output and "teacher" in res.output
    bad = CliRunner().invoke(app, [*base, "--preset", "huge"])
    assert bad.exit_code != 0
    bad_metric = CliRunner().invoke(app, [*base, "--search-metric", "mse"])
    assert isinstance(bad_metric.exception, ConfigError) and "search_metric" in str(bad_metric.exception)
