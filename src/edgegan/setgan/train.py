"""SETGAN training.

``train_scale`` is one scale's WGAN-GP loop (D steps, then G steps, inline). Around it:

* ``serial`` (SinGAN): coarse to fine; scale i learns to refine what the trained scales
  0..i-1 generate, and may start from scale i-1's weights.
* ``parallel`` (SETGAN): scale i refines the up-sampled *real* image of scale i-1, so the
  scales are independent and a pool of worker processes trains them at once.
* ``parallel`` with ``parallel_inputs="shuffle"``: still independent scales, but the adversarial steps refine
  the real coarser image in a random layout (flipped, circularly shifted), since random samples of the
  coarser scales rearrange the image; the reconstruction path keeps the real image.
* ``parallel`` with ``parallel_inputs="refresh"``: two parallel phases. Every scale first trains
  ``refresh_at`` of its iterations on the real coarser image, as above; after that barrier, scale i
  finishes its adversarial steps on fresh random samples through scales 0..i-1 as they stood at the barrier
  (SinGAN's ``draw_concat``), so it also learns to correct what the coarser scales really generate; the
  reconstruction path keeps the real coarser image.

Both resume: finished scales are skipped, an interrupted scale continues from its last
intra-scale checkpoint.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import os
import queue as queue_mod
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from edgegan.data.images import load_image
from edgegan.errors import CheckpointError, ConfigError, EdgeganError
from edgegan.losses import GANLoss, gradient_penalty
from edgegan.models.singan import SinGANDiscriminator, SinGANGenerator
from edgegan.registry import load as load_model
from edgegan.runs import RunDir, check_finite, load_checkpoint, save_checkpoint
from edgegan.setgan.config import SETGANConfig, upgrade_names
from edgegan.setgan.pyramid import SETGANPyramid, compute_pyramid, real_pyramid, resize
from edgegan.setgan.run import SETGANRun
from edgegan.setgan.schedule import rank_share, scale_costs, schedule

Progress = Callable[[int, int, int], None]  # (scale, iteration done, iterations)
ScaleDone = Callable[[int], None]  # called in the training process as each scale is saved


@dataclass
class ScaleInputs:
    """What one scale trains on."""

    real: torch.Tensor  # [1, 3, h, w] in [-1, 1]
    draw_prev: Callable[[], torch.Tensor]  # the coarser image this scale refines (fresh per D step)
    rec_prev: torch.Tensor  # the coarser image of the reconstruction path
    noise_amp: float


def _noise(scale: int, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    # Scale 0 draws one channel repeated over the colours (SinGAN), finer scales three.
    if scale == 0:
        return torch.randn(1, 1, *size, device=device).expand(1, 3, *size)
    return torch.randn(1, 3, *size, device=device)


def _upgrade_scale(saved: dict[str, Any]) -> dict[str, Any]:
    """A scale's saved ``config.yaml`` in today's spelling (an older run's ``beta1``/``beta2``)."""
    return {**saved, "config": upgrade_names(saved["config"])} if isinstance(saved.get("config"), dict) else saved


def train_scale(
    i: int,
    cfg: SETGANConfig,
    data: ScaleInputs,
    z_rec: torch.Tensor,
    work_dir: Path,
    device: str = "cpu",
    init_from: tuple[SinGANGenerator, SinGANDiscriminator] | None = None,
    progress: Progress | None = None,
    stop: int | None = None,
) -> tuple[SinGANGenerator, SinGANDiscriminator, float]:
    """Train scale ``i`` and return (G, D, seconds of this call). Resumes from ``work_dir``.

    ``stop`` (< ``cfg.iters``) ends this call after that many iterations with a checkpoint there, so a later
    call (with other inputs) continues the same optimisation, schedules included."""
    started = time.perf_counter()
    # Seeded by scale index, so a scale trains the same whatever order or process runs it.
    torch.manual_seed(cfg.seed * 1009 + i)
    dev = torch.device(device)
    g = SinGANGenerator(channels=cfg.channels(i), num_layers=cfg.num_layers, kernel=cfg.kernel).to(dev)
    d = SinGANDiscriminator(channels=cfg.channels(i), num_layers=cfg.num_layers, kernel=cfg.kernel).to(dev)
    if init_from is not None:
        g.load_state_dict(init_from[0].state_dict())
        d.load_state_dict(init_from[1].state_dict())
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=cfg.betas)
    drop = [max(1, round(cfg.lr_drop_at * cfg.iters))]
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, milestones=drop, gamma=0.1)
    sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, milestones=drop, gamma=0.1)
    objs = {
        "modules": {"G": g, "D": d},
        "optimizers": {"G": opt_g, "D": opt_d},
        "schedulers": {"G": sched_g, "D": sched_d},
    }
    log = RunDir(
        work_dir, {"scale": i, "config": cfg.to_dict()}, resume=True, allow_config_change=True, upgrade=_upgrade_scale
    )
    ckpt = load_checkpoint(log, **objs, map_location=dev)
    start = ckpt.step if ckpt else 0

    gan = GANLoss("wgangp")
    real = data.real.to(dev)
    size = tuple(real.shape[-2:])
    rec_prev = data.rec_prev.to(dev)
    # Reconstruction: scale 0 maps the fixed noise to the image, finer scales refine with zero noise.
    rec_noise = z_rec.to(dev).expand(1, 3, *size) if i == 0 else torch.zeros_like(real)
    loss_d = loss_adv = loss_rec = torch.zeros(())
    end = cfg.iters if stop is None else min(stop, cfg.iters)
    for it in range(start, end):
        # D steps: critic on real patches vs. fresh fakes, with the gradient penalty.
        for _ in range(cfg.d_steps):
            prev = data.draw_prev().to(dev)
            noise = data.noise_amp * _noise(i, size, dev)
            fake = g(prev, noise)
            # SinGAN's penalty: per-pixel gradient norm over the channels, one α for the batch.
            singan = cfg.gp_form == "singan"
            gp = gradient_penalty(d, real, fake, cfg.gp_weight, per_pixel=singan, shared_alpha=singan)
            loss_d = gan(d(real), True) + gan(d(fake.detach()), False) + gp
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        # G steps: fool the critic and reconstruct the real image from the fixed noise.
        for _ in range(cfg.g_steps):
            fake = g(prev, noise)  # recomputed with the current weights at every step
            loss_adv = gan(d(fake), True, for_discriminator=False)
            loss_rec = cfg.alpha * F.mse_loss(g(rec_prev, rec_noise), real)
            opt_g.zero_grad(set_to_none=True)
            (loss_adv + loss_rec).backward()
            opt_g.step()
        sched_d.step()
        sched_g.step()
        step = it + 1
        check_finite(step, checkpoint=log, loss_D=loss_d, loss_G=loss_adv, loss_rec=loss_rec)
        if step % 50 == 0 or step == cfg.iters:
            log.log(step, loss_D=loss_d, loss_G=loss_adv, loss_rec=loss_rec)
        if (step % cfg.ckpt_every == 0 or step == end) and step < cfg.iters:
            save_checkpoint(log, step, **objs, keep=1)
        if progress is not None:
            progress(i, step, cfg.iters)
    return g.eval(), d.eval(), time.perf_counter() - started


