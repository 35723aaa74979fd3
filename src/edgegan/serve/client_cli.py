"""``edgegan client``: train on a SETGAN server, then sample and edit locally with the downloaded scales."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from edgegan.errors import ConfigError, EdgeganError
from edgegan.progress import ScaleBars
from edgegan.serve.client import TERMINAL, EdgeganClient

app = typer.Typer(
    help="Train on a SETGAN server; sample and edit on this device with the downloaded ONNX scales.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 132)
TASKS = ("harmonize", "edit", "paint2image", "superres")

SERVER = typer.Option(..., "--server", envvar="EDGEGAN_SERVER", help="Server base URL, e.g. http://host:8000.")
TOKEN = typer.Option(None, "--token", help="Access token (default: $EDGEGAN_TOKEN).", show_default=False)
CACHE = typer.Option(None, "--cache-dir", help="Download cache (default: $EDGEGAN_CACHE or ~/.cache/edgegan/client).")


def make_client(server: str, token: str | None, cache_dir: Path | None = None) -> EdgeganClient:
    """The client the commands use (tests replace this to inject a transport)."""
    return EdgeganClient(server, token, cache_dir=cache_dir)


# ---------------------------------------------------------------------------------- helpers the commands call


def render_samples(
    pyr: Any,
    out: Path,
    *,
    n: int = 4,
    k: int | None = None,
    size: tuple[int, int] | None = None,
    scale_w: float = 1.0,
    scale_h: float = 1.0,
    seed: int = 0,
) -> tuple[int, int]:
    """Render ``n`` samples through scales 0..k of ``pyr`` into ``out/sample_XXX.png``; returns (w, h).
    ``size`` is (width, height)."""
    import torch

    from edgegan.data.images import save_image

    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    if scale_w <= 0 or scale_h <= 0 or (size is not None and min(size) < 1):
        raise ConfigError("sizes and scale factors must be positive")
    gen = torch.Generator().manual_seed(seed)
    out_size = (size[1], size[0]) if size else None
    images = pyr.sample(n, k, out_size=out_size, scale=(scale_h, scale_w), generator=gen)
    for j, img in enumerate(images):
        save_image(img, out / f"sample_{j:03d}.png")
    h, w = images.shape[-2:]
    return int(w), int(h)


def sample_job(
    client: EdgeganClient,
    job_id: str,
    out: Path,
    *,
    scales: int | None = None,
    **render: Any,
) -> tuple[int, tuple[int, int]]:
    """Sync ``job_id`` and render samples from scales 0..scales-1 (default: all available).
    Returns (scales used, (w, h))."""
    if scales is not None and scales < 1:
        raise ConfigError(f"--scales must be >= 1, got {scales}")
    _, available = client.sync(job_id)
    if available == 0:
        raise EdgeganError(f"job {job_id} has no trained scale available yet; try again later or pass --watch")
    if scales is not None and scales > available:
        raise ConfigError(f"--scales {scales}: job {job_id} has {available} scales available so far")
    used = scales or available
    pyr = client.pyramid(job_id, k=used - 1)
    return used, render_samples(pyr, out, **render)


def watch_samples(
    client: EdgeganClient,
    job_id: str,
    out: Path,
    *,
    poll: float = 1.0,
    on_render: Callable[[int, Path, tuple[int, int]], None] | None = None,
    **render: Any,
) -> tuple[list[int], dict[str, Any]]:
    """Render ``out/step_<a>/`` each time more scales are available (``a`` = how many), until the
    job ends. Returns (the ``a`` rendered, the final status)."""
    import time

    rendered: list[int] = []
    last = 0
    while True:
        st = client.wait(job_id, until_available=last + 1, poll=poll)
        folder, available = client.sync(job_id)
        if available > last:
            pyr = client.pyramid(job_id)
            step = out / f"step_{available}"
            wh = render_samples(pyr, step, **render)
            rendered.append(available)
            last = available
            if on_render is not None:
                on_render(available, step, wh)
        elif st.get("status") not in TERMINAL:
            time.sleep(poll)  # the manifest lags the status: do not spin
        if st.get("status") in TERMINAL:
            return rendered, st


def apply_job(
    client: EdgeganClient,
    job_id: str,
    task: str,
    image_path: Path,
    *,
    mask: Path | None = None,
    inject_scale: int | None = None,
    factor: float = 4.0,
    seed: int = 0,
) -> tuple[Any, str]:
    """Sync ``job_id`` and run ``task`` locally on ``image_path``; returns ([1, 3, H, W] result, note)."""
    import torch

    from edgegan.data.images import load_image
    from edgegan.setgan import apps

    if task not in TASKS:
        raise ConfigError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    if task in ("harmonize", "edit") and mask is None:
        raise ConfigError(f"--task {task} needs --mask")
    if task == "superres" and factor <= 1.0:
        raise ConfigError(f"--factor must be > 1, got {factor}")
    image = load_image(image_path)[None]
    m = torch.ones(1, 1, *image.shape[-2:])
    if mask is not None and task in ("harmonize", "edit"):
        m = apps.load_mask(mask)
        apps.check_mask(m, image)
    pyr = client.pyramid(job_id)
    gen = torch.Generator().manual_seed(seed)
    n = inject_scale if inject_scale is not None else max(1, pyr.n_scales // 2)
    if task in ("harmonize", "edit"):
        apps.validate_inject_scale(pyr, n)
        fn = apps.harmonize if task == "harmonize" else apps.edit
        return fn(pyr, image, m, n, generator=gen), f"{pyr.n_scales} scales, injected at {n}"
    if task == "paint2image":
        apps.validate_inject_scale(pyr, n)
        # The client has no training image, so the paint is not snapped to its palette.
        return apps.paint_to_image(pyr, image, n, palette_from=None, generator=gen), f"{pyr.n_scales} scales"
    sr = apps.super_resolve(pyr, image, factor, generator=gen)
    return sr.image, f"{sr.steps} steps of x{sr.ratio:.3f} with scale {pyr.n_scales - 1}"


def status_rows(st: dict[str, Any]) -> list[tuple[str, str]]:
    """The status JSON as (field, value) rows for a table."""
    rows = []
    for key in ("id", "status", "mode", "queue_position", "n_scales", "available", "chosen_scales", "error"):
        if st.get(key) is not None:
            rows.append((key, str(st[key])))
    for key in ("created", "started", "finished"):
        if isinstance(st.get(key), int | float):
            import datetime

            rows.append((key, datetime.datetime.fromtimestamp(st[key]).isoformat(sep=" ", timespec="seconds")))
        elif st.get(key):
            rows.append((key, str(st[key])))
    for i, p in _progress_items(st):
        mark = "done" if p.get("done") else f"{p.get('step', 0)}/{p.get('total', '?')}"
        rows.append((f"scale {i}", mark))
    return rows


def _progress_items(st: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    items = []
    progress = st.get("progress")
    for key, p in progress.items() if isinstance(progress, dict) else []:
        try:
            items.append((int(key), p if isinstance(p, dict) else {}))
        except (TypeError, ValueError):
            continue
    return sorted(items, key=lambda kv: kv[0])


def follow(client: EdgeganClient, job_id: str, *, poll: float = 1.0) -> dict[str, Any]:
    """Show per-scale progress bars and newly available scales until the job ends."""
    with ScaleBars(console) as bars:
        seen_status = [""]
        seen_available = [0]

        def on_status(st: dict[str, Any]) -> None:
            if st.get("status") != seen_status[0]:
                seen_status[0] = str(st.get("status", ""))
                where = f" (queue position {st['queue_position']})" if st.get("queue_position") else ""
                bars.console.print(f"job {job_id}: {seen_status[0]}{where}")
            for i, p in _progress_items(st):
                total = p.get("total") or None
                step = total if p.get("done") and total else p.get("step", 0)
                bars.update(i, step, total)
            available = int(st.get("available") or 0)
            if available > seen_available[0]:
                seen_available[0] = available
                of = f" of {st['n_scales']}" if st.get("n_scales") else ""
                bars.console.print(f"scales 0..{available - 1} available ({available}{of})")

        return client.wait(job_id, on_status=on_status, poll=poll)


def _ended(st: dict[str, Any], job_id: str) -> None:
    if st.get("status") == "failed":
        raise EdgeganError(f"job {job_id} failed: {st.get('error') or 'no reason given'}")
    if st.get("status") == "cancelled":
        raise EdgeganError(f"job {job_id} was cancelled")


# ---------------------------------------------------------------------------------- commands


@app.command("train")
def train_cmd(
    image: Path = typer.Argument(..., help="The training image."),
    server: str = SERVER,
    token: str | None = TOKEN,
    mode: int = typer.Option(3, min=1, max=3, help="1 serial, 2 parallel, 3 progressive (scales arrive one by one)."),
    quality: float | None = typer.Option(
        None, help="SSIM threshold T: the server picks the fewest scales reaching it."
    ),
    iters: int | None = typer.Option(None, min=1, help="Iterations per scale (default: the server's)."),
    max_size: int | None = typer.Option(None, min=8, help="Longer side of the finest scale."),
    min_size: int | None = typer.Option(None, min=8, help="Shorter side of the coarsest scale."),
    nfc: int | None = typer.Option(None, min=1, help="Width of the coarsest scales."),
    max_nfc: int | None = typer.Option(None, min=1, help="Maximum width."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the job until it ends."),
    poll: float = typer.Option(1.0, min=0.05, help="Seconds between status polls."),
    cache_dir: Path | None = CACHE,
) -> None:
    """Upload an image and train a SETGAN pyramid on the server."""
    if quality is not None and not 0.0 < quality <= 1.0:
        raise ConfigError(f"--quality is an SSIM threshold in (0, 1], got {quality}")
    with make_client(server, token, cache_dir) as client:
        job_id = client.submit(
            image,
            mode=mode,
            quality=quality,
            iters=iters,
            max_size=max_size,
            min_size=min_size,
            nfc=nfc,
            max_nfc=max_nfc,
        )
        console.print(f"job {job_id}")
        if not wait:
            return
        st = follow(client, job_id, poll=poll)
        _ended(st, job_id)
        chosen = f", {st['chosen_scales']} chosen for the SSIM threshold" if st.get("chosen_scales") else ""
        console.print(f"job {job_id} done: {st.get('available', 0)} scales available{chosen}")


@app.command("status")
def status_cmd(
    job: str = typer.Argument(..., help="Job id."),
    server: str = SERVER,
    token: str | None = TOKEN,
    as_json: bool = typer.Option(False, "--json", help="Print the status JSON."),
) -> None:
    """Show a job's status and per-scale progress."""
    with make_client(server, token) as client:
        st = client.status(job)
    if as_json:
        print(json.dumps(st, indent=2))
        return
    t = Table(title=f"job {job}")
    t.add_column("field")
    t.add_column("value")
    for key, value in status_rows(st):
        t.add_row(key, value)
    console.print(t)


