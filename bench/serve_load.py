"""Bounded load test of the service on loopback: N clients submit tiny jobs and poll them.

Usage: python bench/serve_load.py [--clients 20] [--tokens 4] [--timeout 600]

Every client submits one tiny job (retrying after the expected 429 'queue full' answers),
polls it to completion and downloads its scales. Reports p50/p95 latency per endpoint, the
429 count, and any other error (there should be none). All traffic stays on 127.0.0.1 and
the test stops by itself after --timeout seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from edgegan.fileio import atomic_write_json
from edgegan.profile.machine import machine_info
from edgegan.serve.app import ServerConfig
from edgegan.serve.live import LiveServer

JOB = {"mode": 3, "max_size": 32, "min_size": 25, "iters": 3, "nfc": 8, "max_nfc": 8}


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (30, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/serve_load.json"))
    args = ap.parse_args()
    console = Console(width=120)
    tokens = [f"load-token-{i:02d}-0123456789abcdef" for i in range(args.tokens)]
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    queue_full = [0]
    completed = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + args.timeout

    def timed(name: str, fn):
        t0 = time.perf_counter()
        r = fn()
        with lock:
            latencies[name].append((time.perf_counter() - t0) * 1000)
        return r

    def one_client(i: int, live: LiveServer) -> None:
        with live.client(tokens[i % len(tokens)], timeout=60) as c:
            files = {"image": ("img.png", _png(i), "image/png")}
            while time.monotonic() < deadline:
                r = timed("POST /v1/jobs", lambda: c.post("/v1/jobs", files=files, data={"options": json.dumps(JOB)}))
                if r.status_code == 201:
                    job_id = r.json()["id"]
                    break
                if r.status_code == 429:
                    with lock:
                        queue_full[0] += 1
                    time.sleep(1.0)
                    continue
                with lock:
                    errors.append(f"submit: {r.status_code} {r.text[:100]}")
                return
            else:
                with lock:
                    errors.append("submit: gave up at the deadline")
                return
            while time.monotonic() < deadline:
                st = timed("GET /v1/jobs/{id}", lambda: c.get(f"/v1/jobs/{job_id}"))
                if st.status_code != 200:
                    with lock:
                        errors.append(f"status: {st.status_code}")
                    return
                body = st.json()
                if body["status"] == "done":
                    man = timed("GET manifest", lambda: c.get(f"/v1/jobs/{job_id}/manifest")).json()
                    for e in man["scales"]:
                        r = timed("GET scale", lambda e=e: c.get(f"/v1/jobs/{job_id}/scales/{e['index']}"))
                        if r.status_code != 200:
                            with lock:
                                errors.append(f"scale: {r.status_code}")
                    with lock:
                        completed[0] += 1
                    return
                if body["status"] in ("failed", "cancelled"):
                    with lock:
                        errors.append(f"job {body['status']}: {body['error']}")
                    return
                time.sleep(0.5)
            with lock:
                errors.append("job: not done at the deadline")

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ServerConfig(
            data_dir=Path(tmp),
            tokens=tokens,
            workers=args.workers,
            threads_per_job=1,
            job_workers=1,
            max_queued_per_token=2,
            max_running_per_token=2,
        )
        with LiveServer(cfg) as live:
            threads = [threading.Thread(target=one_client, args=(i, live)) for i in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    wall = time.monotonic() - started
    table = Table(title=f"{args.clients} clients, {args.tokens} tokens, {args.workers} job workers, {wall:.0f} s")
    for col in ("endpoint", "requests", "p50 ms", "p95 ms", "max ms"):
        table.add_column(col, justify="right")
    stats = {}
    for name, vals in sorted(latencies.items()):
        vals = sorted(vals)
        p95 = vals[min(len(vals) - 1, int(0.95 * len(vals)))]
        stats[name] = {"n": len(vals), "p50_ms": statistics.median(vals), "p95_ms": p95, "max_ms": vals[-1]}
        table.add_row(name, str(len(vals)), f"{stats[name]['p50_ms']:.1f}", f"{p95:.1f}", f"{vals[-1]:.1f}")
    console.print(table)
    console.print(
        f"jobs completed {completed[0]}/{args.clients}; queue-full answers (429) {queue_full[0]}; "
        f"other errors {len(errors)}"
    )
    for e in errors[:10]:
        console.print(f"  error: {e}")
    atomic_write_json(
        args.out,
        {
            "clients": args.clients,
            "tokens": args.tokens,
            "workers": args.workers,
            "wall_s": wall,
            "completed": completed[0],
            "queue_full": queue_full[0],
            "errors": errors,
            "latency": stats,
            "machine": machine_info(),
        },
    )
    console.print(f"wrote {args.out}")
    if errors or completed[0] != args.clients:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