# ---------------------------------------------------------------------------------- setup


def reconstruction_seed(seed: int) -> int:
    """The seed of the fixed reconstruction noise: a stream of its own, so that sampling with a plain seed
    (``torch.Generator().manual_seed(seed)``, as every sampler here does) never redraws it and a "random"
    sample never silently reproduces the training image."""
    digest = hashlib.sha256(f"edgegan.setgan.reconstruction:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def prepare_run(
    image: str | Path | torch.Tensor,
    out: str | Path,
    cfg: SETGANConfig,
    *,
    resume: bool = False,
    max_pixels: int | None = None,
) -> SETGANRun:
    """Create (or reopen with ``resume``) a run folder holding the real pyramid."""
    run = SETGANRun(out)
    if run.exists():
        if not resume:
            raise CheckpointError(f"{run.path} already holds a SETGAN run; pass --resume to continue it")
        saved = run.config()
        if saved.to_dict() != cfg.to_dict():
            diff = [k for k, v in cfg.to_dict().items() if saved.to_dict().get(k) != v]
            if set(diff) - {"ckpt_every", "quality_draws"}:  # mixing modes would mix two methods
                raise CheckpointError(f"cannot resume {run.path} with different settings: {', '.join(diff)}")
            run.update_config(cfg)  # the report reads quality_draws from the run, so keep the one asked for
        return run
    if isinstance(image, torch.Tensor):
        img = image if image.dim() == 4 else image[None]
        desc: dict[str, Any] = {"source": "tensor"}
    else:
        kw = {"max_pixels": max_pixels} if max_pixels else {}
        img = load_image(image, **kw)[None]
        desc = {"source": str(image)}
    h, w = img.shape[-2:]
    spec = compute_pyramid(h, w, cfg.max_size, cfg.min_size, cfg.factor)
    reals = real_pyramid(img.float(), spec)
    gen = torch.Generator().manual_seed(reconstruction_seed(cfg.seed))
    z_rec = torch.randn(1, 1, *spec.sizes[0], generator=gen)
    run.path.mkdir(parents=True, exist_ok=True)
    RunDir(run.path, {"setgan": cfg.to_dict(), "image": desc}, resume=True, allow_config_change=True)
    run.save_reals(reals, z_rec)
    run.write_info(spec, cfg, {**desc, "width": int(w), "height": int(h)})
    return run


