"""The SETGAN service client against a fake server (an httpx.MockTransport over a real tiny pyramid)."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import httpx
import pytest
import torch

from edgegan.data.images import load_image, save_image
from edgegan.errors import ConfigError, EdgeganError
from edgegan.serve import client_cli
from edgegan.serve.client import EdgeganClient, ServerError, parse_sse
from edgegan.setgan.config import SETGANConfig
from edgegan.setgan.export import export_scales
from edgegan.setgan.train import fit

TOKEN = "t0ken-for-tests"
SERVER = "http://edge.example:8123"
JOB = "job_abcdefgh1234"


def _image(h=32, w=36):
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([torch.sin(7 * x), torch.cos(5 * y), x * y * 2 - 1])[None].clamp(-1, 1)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    cfg = SETGANConfig(max_size=36, min_size=25, iters=2, nfc=8, max_nfc=8, mode="serial")
    run = fit(_image(), tmp_path_factory.mktemp("srv") / "run", cfg)
    manifest = export_scales(run)
    assert manifest["available"] == manifest["n_scales"] >= 3
    return run.path / "onnx"


def _multipart(request: httpx.Request) -> dict[str, bytes]:
    boundary = re.search(r"boundary=([^;]+)", request.headers["content-type"]).group(1).encode()
    fields = {}
    for part in request.content.split(b"--" + boundary)[1:-1]:
        head, _, body = part.strip(b"\r\n").partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]+)"', head).group(1).decode()
        fields[name] = body
    return fields


class FakeServer:
    """The server's HTTP contract over the files of a real exported pyramid; only scales
    0..a-1 are 'available'."""

    def __init__(self, onnx_dir: Path) -> None:
        self.dir = onnx_dir
        self.full = json.loads((onnx_dir / "manifest.json").read_text())
        self.n = self.full["n_scales"]
        self.a = self.n
        self.status_name = "running"
        self.requests: list[tuple[str, str]] = []
        self.auth: list[str | None] = []
        self.scale_downloads = 0
        self.tamper: set[int] = set()
        self.queue_full = False
        self.events_fail = False
        self.advance_on_events = False
        self.advance_on_status = False
        self.manifest_ahead = False  # list every scale in the manifest whatever is available
        self.submitted: list[dict] = []
        self.lock = threading.Lock()

    def job(self) -> dict:
        done = self.a >= self.n
        return {
            "id": JOB,
            "status": "done" if done and self.status_name == "running" else self.status_name,
            "mode": 3,
            "created": 1700000000.0,
            "started": 1700000001.0,
            "finished": None,
            "n_scales": self.n,
            "available": self.a,
            "chosen_scales": None,
            "progress": {
                str(i): {"step": 2 if i < self.a else 0, "total": 2, "done": i < self.a} for i in range(self.n)
            },
            "error": None,
            "queue_position": None,
        }

    def _advance(self) -> None:
        self.a = min(self.n, self.a + 1)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            return self._handle(request)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        self.requests.append((method, path))
        self.auth.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"detail": "invalid or missing token"})
        if path == "/v1/jobs" and method == "POST":
            if self.queue_full:
                return httpx.Response(429, json={"detail": "queue full, retry later"})
            fields = _multipart(request)
            self.submitted.append({"image": fields["image"], "options": json.loads(fields.get("options", b"{}"))})
            return httpx.Response(201, json={"id": JOB, "status": "queued"})
        m = re.fullmatch(r"/v1/jobs/([^/]+)(/.*)?", path)
        if not m:
            return httpx.Response(404, json={"detail": "not found"})
        if m.group(1) != JOB:
            return httpx.Response(404, json={"detail": f"unknown job {m.group(1)}"})
        rest = m.group(2) or ""
        if rest == "" and method == "GET":
            if self.advance_on_status:
                self._advance()
            return httpx.Response(200, json=self.job())
        if rest == "" and method == "DELETE":
            self.status_name = "cancelled"
            return httpx.Response(204)
        if rest == "/manifest":
            a = self.n if self.manifest_ahead else self.a
            man = dict(self.full, available=a, scales=[s for s in self.full["scales"] if s["index"] < a])
            return httpx.Response(200, json=man)
        if rest == "/events":
            if self.events_fail:
                return httpx.Response(500, json={"detail": "stream broken"})
            if self.advance_on_events:
                self._advance()
            body = f": keep-alive\n\nevent: status\ndata: {json.dumps(self.job())}\n\n"
            if self.job()["status"] in ("done", "failed", "cancelled"):
                body += 'event: end\ndata: {"status": "done"}\n\n'
            return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})
        sm = re.fullmatch(r"/scales/(\d+)", rest)
        if sm:
            k = int(sm.group(1))
            if k >= self.a:
                return httpx.Response(409, json={"detail": f"scale {k} is not available yet"})
            entry = self.full["scales"][k]
            data = bytearray((self.dir / entry["file"]).read_bytes())
            if k in self.tamper:
                data[len(data) // 2] ^= 0xFF
            self.scale_downloads += 1
            headers = {"X-Edgegan-Sha256": entry["sha256"], "X-Edgegan-Noise-Amp": str(entry["noise_amp"])}
            return httpx.Response(200, content=bytes(data), headers=headers)
        return httpx.Response(404, json={"detail": "not found"})


@pytest.fixture
def fake(onnx_dir):
    return FakeServer(onnx_dir)


@pytest.fixture
def client(fake, tmp_path):
    with EdgeganClient(SERVER, TOKEN, cache_dir=tmp_path / "cache", transport=httpx.MockTransport(fake)) as c:
        yield c


def test_submit_status_cancel_round_trip(client, fake, tmp_path):
    img = tmp_path / "in.png"
    save_image(_image()[0], img)
    job = client.submit(img, mode=2, quality=0.5, iters=7, max_size=None)
    assert job == JOB
    assert fake.submitted[0]["options"] == {"mode": 2, "quality": 0.5, "iters": 7}
    assert fake.submitted[0]["image"] == img.read_bytes()
    st = client.status(job)
    assert st["status"] == "done" and st["available"] == fake.n
    assert client.cancel(job) is None
    assert client.status(job)["status"] == "cancelled"
    assert set(fake.auth) == {f"Bearer {TOKEN}"}
    assert ("DELETE", f"/v1/jobs/{JOB}") in fake.requests


def test_submit_checks_input_before_any_request(client, fake, tmp_path):
    with pytest.raises(EdgeganError, match="not found"):
        client.submit(tmp_path / "missing.png")
    img = tmp_path / "in.png"
    save_image(_image()[0], img)
    with pytest.raises(ConfigError, match="mode"):
        client.submit(img, mode=4)
    assert fake.requests == []


def test_token_from_env_or_error(monkeypatch, fake, tmp_path):
    monkeypatch.delenv("EDGEGAN_TOKEN", raising=False)
    with pytest.raises(EdgeganError, match="token"):
        EdgeganClient(SERVER, cache_dir=tmp_path)
    monkeypatch.setenv("EDGEGAN_TOKEN", TOKEN)
    with EdgeganClient(SERVER, cache_dir=tmp_path, transport=httpx.MockTransport(fake)) as c:
        assert c.status(JOB)["id"] == JOB
    with pytest.raises(ConfigError, match="http"):
        EdgeganClient("ftp://x", TOKEN)


def test_sync_downloads_only_available_scales_once(client, fake):
    fake.a = 1
    folder, a = client.sync(JOB)
    assert a == 1 and fake.scale_downloads == 1
    assert folder == client.cache_dir / "edge.example_8123" / JOB
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "scale_00.onnx"]
    local = json.loads((folder / "manifest.json").read_text())
    assert local["available"] == 1 and [s["index"] for s in local["scales"]] == [0]
    assert local["sizes"] == fake.full["sizes"]
    client.sync(JOB)
    assert fake.scale_downloads == 1  # nothing new: no download
    fake.a = fake.n
    _, a = client.sync(JOB)
    assert a == fake.n and fake.scale_downloads == fake.n
    client.sync(JOB)
    assert fake.scale_downloads == fake.n
    scale_gets = [p for m, p in fake.requests if "/scales/" in p]
    assert len(scale_gets) == fake.n


def test_sync_rejects_tampered_scale(client, fake):
    fake.tamper = {1}
    with pytest.raises(EdgeganError, match="sha256 mismatch"):
        client.sync(JOB)
    folder = client.job_dir(JOB)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "scale_00.onnx"]  # no temp file left
    assert json.loads((folder / "manifest.json").read_text())["available"] == 1
    # A corrupted cached file is fetched again.
    fake.tamper = set()
    (folder / "scale_00.onnx").write_bytes(b"garbage")
    _, a = client.sync(JOB)
    assert a == fake.n
    assert client.pyramid(JOB).n_scales == fake.n


def test_pyramid_grows_with_available_scales(client, fake):
    sizes = [(h, w) for w, h in fake.full["sizes"]]
    fake.a = 0
    with pytest.raises(EdgeganError, match="no trained scale"):
        client.pyramid(JOB)
    fake.a = 1
    pyr = client.pyramid(JOB)
    out = pyr.sample(2, generator=torch.Generator().manual_seed(0))
    assert pyr.n_scales == 1 and tuple(out.shape) == (2, 3, *sizes[0])
    fake.a = fake.n
    pyr = client.pyramid(JOB)
    out = pyr.sample(2, generator=torch.Generator().manual_seed(0))
    assert pyr.n_scales == fake.n and tuple(out.shape) == (2, 3, *sizes[-1])
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0 + 1e-5
    assert client.pyramid(JOB, k=0).n_scales == 1


def test_parse_sse():
    lines = [
        ": comment",
        "event: status",
        'data: {"a":',
        "data: 1}",
        "id: 7",
        "",
        "",
        "data: plain text\r",
        "",
        "event: end",
        'data: {"status": "done"}',
    ]
    assert list(parse_sse(lines)) == [
        ("status", {"a": 1}),
        ("message", {"data": "plain text"}),
        ("end", {"status": "done"}),
    ]


def test_events_from_server(client, fake):
    events = list(client.events(JOB))
    assert [name for name, _ in events] == ["status", "end"]
    assert events[0][1]["available"] == fake.n


def test_wait_follows_events_and_falls_back_to_polling(client, fake):
    fake.a, fake.advance_on_events = 1, True
    seen = []
    st = client.wait(JOB, until_available=2, poll=0.05, timeout=10, on_status=seen.append)
    assert st["available"] >= 2 and seen[-1] is st
    fake.a, fake.advance_on_events, fake.events_fail, fake.advance_on_status = 0, False, True, True
    st = client.wait(JOB, poll=0.01, timeout=10)
    assert st["status"] == "done" and st["available"] == fake.n
    fake.a, fake.advance_on_status = 0, False
    with pytest.raises(EdgeganError, match="timed out"):
        client.wait(JOB, poll=0.01, timeout=0.1)


def test_error_mapping(fake, tmp_path):
    transport = httpx.MockTransport(fake)
    with EdgeganClient(SERVER, "wrong", cache_dir=tmp_path, transport=transport) as c:
        with pytest.raises(ServerError, match="401.*invalid or missing token") as info:
            c.status(JOB)
        assert info.value.status_code == 401
    with EdgeganClient(SERVER, TOKEN, cache_dir=tmp_path, transport=transport) as c:
        with pytest.raises(EdgeganError, match="404.*unknown job zzzzzzzzzz"):
            c.status("zzzzzzzzzz")
        fake.queue_full = True
        img = tmp_path / "in.png"
        save_image(_image()[0], img)
        with pytest.raises(EdgeganError, match="429.*queue full"):
            c.submit(img)
        fake.a, fake.manifest_ahead = 1, True
        with pytest.raises(EdgeganError, match="409.*scale 1 is not available yet"):
            c.sync(JOB)
        fake.events_fail = True
        with pytest.raises(EdgeganError, match="500.*stream broken"):
            list(c.events(JOB))

    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    with EdgeganClient(SERVER, TOKEN, cache_dir=tmp_path, transport=httpx.MockTransport(refuse)) as c:
        with pytest.raises(EdgeganError, match="cannot reach server http://edge.example:8123"):
            c.status(JOB)
        with pytest.raises(EdgeganError, match="cannot reach server"):
            c.sync(JOB)


@pytest.mark.parametrize("bad", ["../../etc", "a/b/cdefgh", "short", "x" * 65, "job id with spaces", "..%2F..%2Fx"])
def test_path_like_job_ids_rejected_before_any_request(client, fake, bad):
    for call in (client.status, client.manifest, client.cancel, client.sync, client.pyramid, client.job_dir):
        with pytest.raises(EdgeganError, match="invalid job id"):
            call(bad)
    with pytest.raises(EdgeganError, match="invalid job id"):
        list(client.events(bad))
    with pytest.raises(EdgeganError, match="invalid job id"):
        client.wait(bad)
    assert fake.requests == []
    assert not (client.cache_dir).exists()


def test_host_folder_is_sanitised(fake, tmp_path):
    with EdgeganClient("https://[::1]/prefix/", TOKEN, cache_dir=tmp_path) as c:
        assert c.job_dir(JOB).parent.name == "__1_443"
        assert c.server == "https://[::1]/prefix"


def test_sample_and_watch_helpers(client, fake, tmp_path):
    fake.a = 2
    used, (w, h) = client_cli.sample_job(client, JOB, tmp_path / "s", n=2, size=(40, 30))
    assert used == 2 and (w, h) == (40, 30)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["sample_000.png", "sample_001.png"]
    with pytest.raises(ConfigError, match="--scales 3"):
        client_cli.sample_job(client, JOB, tmp_path / "s", scales=3)
    used, _ = client_cli.sample_job(client, JOB, tmp_path / "s1", scales=1, n=1)
    assert used == 1

    fake.a, fake.advance_on_events = 0, True
    rendered, st = client_cli.watch_samples(client, JOB, tmp_path / "w", n=1, poll=0.05)
    assert rendered == list(range(1, fake.n + 1)) and st["status"] == "done"
    sizes = [(w, h) for w, h in fake.full["sizes"]]
    for a in rendered:
        out = load_image(tmp_path / "w" / f"step_{a}" / "sample_000.png")
        assert (out.shape[2], out.shape[1]) == tuple(sizes[a - 1])


def test_apply_helper(client, fake, tmp_path):
    img = tmp_path / "in.png"
    save_image(_image()[0], img)
    mask = tmp_path / "mask.png"
    m = torch.full((3, 32, 36), -1.0)
    m[:, 8:20, 10:24] = 1.0
    save_image(m, mask)
    result, _ = client_cli.apply_job(client, JOB, "harmonize", img, mask=mask, inject_scale=1)
    assert tuple(result.shape) == (1, 3, 32, 36)
    result, _ = client_cli.apply_job(client, JOB, "paint2image", img)
    assert tuple(result.shape) == (1, 3, 32, 36)
    result, note = client_cli.apply_job(client, JOB, "superres", img, factor=1.5)
    assert tuple(result.shape) == (1, 3, 48, 54) and "steps" in note
    with pytest.raises(ConfigError, match="--mask"):
        client_cli.apply_job(client, JOB, "edit", img)
    with pytest.raises(ConfigError, match="--task"):
        client_cli.apply_job(client, JOB, "nope", img)


def test_cli_sample_and_status(fake, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    def make(server, token, cache_dir=None):
        return EdgeganClient(server, token, cache_dir=tmp_path / "c", transport=httpx.MockTransport(fake))

    monkeypatch.setattr(client_cli, "make_client", make)
    runner = CliRunner()
    out = tmp_path / "o"
    args = ["sample", JOB, "--server", SERVER, "--token", TOKEN, "--n", "2", "--out", str(out)]
    res = runner.invoke(client_cli.app, args)
    assert res.exit_code == 0, res.output
    assert "scales 0.." in res.output and len(list(out.glob("sample_*.png"))) == 2
    res = runner.invoke(client_cli.app, ["status", JOB, "--server", SERVER, "--token", TOKEN, "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["id"] == JOB
    res = runner.invoke(client_cli.app, ["status", JOB, "--server", SERVER, "--token", TOKEN])
    assert res.exit_code == 0 and "available" in res.output


def test_cli_train_follows_progress(fake, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    def make(server, token, cache_dir=None):
        return EdgeganClient(server, token, cache_dir=tmp_path / "c", transport=httpx.MockTransport(fake))

    monkeypatch.setattr(client_cli, "make_client", make)
    img = tmp_path / "in.png"
    save_image(_image()[0], img)
    fake.a, fake.advance_on_events = 0, True
    args = ["train", str(img), "--server", SERVER, "--token", TOKEN, "--iters", "5", "--poll", "0.05"]
    res = CliRunner().invoke(client_cli.app, args)
    assert res.exit_code == 0, res.output
    assert JOB in res.output and f"scales 0..{fake.n - 1} available" in res.output and "done" in res.output
    assert fake.submitted[-1]["options"] == {"mode": 3, "iters": 5}
    fake.status_name = "failed"
    res = CliRunner().invoke(client_cli.app, args)
    assert isinstance(res.exception, EdgeganError) and "failed" in str(res.exception)
