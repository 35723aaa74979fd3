import dataclasses
import hashlib
import shutil

import pytest
import torch

from edgegan import weights
from edgegan.weights import WeightsError, available, fetch, find, load_state_dict


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No real cache or environment: weights live only where a test puts them."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    return tmp_path


def _write(path, tensors):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _accept(monkeypatch, name, digest):
    spec = dataclasses.replace(weights.KNOWN[name], sha256_prefix=digest[:8])
    monkeypatch.setitem(weights.KNOWN, name, spec)


def test_missing_file_says_which_and_where(isolated):
    with pytest.raises(WeightsError) as info:
        find("inception-fid")
    msg = str(info.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg and "EDGEGAN_WEIGHTS" in msg and "fetch" in msg
    assert "\n" not in msg
    assert available("inception-fid")[0] is None


def test_wrong_hash_is_refused(isolated):
    f = isolated / "pt_inception-2015-12-05-6726825d.pth"
    _write(f, {"w": torch.zeros(2)})
    with pytest.raises(WeightsError, match="sha256 starts with .* expected 6726825d"):
        find("inception-fid", f)


def test_lookup_order_explicit_env_cache(isolated, monkeypatch):
    spec = weights.KNOWN["alexnet"]
    cache_file = weights.cache_dir() / spec.filename
    digest = _write(cache_file, {"features.0.weight": torch.ones(1)})
    _accept(monkeypatch, "alexnet", digest)
    assert find("alexnet") == cache_file  # the torch hub cache
    env_dir = isolated / "env"
    env_dir.mkdir()
    shutil.copy(cache_file, env_dir / spec.filename)
    monkeypatch.setenv(weights.ENV_VAR, str(env_dir))
    assert find("alexnet") == env_dir / spec.filename  # the environment wins over the cache
    explicit = isolated / "renamed.pth"
    shutil.copy(cache_file, explicit)
    assert find("alexnet", explicit) == explicit  # an explicit file may have any name
    with pytest.raises(WeightsError, match="does not exist"):
        find("alexnet", isolated / "nope.pth")


class Evil:
    """Any class: loading it would mean unpickling arbitrary code."""


def test_load_state_dict_never_unpickles_objects(isolated, monkeypatch):
    f = isolated / "alex.pth"
    torch.save({"lin0.model.1.weight": torch.ones(1), "obj": Evil()}, f)
    with pytest.raises(Exception, match="weights_only|cannot|refus"):
        load_state_dict("lpips-alex", f)


def test_fetch_verifies_and_installs_atomically(isolated, monkeypatch):
    src = isolated / "published.pth"
    digest = _write(src, {"w": torch.arange(3.0)})
    _accept(monkeypatch, "inception-fid", digest)
    got = fetch("inception-fid", dest=isolated / "cache", url=src.as_uri())
    assert got.name == "pt_inception-2015-12-05-6726825d.pth" and got.read_bytes() == src.read_bytes()
    _accept(monkeypatch, "inception-fid", "00000000")
    with pytest.raises(WeightsError, match="sha256"):
        fetch("inception-fid", dest=isolated / "cache2", url=src.as_uri())
    assert list((isolated / "cache2").iterdir()) == []
    with pytest.raises(WeightsError, match="cannot download"):
        fetch("inception-fid", dest=isolated / "cache3", url=(isolated / "missing.pth").as_uri())


def test_unknown_name():
    with pytest.raises(WeightsError, match="unknown weights"):
        find("vgg")