def _parallel_inputs(run: SETGANRun, i: int, cfg: SETGANConfig) -> ScaleInputs:
    reals, _ = run.load_reals()
    real = reals[i]
    if i == 0:
        prev = torch.zeros_like(real)
        return ScaleInputs(real, lambda: prev, prev, 1.0)
    prev = resize(reals[i - 1], tuple(real.shape[-2:]))
    amp = cfg.noise_amp_init * math.sqrt(F.mse_loss(real, prev).item())
    if cfg.parallel_inputs == "shuffle":
        return ScaleInputs(real, lambda: rearranged(prev), prev, amp)
    return ScaleInputs(real, lambda: prev, prev, amp)


def rearranged(image: torch.Tensor) -> torch.Tensor:
    """``image`` flipped left-right with probability 1/2 and shifted circularly by a random offset in each
    direction (the global RNG, so a scale's seed fixes the draws): the same content in another layout."""
    h, w = image.shape[-2:]
    if torch.rand(()) < 0.5:
        image = image.flip(-1)
    dy, dx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    return image.roll((dy, dx), dims=(-2, -1))


def _refresh_inputs(run: SETGANRun, i: int, cfg: SETGANConfig) -> ScaleInputs:
    """Phase 2 of ``refresh``: the adversarial steps refine fresh samples through scales 0..i-1 as they stood at
    the refresh point. The reconstruction path keeps the real coarser image (and the noise amplitude its RMSE):
    trained on the snapshot's reconstruction, each scale learnt to undo that snapshot's own error, which the
    finished coarser scales no longer make, so the corrections piled up (measured at 32 px, 150 iterations:
    reconstruction 20.6, 16.8, 11.9, 10.1 dB at scales 0..3, the image drifting paler, against 20.4 dB for
    the paper's parallel mode)."""
    data = _parallel_inputs(run, i, cfg)
    if i == 0:
        return data
    coarser = run.load_phase1_pyramid(i - 1)
    size = tuple(data.real.shape[-2:])
    sizes = coarser.sizes

    def draw_prev() -> torch.Tensor:
        noises = coarser.noises(1, sizes, i - 1)
        return resize(coarser.run(noises, sizes)[-1], size).cpu()

    return ScaleInputs(data.real, draw_prev, data.rec_prev, data.noise_amp)


def _serial_inputs(run: SETGANRun, i: int, cfg: SETGANConfig, coarser: SETGANPyramid | None) -> ScaleInputs:
    reals, _ = run.load_reals()
    real = reals[i]
    size = tuple(real.shape[-2:])
    if i == 0 or coarser is None:
        prev = torch.zeros_like(real)
        return ScaleInputs(real, lambda: prev, prev, 1.0)
    sizes = coarser.sizes

    def draw_prev() -> torch.Tensor:
        # SinGAN's draw_concat('rand'): a fresh sample through the trained coarser scales.
        noises = coarser.noises(1, sizes, i - 1)
        return resize(coarser.run(noises, sizes)[-1], size).cpu()

    rec_prev = resize(coarser.reconstruct(i - 1), size).cpu()
    amp = cfg.noise_amp_init * math.sqrt(F.mse_loss(real, rec_prev).item())
    return ScaleInputs(real, draw_prev, rec_prev, amp)


def _finish(
    run: SETGANRun,
    i: int,
    g: SinGANGenerator,
    d: SinGANDiscriminator,
    amp: float,
    seconds: float,
    mode: str,
    threads: int,
    device: str,
) -> None:
    d.cpu().save(run.discriminator_dir(i))  # kept for the next scale's warm start
    run.finish_scale(
        i,
        g,
        {
            "noise_amp": amp,
            "train_seconds": seconds,
            "mode": mode,
            "threads": threads,
            "device": device,
            "channels": g.config.channels,
        },
    )  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------- serial


