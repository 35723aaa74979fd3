"""The README's GAN Compression example runs as written: teacher, distilled student, ONNX file that matches it.

The block is the ```python fence after the ``<!-- test: readme-example -->`` line in README.md. It is run
in an empty folder holding the pairs it reads (``data/facades/A`` and ``B``) and must leave ``teacher`` and
``student`` (models) in its namespace and one ``.onnx`` file behind.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

import edgegan
from edgegan.data import save_image
from edgegan.profile.macs import count_params, profile_macs

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- test: readme-example -->"


def readme_block(text: str, marker: str = MARKER) -> str:
    """The code of the fenced block on the line after ``marker`` (which must occur exactly once)."""
    lines = text.splitlines()
    at = [i for i, line in enumerate(lines) if line.strip() == marker]
    assert len(at) == 1, f"README.md needs exactly one {marker!r} line, found {len(at)}"
    start = at[0] + 1
    assert start < len(lines) and lines[start].strip() == "```python", f"no ```python fence right after {marker}"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == "```"), None)
    assert end is not None, "the README example's fence is never closed"
    return "\n".join(lines[start + 1 : end]) + "\n"


def make_pairs(root: Path, n: int = 6, size: int = 32) -> None:
    """``n`` pairs: smooth random A, B = A with colours inverted and channels rolled (a learnable map)."""
    gen = torch.Generator().manual_seed(1)
    for i in range(n):
        a = F.interpolate(torch.rand(1, 3, 8, 8, generator=gen) * 2 - 1, size=size, mode="bilinear")[0]
        save_image(a, root / "A" / f"{i}.png")
        save_image(-a.roll(1, dims=0), root / "B" / f"{i}.png")


def test_readme_block_is_found_exactly():
    block = readme_block(README.read_text())
    # It is the compression example, not some other block: every step the README promises is in it.
    for step in ("edgegan.train_pix2pix(", "edgegan.distill_from_folders(", "edgegan.export_onnx("):
        assert step in block
    compile(block, "README.md", "exec")
    with pytest.raises(AssertionError, match="exactly one"):
        readme_block("```python\nx = 1\n```\n")
    with pytest.raises(AssertionError, match="fence"):
        readme_block(f"{MARKER}\n\n```python\nx = 1\n```\n")


def test_readme_example_trains_compresses_and_exports(tmp_path, monkeypatch):
    block = readme_block(README.read_text())
    monkeypatch.chdir(tmp_path)
    make_pairs(tmp_path / "data" / "facades")
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(block, "README.md (test: readme-example)", "exec"), namespace)

    teacher, student = namespace["teacher"], namespace["student"]
    assert teacher.arch == "resnet_generator" and student.arch == "mobile_resnet_generator"
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    t_cost, s_cost = profile_macs(teacher.eval(), x[:1]), profile_macs(student.eval(), x[:1])
    assert s_cost.macs < t_cost.macs and count_params(student) < count_params(teacher)

    onnx_files = sorted(tmp_path.rglob("*.onnx"))
    assert len(onnx_files) == 1, onnx_files
    sess = ort.InferenceSession(str(onnx_files[0]), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = student(x).numpy()
    assert got.shape == expected.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    # The file holds the distilled student, not the teacher (whose output differs by far more than that).
    with torch.no_grad():
        assert float(np.abs(teacher(x).numpy() - got).max()) > 1e-2


def test_public_names_are_lazy_and_resolve():
    assert edgegan.__all__ == sorted(edgegan.__all__)
    for name in edgegan.__all__:
        assert getattr(edgegan, name) is not None, name
    assert edgegan.train_pix2pix is edgegan.compress.teacher.train_pix2pix
    # `import edgegan` stays light: the recipes and ONNX are imported on first use.
    code = (
        "import sys, edgegan\n"
        "heavy = [m for m in ('onnx', 'onnxruntime', 'edgegan.compress', 'edgegan.export') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "edgegan.export_onnx\n"
        "assert 'edgegan.export.onnx' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = edgegan.no_such_name
