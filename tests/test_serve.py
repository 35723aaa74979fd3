"""The SETGAN service on loopback: auth, uploads, isolation, progressive delivery, restart."""

import hashlib
import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from edgegan.serve.app import ServerConfig
from edgegan.serve.live import LiveServer as _Live

TOKEN = "test-token-0123456789abcdef"
OTHER = "other-token-0123456789abcdef"
SMALL_JOB = {"mode": 3, "max_size": 36, "min_size": 25, "iters": 40, "nfc": 8, "max_nfc": 8}


def _png(h=32, w=36, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class LiveServer(_Live):
    def client(self, token: str | None = TOKEN) -> httpx.Client:  # tests default to the main token
        return super().client(token)


def _config(tmp_path: Path, **kw) -> ServerConfig:
    base = dict(data_dir=tmp_path / "data", tokens=[TOKEN, OTHER], workers=1, threads_per_job=1, job_workers=1)
    return ServerConfig(**{**base, **kw})


def _submit(c: httpx.Client, options=None, image=None) -> httpx.Response:
    files = {"image": ("img.png", image if image is not None else _png(), "image/png")}
    return c.post("/v1/jobs", files=files, data={"options": json.dumps(options or SMALL_JOB)})


def _wait(c: httpx.Client, job_id: str, cond, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = c.get(f"/v1/jobs/{job_id}").json()
        if cond(st):
            return st
        assert st["status"] not in ("failed", "cancelled"), st
        time.sleep(0.2)
    raise AssertionError(f"timed out: {st}")


@pytest.fixture
def server(tmp_path):
    live = LiveServer(_config(tmp_path))
    yield live
    live.stop()


def test_auth_uploads_isolation_and_ids(tmp_path):
    live = LiveServer(_config(tmp_path, workers=1, max_upload_bytes=20_000, max_pixels=50_000))
    try:
        assert live.client(None).get("/v1/jobs/abc").status_code == 401
        assert live.client("wrong-token-0123456789").get("/v1/jobs/abc").status_code == 401
        c = live.client()
        r = _submit(c, image=_png(200, 200))  # > 20 kB of noise PNG
        assert r.status_code == 413 and "bytes" in r.json()["detail"]
        big = Image.new("RGB", (300, 300))
        buf = io.BytesIO()
        big.save(buf, format="PNG")
        r = _submit(c, image=buf.getvalue())  # small file, too many pixels
        assert r.status_code == 413 and "max_pixels" in r.json()["detail"]
        r = _submit(c, image=b"this is not an image at all")
        assert r.status_code == 415 and "image" in r.json()["detail"]
        assert _submit(c, image=_png(10, 10)).status_code == 400
        assert _submit(c, options={"mode": 7}).status_code == 400
        assert _submit(c, options={"iters": 10**6}).status_code == 400
        assert _submit(c, options={"unknown": 1}).status_code == 400
        r = _submit(c)
        assert r.status_code == 201
        job_id = r.json()["id"]
        assert len(job_id) == 24
        assert live.client(OTHER).get(f"/v1/jobs/{job_id}").status_code == 404  # another token's job
        for bad in ("..%2F..%2Fjobs.sqlite", "..", "abc", job_id[:-1] + "/", "%2e%2e"):
            assert c.get(f"/v1/jobs/{bad}").status_code in (404, 405), bad
        scale = c.get(f"/v1/jobs/{job_id}/scales/0")
        if scale.status_code == 200:  # scale 0 may already be trained: then it is its ONNX file, with its hash
            import hashlib

            assert hashlib.sha256(scale.content).hexdigest() == scale.headers["X-Edgegan-Sha256"]
        else:
            assert scale.status_code == 409 and "not available yet" in scale.json()["detail"]
        assert c.get("/openapi.json").status_code == 200 and c.get("/docs").status_code == 200
        assert c.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert c.get(f"/v1/jobs/{job_id}").status_code == 404
        assert not (tmp_path / "data" / "jobs" / job_id).exists()
    finally:
        live.stop()


def test_queue_limits_per_token(tmp_path):
    live = LiveServer(_config(tmp_path, workers=1, max_queued_per_token=1, max_running_per_token=1))
    try:
        c = live.client()
        long_job = {**SMALL_JOB, "iters": 2000}
        first = _submit(c, options=long_job).json()["id"]
        _wait(c, first, lambda s: s["status"] == "running")
        assert _submit(c, options=long_job).status_code == 201  # queued behind the running one
        r = _submit(c, options=long_job)
        assert r.status_code == 429 and "queue full" in r.json()["detail"]
        assert _submit(live.client(OTHER)).status_code == 201  # limits are per token
    finally:
        live.stop()


def test_progressive_delivery_and_client_rendering(server, tmp_path):
    from edgegan.serve.client import EdgeganClient

    c = server.client()
    job_id = _submit(c).json()["id"]
    client = EdgeganClient(server.url, TOKEN, cache_dir=tmp_path / "cache")
    first = client.wait(job_id, until_available=1, poll=0.2, timeout=120)
    assert first["n_scales"] == 3
    partial = first["available"] < first["n_scales"]
    folder, available = client.sync(job_id)
    early = client.pyramid(job_id).sample(1)
    sizes = json.loads((folder / "manifest.json").read_text())["sizes"]
    assert early.shape[-2:] == tuple(reversed(sizes[available - 1]))  # rendered from the first scales
    done = client.wait(job_id, poll=0.2, timeout=120)
    assert done["status"] == "done" and done["available"] == 3
    assert all(p["done"] for p in done["progress"].values())
    assert client.pyramid(job_id).sample(1).shape == (1, 3, 32, 36)  # again, at full size, when all arrived
    for entry in client.manifest(job_id)["scales"]:
        data = (folder / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert partial or first["status"] == "done"  # normally scale 0 arrives while others still train
    with c.stream("GET", f"/v1/jobs/{job_id}/events") as r:
        text = "".join(r.iter_text())
    assert "event: status" in text and "event: end" in text
    client.close()


def test_restart_mid_job_keeps_finished_scales(tmp_path):
    cfg = _config(tmp_path)
    live = LiveServer(cfg)
    c = live.client()
    job_id = _submit(c, options={**SMALL_JOB, "iters": 60}).json()["id"]
    st = _wait(c, job_id, lambda s: s["available"] >= 1)
    onnx_dir = tmp_path / "data" / "jobs" / job_id / "run" / "onnx"
    before = {f.name: f.read_bytes() for f in onnx_dir.glob("scale_0*.onnx")}
    live.stop()  # the job is interrupted mid-way
    assert st["status"] == "running"
    live = LiveServer(cfg)
    try:
        c = live.client()
        done = _wait(c, job_id, lambda s: s["status"] == "done", timeout=180)
        assert done["available"] == done["n_scales"] == 3
        for name, data in before.items():
            assert (onnx_dir / name).read_bytes() == data  # finished scales are never retrained
        man = c.get(f"/v1/jobs/{job_id}/manifest").json()
        for entry in man["scales"]:
            got = c.get(f"/v1/jobs/{job_id}/scales/{entry['index']}").content
            assert hashlib.sha256(got).hexdigest() == entry["sha256"]
    finally:
        live.stop()


def test_oversized_body_refused_before_parsing(tmp_path):
    live = LiveServer(_config(tmp_path, max_upload_bytes=10_000))
    try:
        body = b"x" * 200_000
        r = live.client().post("/v1/jobs", content=body, headers={"Content-Type": "multipart/form-data; boundary=zzz"})
        assert r.status_code == 413 and "larger than" in r.json()["detail"]
        assert list((tmp_path / "data").glob("jobs/*")) == []
    finally:
        live.stop()


def test_store_limits_hold_under_concurrent_submissions(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from edgegan.serve.store import JobStore, QueueFull

    store = JobStore(tmp_path / "jobs.sqlite")

    def attempt(_):
        try:
            store.create("owner", 3, {}, max_queued=3, max_active=5)
            return True
        except QueueFull:
            return False

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(20)))
    assert sum(results) == 3 and store.count("owner", "queued") == 3
