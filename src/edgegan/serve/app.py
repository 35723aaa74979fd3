"""The SETGAN training service (FastAPI): jobs in, per-scale ONNX generators out.

Security model: every request carries a bearer token; a job belongs to the token that
created it and is invisible (404) to others; job ids are 144-bit random strings checked
against a strict pattern before they touch the file system; uploads are bounded in bytes
and pixels and must decode as images; no client string is ever used as a path.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import multiprocessing as mp
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from edgegan.serve.jobs import job_dir, run_job
from edgegan.serve.store import FINAL, JOB_ID, JobStore, QueueFull, token_owner


@dataclass
class ServerConfig:
    data_dir: Path
    tokens: list[str] = field(default_factory=list)
    workers: int = 1  # jobs trained at once
    threads_per_job: int = 2
    job_workers: int = 2  # processes per parallel-mode job
    max_upload_bytes: int = 20 * 2**20
    max_pixels: int = 4_000_000
    max_iters: int = 2000
    max_size: int = 250
    max_running_per_token: int = 2
    max_queued_per_token: int = 8
    insecure_local: bool = False  # no token at all (loopback only; enforced by the CLI)


class JobOptions(BaseModel):
    mode: int = Field(3, ge=1, le=3)
    quality: float | None = Field(None, gt=0.0, le=1.0)
    max_size: int = Field(250, ge=16)
    min_size: int = Field(25, ge=8)
    iters: int = Field(2000, ge=1)
    nfc: int = Field(32, ge=4, le=128)
    max_nfc: int = Field(128, ge=4, le=256)
    model_config = {"extra": "forbid"}


def _status(store: JobStore, job: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "id",
        "status",
        "mode",
        "created",
        "started",
        "finished",
        "n_scales",
        "available",
        "chosen_scales",
        "progress",
        "error",
    )
    out = {k: job[k] for k in keys}
    out["queue_position"] = store.queue_position(job["id"])
    return out


class Dispatcher(threading.Thread):
    """Starts queued jobs in worker processes, at most ``workers`` at a time."""

    def __init__(self, cfg: ServerConfig, store: JobStore) -> None:
        super().__init__(daemon=True, name="edgegan-dispatcher")
        self.cfg, self.store = cfg, store
        self.running: dict[str, Any] = {}
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ctx = mp.get_context("spawn")

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.tick()
            self.stop_event.wait(0.2)

    def tick(self) -> None:
        with self.lock:
            for job_id, proc in list(self.running.items()):
                if not proc.is_alive():
                    proc.join()
                    del self.running[job_id]
                    job = self.store.get(job_id)
                    if job is not None and job["status"] == "running":  # died without saying why
                        self.store.update(
                            job_id,
                            status="failed",
                            finished=time.time(),
                            error=f"job process exited with code {proc.exitcode}",
                        )
            while len(self.running) < self.cfg.workers and not self.stop_event.is_set():
                job = self.store.claim_next()
                if job is None:
                    break
                proc = self.ctx.Process(
                    target=run_job,
                    args=(str(self.cfg.data_dir), job["id"], self.cfg.threads_per_job, self.cfg.job_workers),
                    name=f"edgegan-job-{job['id'][:6]}",
                )
                proc.start()
                self.running[job["id"]] = proc

    def cancel(self, job_id: str) -> None:
        with self.lock:
            proc = self.running.pop(job_id, None)
        if proc is not None:
            proc.terminate()
            proc.join(timeout=30)

    def shutdown(self) -> None:
        """Stop starting jobs and stop the running ones; they stay 'running' in the store and are
        re-queued (and resume from their checkpoints) when a server starts on this data folder."""
        self.stop_event.set()
        with self.lock:
            procs = list(self.running.values())
            self.running.clear()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(timeout=30)


def create_app(cfg: ServerConfig, *, dispatch: bool = True) -> FastAPI:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(cfg.data_dir / "jobs.sqlite")
    owners = {token_owner(t) for t in cfg.tokens}
    dispatcher = Dispatcher(cfg, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.requeue_running()
        if dispatch:
            dispatcher.start()
        yield
        dispatcher.shutdown()

    app = FastAPI(title="edgegan SETGAN service", version="1", lifespan=lifespan, redirect_slashes=False)
    app.state.store, app.state.dispatcher, app.state.config = store, dispatcher, cfg

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Response:
        # Refuse oversized bodies before the multipart parser spools them to disk; the handler
        # still counts the bytes it reads (a client may omit Content-Length).
        length = request.headers.get("content-length")
        too_big = length is not None and length.isdigit() and int(length) > cfg.max_upload_bytes + 64 * 1024
        if request.method == "POST" and too_big:  # 64 KiB of room for the form's own fields
            return JSONResponse({"detail": f"upload larger than {cfg.max_upload_bytes} bytes"}, status_code=413)
        return await call_next(request)

    def owner(authorization: str | None = Header(None)) -> str:
        if cfg.insecure_local and not cfg.tokens:
            return "local"
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        digest = token_owner(token)
        if not any(hmac.compare_digest(digest, o) for o in owners):
            raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
        return digest

    def owned_job(job_id: str, who: str = Depends(owner)) -> dict[str, Any]:
        job = store.get(job_id) if JOB_ID.match(job_id) else None
        if job is None or not hmac.compare_digest(job["owner"], who):
            raise HTTPException(404, "job not found")
        return job

    @app.post("/v1/jobs", status_code=201)
    async def submit(
        image: UploadFile = File(...), options: str = Form("{}"), who: str = Depends(owner)
    ) -> dict[str, Any]:
        try:
            opts = JobOptions(**json.loads(options or "{}"))
        except (json.JSONDecodeError, TypeError) as exc:
            raise HTTPException(400, f"options must be a JSON object: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            raise HTTPException(400, f"bad option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        if opts.iters > cfg.max_iters or opts.max_size > cfg.max_size:
            raise HTTPException(400, f"iters must be <= {cfg.max_iters} and max_size <= {cfg.max_size} here")
        # Cheap early answer before reading the upload; the binding check is atomic in store.create.
        if store.count(who, "queued") >= cfg.max_queued_per_token:
            raise HTTPException(429, f"queue full: at most {cfg.max_queued_per_token} queued jobs per token")
        data = await image.read(cfg.max_upload_bytes + 1)
        if len(data) > cfg.max_upload_bytes:
            raise HTTPException(413, f"upload larger than {cfg.max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, "empty upload")
        png = await asyncio.to_thread(_decode_to_png, data, cfg.max_pixels, opts.min_size, cfg.data_dir / "tmp")
        try:
            job_id = store.create(
                who,
                opts.mode,
                opts.model_dump(),
                max_queued=cfg.max_queued_per_token,
                max_active=cfg.max_queued_per_token + cfg.max_running_per_token,
            )
        except QueueFull as exc:
            raise HTTPException(429, str(exc)) from None
        folder = job_dir(cfg.data_dir, job_id)
        folder.mkdir(parents=True)
        tmp = folder / ".input.png.tmp"
        tmp.write_bytes(png)
        tmp.rename(folder / "input.png")
        return {"id": job_id, "status": "queued"}

    @app.get("/v1/jobs/{job_id}")
    def status(job: dict[str, Any] = Depends(owned_job)) -> dict[str, Any]:
        return _status(store, job)

    @app.get("/v1/jobs/{job_id}/manifest")
    def manifest(job: dict[str, Any] = Depends(owned_job)) -> JSONResponse:
        path = job_dir(cfg.data_dir, job["id"]) / "run" / "onnx" / "manifest.json"
        if not path.is_file() or job["available"] == 0:
            return JSONResponse(
                {"format": "edgegan.setgan.manifest/1", "available": 0, "scales": [], "n_scales": job["n_scales"]}
            )
        return JSONResponse(json.loads(path.read_text()))

    @app.get("/v1/jobs/{job_id}/scales/{k}")
    def scale(k: int, job: dict[str, Any] = Depends(owned_job)) -> Response:
        path = job_dir(cfg.data_dir, job["id"]) / "run" / "onnx" / "manifest.json"
        man = json.loads(path.read_text()) if path.is_file() else {"scales": []}
        entry = next((e for e in man["scales"] if e["index"] == k), None)
        if entry is None or k >= man.get("available", 0):
            raise HTTPException(409, f"scale {k} is not available yet")
        # The file name comes from our own manifest, never from the request.
        f = job_dir(cfg.data_dir, job["id"]) / "run" / "onnx" / f"scale_{int(entry['index']):02d}.onnx"
        headers = {"X-Edgegan-Sha256": entry["sha256"], "X-Edgegan-Noise-Amp": repr(entry["noise_amp"])}
        return FileResponse(f, media_type="application/octet-stream", headers=headers)

    @app.delete("/v1/jobs/{job_id}", status_code=204)
    def delete(job: dict[str, Any] = Depends(owned_job)) -> Response:
        store.update(job["id"], status="cancelled", finished=time.time())
        dispatcher.cancel(job["id"])
        shutil.rmtree(job_dir(cfg.data_dir, job["id"]), ignore_errors=True)
        store.delete(job["id"])
        return Response(status_code=204)

    @app.get("/v1/jobs/{job_id}/events")
    async def events(request: Request, job: dict[str, Any] = Depends(owned_job)) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            last = None
            while not await request.is_disconnected():
                current = await asyncio.to_thread(store.get, job["id"])
                if current is None:
                    yield "event: end\ndata: {}\n\n"
                    return
                snapshot = _status(store, current)
                key = (snapshot["status"], snapshot["available"], json.dumps(snapshot["progress"], sort_keys=True))
                if key != last:
                    last = key
                    yield f"event: status\ndata: {json.dumps(snapshot)}\n\n"
                if snapshot["status"] in FINAL:
                    yield f"event: end\ndata: {json.dumps({'status': snapshot['status']})}\n\n"
                    return
                await asyncio.sleep(0.5)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "running": len(dispatcher.running)}

    return app


def _decode_to_png(data: bytes, max_pixels: int, min_size: int, scratch: Path) -> bytes:
    """Decode the upload with edgegan's image loader (bounded in pixels before decoding,
    EXIF-rotated, any mode) and re-encode it as an RGB PNG; map problems to HTTP errors."""
    from edgegan.data.images import load_image, save_image
    from edgegan.errors import ImageLoadError

    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        raw = Path(tmp) / "upload"
        raw.write_bytes(data)
        try:
            image = load_image(raw, max_pixels=max_pixels)
        except ImageLoadError as exc:
            message = str(exc).replace(str(raw), "upload")
            raise HTTPException(413 if "max_pixels" in message else 415, message) from None
        h, w = image.shape[-2:]
        if min(h, w) < min_size:
            raise HTTPException(400, f"image is {w}x{h}; its shorter side must be at least {min_size} px")
        png = save_image(image, Path(tmp) / "image.png")
        return png.read_bytes()
