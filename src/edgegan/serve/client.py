"""HTTP client of the SETGAN training service: submit an image, follow the job, download the
per-scale ONNX generators into a local cache and run them here with ONNX Runtime.

Every file is verified against the server's manifest (sha256) before it is used, and written
atomically, so an interrupted download never leaves a half-written scale in the cache. Scales
already cached are not downloaded again; in progressive mode (3) each :meth:`EdgeganClient.sync`
fetches only the scales trained since the last one.

The cache holds one folder per server and job: ``CACHE/<host>_<port>/<job_id>/`` with the
``scale_XX.onnx`` files and a ``manifest.json`` listing only what is cached and verified, the
format :func:`edgegan.setgan.export.onnx_pyramid` reads.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from edgegan.errors import ConfigError, EdgeganError
from edgegan.fileio import atomic_path, atomic_write_json

__all__ = [
    "JOB_ID_RE",
    "TERMINAL",
    "EdgeganClient",
    "ServerError",
    "default_cache_dir",
    "parse_sse",
]

JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
TERMINAL = frozenset({"done", "failed", "cancelled"})
MANIFEST = "manifest.json"
_FILE_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 16

StatusCallback = Callable[[dict[str, Any]], None]


class ServerError(EdgeganError):
    """The server answered with an error status; ``status_code`` and ``detail`` say which."""

    def __init__(self, message: str, status_code: int, detail: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


def default_cache_dir() -> Path:
    """``$EDGEGAN_CACHE`` if set, else ``~/.cache/edgegan/client``."""
    env = os.environ.get("EDGEGAN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgegan" / "client"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _check_job_id(job_id: Any) -> str:
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise EdgeganError(f"invalid job id {job_id!r}: expected 8 to 64 letters, digits, '_' or '-'")
    return job_id


def _host_folder(server: str) -> tuple[str, str]:
    """(base URL without a trailing slash, a safe folder name for the host and port)."""
    parts = urlsplit(server.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"server must be an http:// or https:// URL, got {server!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"server URL {server!r} has an invalid port") from None
    host = re.sub(r"[^A-Za-z0-9.-]", "_", parts.hostname)
    host = re.sub(r"^\.", "_", host)  # never '.', '..' or a hidden folder
    return server.strip().rstrip("/"), f"{host}_{port}"


def _json_or_raw(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"data": text}
    return value if isinstance(value, dict) else {"data": value}


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Server-sent events from text lines: ``(event name, data)`` per event.

    ``event:`` names the event (default ``message``), ``data:`` lines are joined with newlines
    and parsed as JSON (anything else comes back as ``{"data": value}``), a blank line ends an
    event, lines starting with ``:`` are comments (keep-alives); ``id:`` and ``retry:`` are ignored.
    """
    name = ""
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield name or "message", _json_or_raw("\n".join(data))
            name, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if data:  # a stream cut without the final blank line still delivers its last event
        yield name or "message", _json_or_raw("\n".join(data))


class _Follower:
    """Reads a job's event stream in a daemon thread and hands the events over through a queue.

    Besides the server's events the queue receives ``("closed", {})`` when the stream ends,
    ``("idle", {})`` when nothing arrived within the read timeout, ``("error", {"error": exc})``
    when the stream cannot be read.
    """

    def __init__(self, client: EdgeganClient, job_id: str) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._client, self._job_id = client, job_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"edgegan-events-{job_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._client._iter_events(self._job_id):
                if self._stop.is_set():
                    return
                self.events.put(event)
            self.events.put(("closed", {}))
        except httpx.ReadTimeout:
            self.events.put(("idle", {}))
        except Exception as exc:  # handed to the waiting thread, which falls back to polling
            self.events.put(("error", {"error": exc}))

    def stop(self) -> None:
        # The thread may still block on a read; it ends at its read timeout or the next event.
        self._stop.set()


