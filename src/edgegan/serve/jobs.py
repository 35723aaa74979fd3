"""One training job, run in its own process by the server's dispatcher.

Modes (SETGAN's client-server modes):
1. SinGAN baseline: serial training, then one-shot transfer of all scales.
2. Parallel training, then one-shot transfer of scales 0..best (the early exit's choice).
3. Progressive update: parallel training; each scale is exported and published the moment
   it is trained, so a client can start editing with the coarse scales.
"""

from __future__ import annotations

import fcntl
import signal
import time
import traceback
from pathlib import Path
from typing import Any

from edgegan.errors import EdgeganError
from edgegan.serve.store import JobStore

MODES = {1: "serial", 2: "parallel", 3: "parallel"}


def job_dir(data_dir: Path, job_id: str) -> Path:
    return data_dir / "jobs" / job_id


def _terminate(signum: int, frame: Any) -> None:
    # Leave through normal exception handling so the worker pool is torn down with the job.
    raise SystemExit(128 + signum)


def run_job(data_dir: str, job_id: str, threads: int, workers: int) -> None:
    """Process entry point: train (or resume) ``job_id`` and publish its scales."""
    signal.signal(signal.SIGTERM, _terminate)
    data = Path(data_dir)
    store = JobStore(data / "jobs.sqlite")
    folder = job_dir(data, job_id)
    with open(folder / "lock", "w") as lock:
        # One runner per job even if an orphan of a crashed server is still finishing.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _run(store, folder, job_id, threads, workers)
        except SystemExit:
            raise
        except EdgeganError as exc:
            store.update(job_id, status="failed", finished=time.time(), error=str(exc))
        except Exception as exc:  # a bug: keep the traceback for the operator, one line for the client
            (folder / "error.log").write_text(traceback.format_exc())
            store.update(job_id, status="failed", finished=time.time(), error=f"internal error: {type(exc).__name__}")


def _run(store: JobStore, folder: Path, job_id: str, threads: int, workers: int) -> None:
    import torch

    from edgegan.setgan.config import SETGANConfig
    from edgegan.setgan.export import export_scale, is_exported, write_manifest
    from edgegan.setgan.report import finalize
    from edgegan.setgan.train import fit, prepare_run

    torch.set_num_threads(threads)
    job = store.get(job_id)
    if job is None or job["status"] != "running":
        return
    opts, mode = job["options"], job["mode"]
    cfg = SETGANConfig(
        mode=MODES[mode],  # type: ignore[arg-type]
        max_size=opts["max_size"],
        min_size=opts["min_size"],
        iters=opts["iters"],
        nfc=opts["nfc"],
        max_nfc=opts["max_nfc"],
        ckpt_every=max(1, min(250, opts["iters"] // 4 or 1)),
        # The paper's client-server mode ships each scale as soon as it is trained; "refresh" would hold every
        # scale back until the barrier half-way, so the server trains parallel scales on the real image.
        parallel_inputs="real",
    )
    run = prepare_run(folder / "input.png", folder / "run", cfg, resume=True)
    n_scales = run.spec().n_scales
    progress: dict[str, dict[str, Any]] = {
        str(i): {"step": 0, "total": cfg.iters, "done": run.is_done(i)} for i in range(n_scales)
    }
    for i in range(n_scales):
        if progress[str(i)]["done"]:
            progress[str(i)]["step"] = cfg.iters
    store.update(job_id, n_scales=n_scales, progress=progress)
    last_write = [0.0]

    def on_progress(i: int, step: int, total: int) -> None:
        progress[str(i)].update(step=step, total=total)
        now = time.monotonic()
        if now - last_write[0] > 0.5:  # throttled: SQLite writes are cheap, not free
            store.update(job_id, progress=progress)
            last_write[0] = now

    def on_scale_done(i: int) -> None:
        progress[str(i)].update(step=cfg.iters, done=True)
        fields: dict[str, Any] = {"progress": progress}
        if mode == 3:
            export_scale(run, i)
            fields["available"] = write_manifest(run)["available"]
        store.update(job_id, **fields)

    if mode == 3 and run.done_scales():  # resumed: publish what finished before the restart
        for i in run.done_scales():
            if not is_exported(run, i):
                export_scale(run, i)
        store.update(job_id, available=write_manifest(run)["available"])
    fit(
        folder / "input.png",
        folder / "run",
        cfg,
        workers=workers,
        threads=max(1, threads // max(1, workers)),
        resume=True,
        progress=on_progress,
        on_scale_done=on_scale_done,
    )
    report = finalize(run, quality=opts.get("quality"), repeats=3)
    chosen = report["chosen_scales"]
    limit = chosen if mode == 2 and chosen else None
    manifest = write_manifest(run, limit)
    store.update(
        job_id,
        status="done",
        finished=time.time(),
        available=manifest["available"],
        chosen_scales=chosen,
        progress=progress,
    )