@app.command("cancel")
def cancel_cmd(
    job: str = typer.Argument(..., help="Job id."),
    server: str = SERVER,
    token: str | None = TOKEN,
) -> None:
    """Cancel a job on the server."""
    with make_client(server, token) as client:
        client.cancel(job)
    console.print(f"job {job} cancelled")


@app.command("sample")
def sample_cmd(
    job: str = typer.Argument(..., help="Job id."),
    server: str = SERVER,
    token: str | None = TOKEN,
    n: int = typer.Option(4, "--n", min=1, help="Number of samples."),
    scales: int | None = typer.Option(None, min=1, help="Use scales 0..k-1 only (default: all available)."),
    size: str | None = typer.Option(
        None, help="Output size N or HxW (height x width, as every edgegan command), e.g. --size 150x400."
    ),
    scale_w: float = typer.Option(1.0, help="Width multiplier of the training size."),
    scale_h: float = typer.Option(1.0, help="Height multiplier of the training size."),
    out: Path | None = typer.Option(None, help="Folder for the PNGs (default ./samples_JOB)."),
    seed: int = typer.Option(0, help="Noise seed."),
    watch: bool = typer.Option(False, "--watch", help="Re-render into step_<scales>/ as scales arrive, until the end."),
    poll: float = typer.Option(1.0, min=0.05, help="--watch: seconds between status polls when events fail."),
    cache_dir: Path | None = CACHE,
) -> None:
    """Download the available scales and render random samples locally with ONNX Runtime."""
    from edgegan.cli import parse_size

    hw = parse_size(size) if size is not None else None  # one-line ConfigError for a malformed size
    if scale_w <= 0 or scale_h <= 0:
        raise ConfigError("scale factors must be positive")
    if watch and scales is not None:
        raise ConfigError("--scales and --watch cannot be combined (--watch renders every scale as it arrives)")
    render = {"n": n, "size": (hw[1], hw[0]) if hw else None, "scale_w": scale_w, "scale_h": scale_h, "seed": seed}
    with make_client(server, token, cache_dir) as client:
        out = out or Path(f"samples_{client.job_dir(job).name}")
        if not watch:
            used, (w, h) = sample_job(client, job, out, scales=scales, **render)
            console.print(f"wrote {n} samples of {w}x{h} to {out} (scales 0..{used - 1})")
            return

        def shown(available: int, folder: Path, wh: tuple[int, int]) -> None:
            console.print(f"scales 0..{available - 1}: wrote {n} samples of {wh[0]}x{wh[1]} to {folder}")

        rendered, st = watch_samples(client, job, out, poll=poll, on_render=shown, **render)
        if not rendered:
            _ended(st, job)
            raise EdgeganError(f"job {job} ended without any scale available")
        console.print(f"job {job} {st.get('status')}: rendered {len(rendered)} steps into {out}")