def train_serial(
    run: SETGANRun,
    cfg: SETGANConfig,
    *,
    device: str = "cpu",
    progress: Progress | None = None,
    stop_when: Callable[[int], bool] | None = None,
    on_scale_done: ScaleDone | None = None,
) -> list[int]:
    """Coarse to fine in this process; returns the scales trained now. ``stop_when(i)`` may end
    training early (e.g. once the quality threshold is met after scale i)."""
    spec = run.spec()
    trained = []
    for i in range(spec.n_scales):
        if run.is_done(i):
            if stop_when is not None and stop_when(i):
                break
            continue
        coarser = run.load_pyramid(i - 1, device) if i > 0 else None
        data = _serial_inputs(run, i, cfg, coarser)
        init = None
        if cfg.warm_start and i > 0 and cfg.channels(i) == cfg.channels(i - 1):
            init = (run.load_generator(i - 1), load_model(run.discriminator_dir(i - 1)))
        _, z_rec = run.load_reals()
        g, d, seconds = train_scale(i, cfg, data, z_rec, run.work_dir(i), device, init, progress)  # type: ignore[arg-type]
        _finish(run, i, g, d, data.noise_amp, seconds, "serial", torch.get_num_threads(), device)
        trained.append(i)
        if on_scale_done is not None:
            on_scale_done(i)
        if stop_when is not None and stop_when(i):
            break
    return trained


# ---------------------------------------------------------------------------------- parallel

_QUEUE: Any = None


def _worker_init(threads: int, progress_queue: Any) -> None:
    global _QUEUE
    torch.set_num_threads(threads)
    _QUEUE = progress_queue


def _report(i: int, step: int, total: int) -> None:
    if _QUEUE is not None and (step % 10 == 0 or step == total):
        _QUEUE.put((i, step, total))


def _train_independent_scale(run: SETGANRun, i: int, device: str, progress: Progress | None, phase: int = 0) -> float:
    """Train scale ``i`` independently of the other scales and save it. ``phase`` 0: the whole scale on the
    real coarser image; 1: ``refresh`` mode's first part (saved as the phase-1 snapshot); 2: its second part,
    on samples of the phase-1 snapshots of scales 0..i-1 (saved as the finished scale)."""
    cfg = run.config()
    data = _refresh_inputs(run, i, cfg) if phase == 2 else _parallel_inputs(run, i, cfg)
    _, z_rec = run.load_reals()
    stop = cfg.refresh_step() if phase == 1 else None
    g, d, seconds = train_scale(i, cfg, data, z_rec, run.work_dir(i), device, None, progress, stop=stop)
    if phase == 1:
        run.finish_phase1(i, g, data.noise_amp, seconds)
        return seconds
    mode = "parallel-shuffle" if cfg.parallel_inputs == "shuffle" else "parallel"
    if phase == 2:  # the scale's training time is both phases'
        mode, seconds = "parallel-refresh", seconds + run.phase1_info(i)["train_seconds"]
    _finish(run, i, g, d, data.noise_amp, seconds, mode, torch.get_num_threads(), device)
    return seconds


def _parallel_job(path: str, i: int, device: str, phase: int) -> tuple[int, float]:
    return i, _train_independent_scale(SETGANRun(path), i, device, _report, phase)


def parallel_plan(run: SETGANRun, cfg: SETGANConfig, workers: int, phase: int = 0) -> list[int]:
    """Unfinished scales in the order the workers take them (phase 1: those without a phase-1 snapshot)."""
    spec = run.spec()
    costs = scale_costs(spec.sizes, [cfg.channels(i) for i in range(spec.n_scales)])
    order = [i for i in schedule(costs, workers) if not run.is_done(i)]
    if phase == 1:
        order = [i for i in order if not run.phase1_done(i)]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # under torchrun each rank takes a balanced share; the run folder is shared
        order = rank_share(order, costs, world, int(os.environ.get("RANK", "0")))
    return order


