"""UGC vs GAN Compression at equal labelled fractions on facades (CPU preset).

Usage: python bench/ugc.py [--task labels2photo|cool|...] [--fractions 0.25,1.0] [--ablations 0.25] [--data DIR]
                           [--gc-run DIR] [--out DIR]

``--task`` as in ``bench/gan_compression.py``: ``labels2photo`` (default; out ``bench/results/ugc``, GAN
Compression run ``bench/results/gan_compression/pipeline``), or an editor name: facades photos -> that editor's
output at 64 px (the data that bench prepares in ``bench/results/gan_compression_<editor>/data``; out
``bench/results/ugc_<editor>``), where PSNR/SSIM against the target measure fidelity. On an editor task the
GAN Compression rows use the ``editor-cpu`` preset and UGC the same input paths (``residual``, ``input_skip``),
loads without crop jitter (64 px), and the report adds the identity row (output = input).

For each labelled fraction f (split of facades/*/train by seed 0, saved as ``f*/split/split.json``):

* ``teacher``: the pix2pix ResNet teacher (GAN Compression's facades-cpu teacher) trained on the labelled
  pairs only; at f = 1.0 the GAN Compression bench's teacher is reused when ``--gc-run`` holds it.
* ``gan_compression``: GAN Compression's pipeline (facades-cpu preset) on the labelled pairs with the
  budget set to 1.4G MACs at 256 px (87.5M at its 64 px search size), about 1/40 of the teacher at 256 px;
  at f = 1.0 its teacher and supernet stages are reused from ``--gc-run``.
* ``ugc``: the UGC pipeline (facades-cpu preset) with the same budget; the unlabelled remainder is used.
  Its stages run the same number of optimisation steps at every fraction (the preset's 3+3 epochs are
  defined at f = 0.25 and scaled by the labelled-set size), so a bigger labelled set is not more compute.
* ablations at the ``--ablations`` fractions: ``ugc_no_u_stage1`` (the sub-networks distil on labelled
  inputs instead of unlabelled ones) and ``ugc_no_u_stage2`` (stage 1 reused, no unlabelled data in stage 2).

Evaluation on facades/*/test (report only, never for selection; checkpoints are chosen on a slice of the
labelled training pairs): MACs (GAN Compression convention and true) and parameters at 256 px, ONNX Runtime
CPU latency at 256 px (batch 1; every row timed round-robin, median of 30), PSNR/SSIM vs ground truth at
64 px. Every row is resumable; rerun the same command to continue. Writes ``out/results.json`` and
``out/report.md`` (sample grids).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gan_compression import DIRECTION, TASKS, Identity, _capped, _costs, _data_dirs, _unit, task_data  # noqa: E402

import edgegan  # noqa: E402
from edgegan.compress.pipeline import preset as gc_preset  # noqa: E402
from edgegan.compress.pipeline import run_pipeline, stage_done  # noqa: E402
from edgegan.data.datasets import PairedDataset  # noqa: E402
from edgegan.fileio import atomic_write_json  # noqa: E402
from edgegan.metrics.reference import psnr, ssim  # noqa: E402
from edgegan.profile import machine_info, machine_line  # noqa: E402
from edgegan.profile.latency import onnx_latency_interleaved  # noqa: E402
from edgegan.report import write_report  # noqa: E402
from edgegan.report.curves import late_gain, read_curve  # noqa: E402
from edgegan.ugc.data import make_split  # noqa: E402
from edgegan.ugc.pipeline import preset as ugc_preset  # noqa: E402
from edgegan.ugc.pipeline import run_ugc  # noqa: E402
from edgegan.ugc.pipeline import stage_done as ugc_stage_done  # noqa: E402

BUDGET_256 = 1_400_000_000  # MACs (GC convention) at 256 px: ~1/40 of the 56.8G pix2pix ResNet teacher
EVAL_SIZE = 64
GRID_IMAGES = 5
BASE_FRACTION = 0.25  # the UGC preset's epochs are defined at this fraction (equal steps elsewhere)
ROWS = ("teacher", "gan_compression", "ugc", "ugc_no_u_stage1", "ugc_no_u_stage2")


def _tag(f: float) -> str:
    return f"f{round(f * 100):03d}"


# An editor task (photo -> editor output at 64 px): no crop jitter, and the input paths the papers' layout lacks.
EDITOR_UGC = {"direction": "AtoB", "load_size": 64, "crop_size": 64, "residual": True, "input_skip": True}


def _ugc_cfg(f: float, n_pairs: int, task: str = "labels2photo", scale: float = 1.0, **overrides: Any) -> Any:
    """The UGC preset at fraction ``f`` with the same steps at every fraction, ``scale`` times the preset's."""
    if task != "labels2photo":
        overrides = {**EDITOR_UGC, **overrides}
    base = ugc_preset("facades-cpu")
    n_base = max(1, round(n_pairs * BASE_FRACTION))
    n_f = max(1, round(n_pairs * f))
    out: dict[str, Any] = {"labeled_fraction": f, **overrides}
    for stage in (1, 2):
        const, decay = getattr(base, f"stage{stage}_epochs"), getattr(base, f"stage{stage}_decay_epochs")
        total = max(2, round(scale * (const + decay) * n_base / n_f))
        out[f"stage{stage}_epochs"] = total - total // 2
        out[f"stage{stage}_decay_epochs"] = total // 2
    return ugc_preset("facades-cpu", **out)