@app.command("apply")
def apply_cmd(
    job: str = typer.Argument(..., help="Job id."),
    server: str = SERVER,
    token: str | None = TOKEN,
    task: str = typer.Option(..., help="harmonize, edit, paint2image or superres."),
    input: Path = typer.Option(..., "--input", help="Input image (composite, edit, paint or low-res image)."),
    mask: Path | None = typer.Option(None, help="Mask of the edited region (harmonize, edit)."),
    inject_scale: int | None = typer.Option(None, help="Scale n at which the input is injected."),
    factor: float = typer.Option(4.0, help="superres: up-scaling factor."),
    out: Path | None = typer.Option(None, help="Output PNG (default ./apply_TASK_JOB.png)."),
    seed: int = typer.Option(0, help="Noise seed."),
    cache_dir: Path | None = CACHE,
) -> None:
    """Harmonization, editing, paint-to-image or super-resolution on this device."""
    from edgegan.data.images import save_image

    with make_client(server, token, cache_dir) as client:
        result, note = apply_job(
            client, job, task, input, mask=mask, inject_scale=inject_scale, factor=factor, seed=seed
        )
    out = out or Path(f"apply_{task}_{job}.png")  # task and job were validated above
    save_image(result[0], out)
    h, w = result.shape[-2:]
    console.print(f"wrote {out} ({w}x{h}; {note})")
