"""Run the service in a background thread on a free loopback port (tests and benchmarks)."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import uvicorn

from edgegan.serve.app import ServerConfig, create_app


class LiveServer:
    """uvicorn serving :func:`create_app` on 127.0.0.1; ``stop()`` shuts down cleanly (running jobs
    are interrupted and re-queued by the next server on the same data folder, as after a restart)."""

    def __init__(self, cfg: ServerConfig, start_timeout: float = 20.0) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.config = cfg
        self.app = create_app(cfg)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="edgegan-live-server")
        self.thread.start()
        deadline = time.monotonic() + start_timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