def _gc_cfg(f: float, task: str = "labels2photo") -> Any:
    import dataclasses

    editor = task != "labels2photo"
    cfg = gc_preset("editor-cpu" if editor else "facades-cpu").with_direction("AtoB" if editor else DIRECTION)

    size = cfg.search_size
    return dataclasses.replace(cfg, budget_macs=str(BUDGET_256 * size * size // (256 * 256)))


def _seed_from_gc_run(gc_run: Path, run: Path) -> bool:
    """Copy the completed teacher and supernet stage markers of the GAN Compression bench into ``run``."""
    if stage_done(gc_run, "teacher") is None or stage_done(gc_run, "supernet") is None:
        return False
    for stage in ("teacher", "supernet"):
        (run / stage).mkdir(parents=True, exist_ok=True)
        shutil.copy2(gc_run / stage / "stage.json", run / stage / "stage.json")
    return True


@torch.no_grad()
def _evaluate(
    models: dict[str, torch.nn.Module], a_test: Path, b_test: Path, direction: str = DIRECTION
) -> tuple[dict, list]:
    data = PairedDataset.from_folders(
        a_test, b_test, direction=direction, load_size=EVAL_SIZE, crop_size=EVAL_SIZE, train=False, flip=False
    )
    scores: dict[str, dict[str, list[torch.Tensor]]] = {n: {"psnr": [], "ssim": []} for n in models}
    grid: list[list[torch.Tensor]] = [[] for _ in range(2 + len(models))]
    for i in range(len(data)):
        item = data[i]
        x, y = item["A"][None], item["B"][None]
        outs = {n: m(x) for n, m in models.items()}
        for n, fake in outs.items():
            scores[n]["psnr"].append(_capped(psnr(_unit(fake), _unit(y))))
            scores[n]["ssim"].append(ssim(_unit(fake), _unit(y)).double())
        if i < GRID_IMAGES:
            for row, img in zip(grid, [x, y, *outs.values()], strict=True):
                row.append(img[0].clamp(-1, 1))
    return {
        n: {k: float(torch.cat(v).mean()) for k, v in s.items()} | {"test_images": len(data)} for n, s in scores.items()
    }, grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="labels2photo", choices=TASKS, help="labels2photo, or an editor's output")
    ap.add_argument("--fractions", default="0.25,1.0")
    ap.add_argument(
        "--ugc-epochs-scale",
        type=float,
        nargs="+",
        default=[],
        help="also train a row ugc_x<S> with S times the preset's UGC epochs (a longer budget), at --long-at; "
        "several values, several rows",
    )
    ap.add_argument("--long-at", default="0.25", help="fractions that get the ugc_x<S> row")
    ap.add_argument("--ablations", default="0.25", help="fractions that also get the two ablation rows ('' for none)")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--gc-run", type=Path, default=None, help="default: the GAN Compression bench's run of --task")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/ugc[_<editor>]")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--train-only", action="store_true", help="train every row, skip the evaluation")
    ap.add_argument(
        "--eval-only",
        action="store_true",
        help="train nothing: evaluate the rows that are complete and list the missing ones in the report",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=130)
    editor_task = args.task != "labels2photo"
    suffix = f"_{args.task}" if editor_task else ""
    args.gc_run = args.gc_run or Path(f"bench/results/gan_compression{suffix}/pipeline")
    args.out = args.out or Path(f"bench/results/ugc{suffix}")
    direction = "AtoB" if editor_task else DIRECTION
    dirs = task_data(_data_dirs(args.data), args.task, Path(f"bench/results/gan_compression{suffix}/data"))
    fractions = [float(f) for f in args.fractions.split(",") if f]
    ablations = {float(f) for f in args.ablations.split(",") if f}
    n_pairs = len(PairedDataset.from_folders(dirs["A_train"], dirs["B_train"]))
    out: Path = args.out
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def log(msg: str) -> None:
        console.log(f"[{time.perf_counter() - t0:6.0f} s] {msg}")

    row_names = ROWS + tuple(f"ugc_x{s:g}" for s in args.ugc_epochs_scale)
    trained: dict[str, dict[str, Path]] = {}
    runs: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    for f in fractions:
        root = out / _tag(f)
        split = make_split(dirs["A_train"], dirs["B_train"], f, seed=0, direction=direction, out=root / "split")
        lab_a, lab_b = split.link_labeled(root / "labeled")
        log(f"fraction {f}: {len(split.labeled)} labelled pairs, {len(split.unlabeled)} unlabelled inputs")
        paths: dict[str, Path] = {}
        info: dict[str, Any] = {"labeled": len(split.labeled), "unlabeled": len(split.unlabeled)}

        variants: list[tuple[str, dict[str, Any], Path | None]] = [("ugc", {}, None)]
        if f in {float(v) for v in args.long_at.split(",") if v}:
            variants += [(f"ugc_x{s:g}", {"scale": s}, None) for s in args.ugc_epochs_scale]
        if f in ablations:
            variants += [
                ("ugc_no_u_stage2", {"use_unlabeled_stage2": False}, root / "ugc" / "stage1"),
                ("ugc_no_u_stage1", {"use_unlabeled_stage1": False}, None),
            ]
        for name, overrides, stage1_from in variants:
            cfg = _ugc_cfg(f, n_pairs, args.task, **overrides)
            if args.eval_only:
                done = ugc_stage_done(root / name, "export")
                if done is None:
                    missing.append(f"{_tag(f)}/{name}")
                else:
                    paths[name] = Path(done["model_dir"])
                    search_done = ugc_stage_done(root / name, "search") or {}
                    info[name] = {
                        "epochs": [
                            cfg.stage1_epochs + cfg.stage1_decay_epochs,
                            cfg.stage2_epochs + cfg.stage2_decay_epochs,
                        ],
                        "search": {k: search_done.get(k) for k in ("student", "wide", "deep")},
                        "perceptual": (ugc_stage_done(root / name, "stage2") or {}).get("perceptual"),
                    }
                continue
            started = time.perf_counter()
            res = run_ugc(
                dirs["A_train"],
                dirs["B_train"],
                root / name,
                cfg,
                stage1_from=stage1_from,
                progress=lambda s, e, _i, f=f, name=name: log(f"fraction {f} {name} {s}: {e}"),
            )
            timings[f"{_tag(f)}/{name}"] = time.perf_counter() - started
            paths[name] = Path(res["stages"]["export"]["model_dir"])
            info[name] = {
                "epochs": [cfg.stage1_epochs + cfg.stage1_decay_epochs, cfg.stage2_epochs + cfg.stage2_decay_epochs],
                "search": {k: res["stages"]["search"][k] for k in ("student", "wide", "deep")},
                "perceptual": res["stages"]["stage2"]["perceptual"],
            }
            assert json.loads((root / name / "split" / "split.json").read_text())["labeled"] == split.record["labeled"]
        # GAN Compression on the labelled pairs (its teacher stage is the teacher row).
        gc_run = root / "gan_compression"
        if args.eval_only:
            teacher_done = stage_done(gc_run, "teacher")
            if teacher_done is None and f == 1.0 and args.gc_run is not None:
                teacher_done = stage_done(args.gc_run, "teacher")
            export_done = stage_done(gc_run, "export")
            for name, done, key in (
                ("teacher", teacher_done, "best_generator"),
                ("gan_compression", export_done, None),
            ):
                if done is None:
                    missing.append(f"{_tag(f)}/{name}")
                else:
                    paths[name] = Path(done[key] if key else done["student"]["path"])
            trained[_tag(f)] = {k: paths[k] for k in row_names if k in paths}
            runs[_tag(f)] = info
            continue
        fresh = not (gc_run / "teacher" / "stage.json").is_file()
        if f == 1.0 and fresh and args.gc_run is not None and args.gc_run.is_dir():
            # The GAN Compression bench trains the same teacher and supernet on all pairs: wait for it
            # rather than train them twice.
            while stage_done(args.gc_run, "supernet") is None:
                log(f"fraction {f}: waiting for {args.gc_run} to finish its supernet stage")
                time.sleep(60)
            _seed_from_gc_run(args.gc_run, gc_run)
            log(f"fraction {f}: reusing the teacher and supernet of {args.gc_run}")
        started = time.perf_counter()
        res = run_pipeline(
            lab_a,
            lab_b,
            gc_run,
            _gc_cfg(f, args.task),
            progress=lambda s, e, _i, f=f: log(f"fraction {f} gan_compression {s}: {e}"),
        )
        timings[f"{_tag(f)}/gan_compression"] = time.perf_counter() - started
        paths["teacher"] = Path(res["summary"]["teacher"]["path"])
        paths["gan_compression"] = Path(res["summary"]["student"]["path"])
        info["gan_compression_budget_64px"] = _gc_cfg(f, args.task).budget_macs

        trained[_tag(f)] = {k: paths[k] for k in row_names if k in paths}
        runs[_tag(f)] = info
    if args.train_only:
        log("trained every row; evaluation skipped (--train-only)")
        return

    log("evaluating on the test pairs (report only) and timing ONNX Runtime at 256x256")
    results: dict[str, Any] = {}
    grids: dict[str, list] = {}
    labels: dict[str, list[str]] = {}
    for tag, paths in trained.items():
        models = {n: edgegan.load(p).eval().cpu() for n, p in paths.items()}
        if editor_task:
            models["identity"] = Identity()
        quality, grid = _evaluate(models, dirs["A_test"], dirs["B_test"], direction)
        rows = {}
        for n, m in models.items():
            cost = _costs(f"{tag}_{n}", m, out / "onnx") if n != "identity" else {}
            rows[n] = {**cost, **quality[n]}
        results[tag] = rows
        grids[tag] = grid
        labels[tag] = ["input", "target", *models]
    # Re-time every exported row round-robin: single runs drifted by up to 2x on this VM between models timed
    # minutes apart (same network: 27 ms in one run, 42 ms in another), which would distort the ratios.
    onnx_paths = {
        f"{tag}/{n}": row["onnx"] for tag, rows in results.items() for n, row in rows.items() if "onnx" in row
    }
    log(f"timing {len(onnx_paths)} ONNX models round-robin")
    x = torch.randn(1, 3, 256, 256)
    for key, timing in onnx_latency_interleaved(onnx_paths, x, threads=torch.get_num_threads()).items():
        tag, n = key.split("/")
        results[tag][n]["latency_ms"] = timing.median_ms
        results[tag][n]["latency"] = timing.to_dict() | {"method": "interleaved round-robin, all rows"}
    full_teacher = results.get("f100", {}).get("teacher")
    claims: dict[str, Any] = {}
    if "f025" in results:
        r = results["f025"]
        claims["ugc_beats_gc_at_25pct"] = r["ugc"]["psnr"] > r["gan_compression"]["psnr"]
        claims["ugc_minus_gc_psnr_db_at_25pct"] = r["ugc"]["psnr"] - r["gan_compression"]["psnr"]
        if full_teacher is not None:
            claims["ugc_25pct_minus_full_teacher_psnr_db"] = r["ugc"]["psnr"] - full_teacher["psnr"]
            claims["ugc_25pct_matches_full_teacher"] = r["ugc"]["psnr"] >= full_teacher["psnr"] - 0.1
        for s_ in args.ugc_epochs_scale:  # the longer budgets: does UGC close the gap with more epochs?
            name = f"ugc_x{s_:g}"
            if name in r:
                claims[f"{name}_minus_gc_psnr_db_at_25pct"] = r[name]["psnr"] - r["gan_compression"]["psnr"]
        for name in ("ugc", *(f"ugc_x{s_:g}" for s_ in args.ugc_epochs_scale)):
            curve = read_curve(out / "f025" / name / "stage2", "val_psnr_student")
            if curve:  # validation PSNR of the student over the last quarter of stage 2: still learning?
                claims[f"{name}_stage2_val_psnr_last"] = curve[-1][1]
                claims[f"{name}_stage2_late_gain_db"] = late_gain(curve)
    if editor_task:
        claims["min_trained_minus_identity_psnr_db"] = min(
            r["psnr"] - rows["identity"]["psnr"]
            for rows in results.values()
            for n, r in rows.items()
            if n != "identity"
        )
    info = machine_info("cpu")
    record = {
        "task": args.task,
        "direction": direction,
        "budget_macs_256": BUDGET_256,
        "eval_size": EVAL_SIZE,
        "fractions": fractions,
        "runs": runs,
        "results": results,
        "claims": claims,
        "missing_rows": missing,
        "train_seconds_this_invocation": timings,
        "machine": info,
        "machine_line": machine_line(info),
    }
    atomic_write_json(out / "results.json", record)

    task_title = "labels -> photo" if not editor_task else f"photo -> {args.task} editor"
    table = Table(title=f"UGC vs GAN Compression, facades {task_title} (test set, 64 px)")
    for col in ("fraction", "model", "MACs (GC) @256", "MACs @256", "params", "ORT ms @256", "PSNR", "SSIM"):
        table.add_column(col, justify="right")
    lines = []
    for tag, rows in results.items():
        for n, r in rows.items():
            if "macs" not in r:  # the identity baseline
                table.add_row(tag, n, "-", "-", "-", "-", f"{r['psnr']:.2f}", f"{r['ssim']:.4f}")
                lines.append(f"{tag} {n} (output = input): PSNR {r['psnr']:.2f}, SSIM {r['ssim']:.4f}")
                continue
            table.add_row(
                tag,
                n,
                f"{r['macs_gc'] / 1e9:.3f} G",
                f"{r['macs'] / 1e9:.3f} G",
                f"{r['params'] / 1e6:.3f} M",
                f"{r['latency_ms']:.1f}",
                f"{r['psnr']:.2f}",
                f"{r['ssim']:.4f}",
            )
            lines.append(
                f"{tag} {n}: macs_gc {r['macs_gc'] / 1e9:.3f} G, macs {r['macs'] / 1e9:.3f} G, params "
                f"{r['params']:,}, ORT {r['latency_ms']:.1f} ms, PSNR {r['psnr']:.2f}, SSIM {r['ssim']:.4f}"
            )
    console.print(table)
    for k, v in claims.items():
        console.print(f"{k}: {v}")
    metrics = {
        f"{tag} {n} {k}": r[k]
        for tag, rows in results.items()
        for n, r in rows.items()
        for k in ("macs_gc", "params", "latency_ms", "psnr", "ssim")
        if k in r
    }
    write_report(
        out,
        title=f"UGC vs GAN Compression on facades ({task_title}) at equal labelled fractions",
        metrics=metrics,
        grids=grids,
        grid_labels=labels,
        notes=[
            *lines,
            *(f"{k}: {v}" for k, v in claims.items()),
            *([f"rows not trained yet (rerun the bench to finish them): {', '.join(missing)}"] if missing else []),
            f"machine: {machine_line(info)}",
        ],
    )
    console.print(f"machine: {machine_line(info)}; wrote {out / 'results.json'} and {out / 'report.md'}")


if __name__ == "__main__":
    main()