class EdgeganClient:
    """Client of one SETGAN server (``server`` is its base URL, e.g. ``http://host:8000``).

    ``token`` defaults to ``$EDGEGAN_TOKEN``; ``cache_dir`` to :func:`default_cache_dir`;
    ``transport`` replaces the network (tests pass an ``httpx.MockTransport``).
    """

    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        cache_dir: Path | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server, self._host = _host_folder(server)
        if not token:
            env = [t.strip() for t in os.environ.get("EDGEGAN_TOKEN", "").split(",") if t.strip()]
            token = env[0] if env else None
        if not token:
            raise EdgeganError("no access token: pass --token (token=...) or set EDGEGAN_TOKEN")
        if any(c in token for c in "\r\n"):
            raise ConfigError("the access token must be a single line")
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout}")
        self.timeout = float(timeout)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self._http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "edgegan-client"},
            timeout=httpx.Timeout(self.timeout),
            transport=transport,
            follow_redirects=False,
        )

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EdgeganClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def job_dir(self, job_id: str) -> Path:
        """The local cache folder of ``job_id`` (not created)."""
        return self.cache_dir / self._host / _check_job_id(job_id)

    def _unreachable(self, exc: httpx.TransportError) -> EdgeganError:
        reason = _one_line(str(exc)) or type(exc).__name__
        return EdgeganError(f"cannot reach server {self.server}: {reason}")

    def _check(self, resp: httpx.Response, what: str) -> None:
        if resp.status_code < 400:
            return
        if not resp.is_closed:
            resp.read()
        detail: Any = None
        try:
            body = resp.json()
            detail = body.get("detail") if isinstance(body, dict) else None
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            pass
        if isinstance(detail, list):  # FastAPI's validation errors
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        if not detail:
            detail = resp.text[:200] if resp.text.strip() else resp.reason_phrase
        detail = _one_line(str(detail))
        raise ServerError(f"server error {resp.status_code} ({what}): {detail}", resp.status_code, detail)

    def _request(self, method: str, path: str, what: str, **kw: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        self._check(resp, what)
        return resp

    def _json(self, resp: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise EdgeganError(f"{what}: the server did not answer with JSON") from None
        if not isinstance(body, dict):
            raise EdgeganError(f"{what}: the server answered {type(body).__name__}, expected an object")
        return body

    # ------------------------------------------------------------------ jobs

    def submit(self, image: Path, *, mode: int = 3, quality: float | None = None, **options: Any) -> str:
        """Upload ``image`` and queue a training job; returns the job id.

        ``options`` (``max_size``, ``min_size``, ``iters``, ``nfc``, ``max_nfc``) left out or
        None take the server's defaults.
        """
        image = Path(image)
        if not image.is_file():
            raise EdgeganError(f"image not found: {image}")
        if mode not in (1, 2, 3):
            raise ConfigError(f"mode must be 1 (serial), 2 (parallel) or 3 (progressive), got {mode!r}")
        if quality is not None and not 0.0 < quality <= 1.0:
            raise ConfigError(f"quality is an SSIM threshold in (0, 1], got {quality}")
        opts: dict[str, Any] = {"mode": mode}
        if quality is not None:
            opts["quality"] = float(quality)
        opts.update({k: v for k, v in options.items() if v is not None})
        try:
            form = json.dumps(opts)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"job options must be JSON values: {exc}") from None
        ctype = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
        with open(image, "rb") as fh:
            resp = self._request(
                "POST", "/v1/jobs", "submit", files={"image": (image.name, fh, ctype)}, data={"options": form}
            )
        job_id = self._json(resp, "submit").get("id")
        if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
            raise EdgeganError(f"the server returned an invalid job id {job_id!r}")
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        """The job's status JSON (``status``, ``available``, ``progress``, ...)."""
        path = f"/v1/jobs/{_check_job_id(job_id)}"
        return self._json(self._request("GET", path, f"status of job {job_id}"), f"status of job {job_id}")

    def manifest(self, job_id: str) -> dict[str, Any]:
        """The server's manifest of the scales available now."""
        path = f"/v1/jobs/{_check_job_id(job_id)}/manifest"
        return self._json(self._request("GET", path, f"manifest of job {job_id}"), f"manifest of job {job_id}")

    def cancel(self, job_id: str) -> None:
        """Cancel (or delete) the job on the server."""
        self._request("DELETE", f"/v1/jobs/{_check_job_id(job_id)}", f"cancel job {job_id}")

    # ------------------------------------------------------------------ following a job

    def _iter_events(self, job_id: str, read_timeout: float | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        # httpx errors pass through (the follower tells read timeouts from failures).
        timeout = httpx.Timeout(self.timeout, read=read_timeout or self.timeout)
        path = f"/v1/jobs/{_check_job_id(job_id)}/events"
        with self._http.stream("GET", path, headers={"Accept": "text/event-stream"}, timeout=timeout) as resp:
            self._check(resp, f"events of job {job_id}")
            ctype = resp.headers.get("content-type", "")
            if not ctype.startswith("text/event-stream"):
                raise EdgeganError(f"events of job {job_id}: expected text/event-stream, got {ctype or 'nothing'}")
            yield from parse_sse(resp.iter_lines())

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's server-sent events as ``(name, data)``: ``status`` (the status JSON) and ``end``."""
        try:
            yield from self._iter_events(job_id)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def wait(
        self,
        job_id: str,
        *,
        on_status: StatusCallback | None = None,
        poll: float = 1.0,
        timeout: float | None = None,
        until_available: int | None = None,
    ) -> dict[str, Any]:
        """Follow the job until it is done, failed or cancelled, or until at least
        ``until_available`` scales are available; returns the last status.

        Status changes come from the event stream; when it fails, the status is polled every
        ``poll`` seconds instead. With ``on_status`` (called with every status seen) the status
        is also polled every ``poll`` seconds while the stream is quiet, so training progress
        keeps moving. ``timeout`` (seconds) raises :class:`EdgeganError` when it runs out.
        """
        _check_job_id(job_id)
        if poll <= 0:
            raise ConfigError(f"poll must be positive, got {poll}")
        deadline = None if timeout is None else time.monotonic() + timeout

        def finished(st: dict[str, Any]) -> bool:
            if on_status is not None:
                on_status(st)
            if st.get("status") in TERMINAL:
                return True
            return until_available is not None and int(st.get("available") or 0) >= until_available

        st = self.status(job_id)
        if finished(st):
            return st
        follower: _Follower | None = _Follower(self, job_id)
        quiet_closes = 0  # streams that ended in a row without an event
        data: dict[str, Any]
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise EdgeganError(f"timed out after {timeout:g} s waiting for job {job_id} ({st.get('status')})")
                step = poll if left is None else min(poll, left)
                if follower is None:
                    time.sleep(step)
                    kind, data = "tick", {}
                else:
                    try:
                        kind, data = follower.events.get(timeout=step)
                    except queue.Empty:
                        kind, data = "tick", {}
                if kind == "status" and isinstance(data.get("status"), str):
                    quiet_closes = 0
                    st = data
                elif kind == "end":
                    follower.stop()  # type: ignore[union-attr]
                    follower = None  # the stream is over: what remains is read by polling
                    st = self.status(job_id)
                elif kind in ("closed", "idle"):
                    # A quiet stream (read timeout) is reconnected; one that keeps closing is given up.
                    quiet_closes += kind == "closed"
                    follower = _Follower(self, job_id) if quiet_closes < 3 else None
                    st = self.status(job_id)
                elif kind == "error":
                    follower = None  # fall back to polling; a real error (404, 401) shows up there
                    st = self.status(job_id)
                elif kind == "tick" and (follower is None or on_status is not None):
                    st = self.status(job_id)
                else:
                    continue
                if finished(st):
                    return st
        finally:
            if follower is not None:
                follower.stop()

    # ------------------------------------------------------------------ downloads

    def _checked_manifest(self, job_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        m = self.manifest(job_id)
        bad = EdgeganError(f"job {job_id}: the server's manifest is malformed")
        if not isinstance(m.get("scales"), list) or not isinstance(m.get("sizes"), list) or "factor" not in m:
            raise bad
        try:
            available = int(m.get("available", 0))
            entries = sorted(m["scales"], key=lambda e: int(e["index"]))
        except (TypeError, ValueError, KeyError):
            raise bad from None
        usable: list[dict[str, Any]] = []
        for entry in entries:  # only a contiguous prefix 0..k-1 can run
            if len(usable) >= available or int(entry["index"]) != len(usable):
                break
            name, sha = entry.get("file"), entry.get("sha256")
            if not isinstance(name, str) or not _FILE_RE.match(name) or name == MANIFEST:
                raise EdgeganError(f"job {job_id}: unsafe file name {name!r} in the server's manifest")
            if not isinstance(sha, str) or not _SHA_RE.match(sha):
                raise EdgeganError(f"job {job_id}: scale {entry['index']} has no valid sha256 in the manifest")
            usable.append(entry)
        return m, usable

    def _download(self, job_id: str, entry: dict[str, Any], target: Path) -> None:
        k = int(entry["index"])
        limit = entry.get("bytes") if isinstance(entry.get("bytes"), int) else None
        digest = hashlib.sha256()
        received = 0
        try:
            with (
                self._http.stream("GET", f"/v1/jobs/{job_id}/scales/{k}") as resp,
                atomic_path(target) as tmp,
                open(tmp, "wb") as fh,
            ):
                self._check(resp, f"scale {k} of job {job_id}")
                for chunk in resp.iter_bytes(_CHUNK):
                    received += len(chunk)
                    if limit is not None and received > limit:
                        break  # larger than the manifest says: cannot match, stop reading
                    digest.update(chunk)
                    fh.write(chunk)
                fh.flush()
                if digest.hexdigest() != entry["sha256"]:
                    # Raised inside atomic_path: the temporary file is removed, nothing is kept.
                    raise EdgeganError(
                        f"scale {k} of job {job_id}: sha256 mismatch (got {received} bytes that do not match "
                        "the manifest); the download was discarded"
                    )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def sync(self, job_id: str) -> tuple[Path, int]:
        """Download every available scale not cached yet (sha256-verified, written atomically),
        then write the local ``manifest.json``; returns (local folder, scales available there)."""
        folder = self.job_dir(job_id)
        m, entries = self._checked_manifest(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        verified: list[dict[str, Any]] = []
        try:
            for entry in entries:
                target = folder / entry["file"]
                if target.is_file():
                    if _file_sha256(target) == entry["sha256"]:
                        verified.append(entry)
                        continue
                    target.unlink()  # stale or corrupt: fetch it again
                self._download(job_id, entry, target)
                verified.append(entry)
        finally:
            # Whatever happened, the local manifest lists exactly the files verified so far.
            local = {**m, "available": len(verified), "scales": verified, "source": {"server": self.server}}
            path = folder / MANIFEST
            old = None
            if path.is_file():
                try:
                    old = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):
                    old = None
            if old != local:
                atomic_write_json(path, local)
        return folder, len(verified)

    def pyramid(self, job_id: str, k: int | None = None) -> Any:
        """:meth:`sync`, then a :class:`~edgegan.setgan.pyramid.SETGANPyramid` of the cached scales
        0..k (default: all available) run by ONNX Runtime."""
        from edgegan.setgan.export import onnx_pyramid

        folder, available = self.sync(job_id)
        if available == 0:
            raise EdgeganError(f"job {job_id} has no trained scale available yet; wait for the first one")
        if k is not None and not 0 <= k < available:
            raise ConfigError(f"job {job_id}: scales 0..{k} requested, {available} available")
        return onnx_pyramid(folder, k=k)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