def train_parallel(
    run: SETGANRun,
    cfg: SETGANConfig,
    *,
    workers: int = 2,
    threads: int | None = None,
    devices: list[str] | None = None,
    progress: Progress | None = None,
    on_scale_done: ScaleDone | None = None,
) -> list[int]:
    """Train every unfinished scale with a pool of ``workers`` processes (threads split between
    them); ``devices`` are assigned to jobs round-robin (several processes may share a GPU).
    ``refresh`` mode runs two such parallel phases with a barrier between them."""
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    threads = threads or max(1, torch.get_num_threads() // workers)
    devices = devices or ["cpu"]
    if cfg.parallel_inputs == "refresh":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # the barrier between the phases is in this process
            raise ConfigError("parallel_inputs=refresh does not run under torchrun yet; use worker processes")
        _parallel_phase(run, cfg, 1, workers, threads, devices, progress, None)
        return _parallel_phase(run, cfg, 2, workers, threads, devices, progress, on_scale_done)
    return _parallel_phase(run, cfg, 0, workers, threads, devices, progress, on_scale_done)


def _parallel_phase(
    run: SETGANRun,
    cfg: SETGANConfig,
    phase: int,
    workers: int,
    threads: int,
    devices: list[str],
    progress: Progress | None,
    on_scale_done: ScaleDone | None,
) -> list[int]:
    order = parallel_plan(run, cfg, workers, phase)
    if not order:
        return []
    total = cfg.refresh_step() if phase == 1 else cfg.iters
    if workers == 1:
        # Same independent scales, same order; no pool to spawn for a single worker.
        done = []
        old_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for k, i in enumerate(order):
                _train_independent_scale(run, i, devices[k % len(devices)], progress, phase)
                done.append(i)
                if on_scale_done is not None:
                    on_scale_done(i)
        finally:
            torch.set_num_threads(old_threads)
        return done
    ctx = mp.get_context("spawn")
    progress_queue = ctx.Queue()
    trained: list[int] = []
    with ctx.Pool(min(workers, len(order)), initializer=_worker_init, initargs=(threads, progress_queue)) as pool:
        pending = [
            pool.apply_async(_parallel_job, (str(run.path), i, devices[k % len(devices)], phase))
            for k, i in enumerate(order)
        ]
        while pending:
            try:
                while True:
                    i, step, steps = progress_queue.get(timeout=0.2)
                    if progress is not None:
                        progress(i, step, steps)
            except queue_mod.Empty:
                pass
            still = []
            for job in pending:
                if job.ready():
                    try:
                        i, _ = job.get()
                    except EdgeganError:
                        pool.terminate()
                        raise
                    trained.append(i)
                    if progress is not None:
                        progress(i, total, cfg.iters)
                    if on_scale_done is not None:
                        on_scale_done(i)
                else:
                    still.append(job)
            pending = still
    return trained


def wait_for_scales(run: SETGANRun, timeout_s: float = 86400.0, poll_s: float = 5.0) -> None:
    """Block until every scale is finished (rank 0 waiting for other torchrun ranks)."""
    deadline = time.monotonic() + timeout_s
    n = run.spec().n_scales
    while len(run.done_scales()) < n:
        if time.monotonic() > deadline:
            missing = sorted(set(range(n)) - set(run.done_scales()))
            raise EdgeganError(f"timed out waiting for scales {missing} of {run.path}")
        time.sleep(poll_s)


# ---------------------------------------------------------------------------------- entry point


def fit(
    image: str | Path | torch.Tensor,
    out: str | Path,
    cfg: SETGANConfig,
    *,
    workers: int | None = None,
    threads: int | None = None,
    devices: list[str] | None = None,
    resume: bool = False,
    quality: float | None = None,
    stop_early: bool = False,
    progress: Progress | None = None,
    max_pixels: int | None = None,
    on_scale_done: ScaleDone | None = None,
) -> SETGANRun:
    """Train a SETGAN pyramid on ``image`` into run folder ``out`` (the whole training step).

    ``parallel`` uses ``workers`` processes (default: one per core); under ``torchrun`` each
    rank trains its share and rank 0 waits for the others. ``serial`` with ``stop_early`` and
    a ``quality`` threshold stops once the scales trained so far reach it.
    """
    run = prepare_run(image, out, cfg, resume=resume, max_pixels=max_pixels)
    started = time.perf_counter()
    device = (devices or ["cpu"])[0]
    if cfg.mode == "parallel":
        workers = workers or max(1, min(os.cpu_count() or 1, run.spec().n_scales))
        trained = train_parallel(
            run, cfg, workers=workers, threads=threads, devices=devices, progress=progress, on_scale_done=on_scale_done
        )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if int(os.environ.get("RANK", "0")) != 0:
                return run
            wait_for_scales(run)
    else:
        if threads:
            torch.set_num_threads(threads)
        stop_when = None
        if stop_early and quality is not None:
            from edgegan.setgan.estimate import estimate_quality

            reals, _ = run.load_reals()

            def stop_when(i: int) -> bool:
                pyr = run.load_pyramid(i, device)
                return estimate_quality(pyr, reals[-1], draws=cfg.quality_draws, ks=[i])[0].ssim >= quality

        trained = train_serial(
            run, cfg, device=device, progress=progress, stop_when=stop_when, on_scale_done=on_scale_done
        )
        workers = 1
    run.record_training(
        {
            "mode": cfg.mode,
            "wall_seconds": time.perf_counter() - started,
            "scales_trained": trained,
            "workers": workers,
            "threads": threads or torch.get_num_threads(),
            "devices": devices or ["cpu"],
        }
    )
    return run
