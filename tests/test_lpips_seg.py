"""LPIPS (random weights in the published key layouts) and segmentation evaluation."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from edgegan import weights
from edgegan.errors import EdgeganError, ImageLoadError
from edgegan.metrics.lpips import LPIPS, TAP_CHANNELS, load_lpips
from edgegan.metrics.segmentation import (
    SegmentationModel,
    confusion_matrix,
    evaluate_segmentation,
    load_label_map,
    segmentation_scores,
)

# ---------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------


def _sha8(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def _write_weights(tmp_path, *, heads_scale: float = 1.0, head_shape_bug: bool = False):
    """An alexnet-owt-7be5be79.pth-style file (features.* + small dummy classifier keys) and an alex.pth-style file."""
    g = torch.Generator().manual_seed(1)
    ref = LPIPS()
    backbone = {f"features.{k}": torch.randn(v.shape, generator=g) * 0.05 for k, v in ref.features.state_dict().items()}
    backbone["classifier.1.weight"] = torch.randn(8, 16, generator=g)  # real shape is [4096, 9216]; must be ignored
    backbone["classifier.1.bias"] = torch.randn(8, generator=g)
    backbone["classifier.6.weight"] = torch.randn(10, 8, generator=g)
    heads = {
        f"lin{i}.model.1.weight": torch.rand(1, c + (1 if head_shape_bug and i == 2 else 0), 1, 1, generator=g)
        * heads_scale
        for i, c in enumerate(TAP_CHANNELS)
    }
    backbone_path = tmp_path / "alexnet-owt-7be5be79.pth"
    heads_path = tmp_path / "alex.pth"
    torch.save(backbone, backbone_path)
    torch.save(heads, heads_path)
    return backbone_path, heads_path


@pytest.fixture
def lpips_files(tmp_path, monkeypatch):
    backbone_path, heads_path = _write_weights(tmp_path)
    spec = weights.KNOWN["alexnet"]
    monkeypatch.setitem(weights.KNOWN, "alexnet", dataclasses.replace(spec, sha256_prefix=_sha8(backbone_path)))
    return backbone_path, heads_path


def test_lpips_state_dict_layout():
    keys = set(LPIPS().state_dict())
    assert {f"features.{i}.weight" for i in (0, 3, 6, 8, 10)} <= keys
    assert {f"lin{i}.model.1.weight" for i in range(5)} <= keys
    assert tuple(LPIPS().lin4.model[1].weight.shape) == (1, 256, 1, 1)


def test_lpips_loads_and_behaves(lpips_files):
    backbone_path, heads_path = lpips_files
    model = load_lpips(backbone_path=backbone_path, heads_path=heads_path)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    backbone = torch.load(backbone_path, weights_only=True)
    assert torch.equal(model.features[3].weight, backbone["features.3.weight"])

    x = torch.rand(3, 3, 64, 48) * 2 - 1
    y = torch.rand(3, 3, 64, 48) * 2 - 1
    d_xy = model(x, y)
    assert d_xy.shape == (3,)
    assert torch.all(d_xy > 0)  # heads are non-negative (torch.rand)
    assert torch.allclose(d_xy, model(y, x), rtol=1e-5, atol=1e-7)
    assert model(x, x).abs().max() < 1e-6


def test_lpips_folder_lookup_and_head_mismatch(tmp_path, monkeypatch):
    backbone_path, heads_path = _write_weights(tmp_path, head_shape_bug=True)
    spec = weights.KNOWN["alexnet"]
    monkeypatch.setitem(weights.KNOWN, "alexnet", dataclasses.replace(spec, sha256_prefix=_sha8(backbone_path)))
    with pytest.raises(EdgeganError, match="alex.pth") as info:
        load_lpips(backbone_path=tmp_path, heads_path=tmp_path)  # folders holding the published names
    assert "\n" not in str(info.value) and "lin2.model.1.weight" in str(info.value)


def test_lpips_refuses_wrong_hash(tmp_path):
    backbone_path, heads_path = _write_weights(tmp_path)
    with pytest.raises(weights.WeightsError, match="sha256"):
        load_lpips(backbone_path=backbone_path, heads_path=heads_path)


def test_lpips_rejects_tiny_and_mismatched_inputs():
    model = LPIPS().eval()
    with pytest.raises(EdgeganError, match="31"):
        model(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError):
        model(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 40))


# ---------------------------------------------------------------------------------------------
# Label maps
# ---------------------------------------------------------------------------------------------


def test_label_map_l_and_p(tmp_path):
    labels = np.array([[0, 1, 2], [3, 4, 255]], dtype=np.uint8)
    Image.fromarray(labels, mode="L").save(tmp_path / "l.png")
    assert load_label_map(tmp_path / "l.png").tolist() == labels.tolist()

    pal = Image.new("P", (3, 2))
    pal.putdata(labels.reshape(-1).tolist())
    pal.putpalette([0, 0, 0] * 256)  # every index has the same colour
    for name in ("p.png", "p.bmp", "p.tif"):
        pal.save(tmp_path / name)
        out = load_label_map(tmp_path / name)
        assert out.dtype == torch.long and out.tolist() == labels.tolist(), name

    wide = np.array([[0, 300], [1000, 7]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "i16.png")
    assert load_label_map(tmp_path / "i16.png").tolist() == wide.tolist()


def test_label_map_errors(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageLoadError, match="single-channel"):
        load_label_map(tmp_path / "rgb.png")
    with pytest.raises(ImageLoadError, match="not found"):
        load_label_map(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageLoadError) as info:
        load_label_map(tmp_path / "bad.png")
    assert "bad.png" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Confusion matrix and scores
# ---------------------------------------------------------------------------------------------

TARGET = torch.tensor([[0, 0, 1], [2, 255, 1]])
PRED = torch.tensor([[0, 1, 1], [2, 0, 0]])


def test_confusion_matrix_hand_example():
    cm = confusion_matrix(PRED, TARGET, 3)
    assert cm.dtype == torch.long
    assert cm.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]]
    s = segmentation_scores(cm)
    assert s["num_classes"] == 3 and s["num_pixels"] == 5
    assert s["per_class_iou"] == pytest.approx([1 / 3, 1 / 3, 1.0])
    assert s["miou"] == pytest.approx(5 / 9)
    assert s["pixel_accuracy"] == pytest.approx(3 / 5)
    assert segmentation_scores(cm[:, :3])["miou"] == pytest.approx(5 / 9)  # square matrices work too


def test_absent_classes_out_of_range_and_ignored_targets():
    s = segmentation_scores(confusion_matrix(PRED, TARGET, 4))
    assert s["per_class_iou"][3] is None and s["miou"] == pytest.approx(5 / 9)

    pred = PRED.clone()
    pred[1, 0] = 9  # out of range: a miss for target class 2, a false positive for nobody
    target = TARGET.clone()
    target[0, 2] = 7  # target class >= num_classes: skipped
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    s = segmentation_scores(cm)
    assert s["pixel_accuracy"] == pytest.approx(1 / 4)
    assert s["per_class_iou"] == pytest.approx([1 / 3, 0.0, 0.0])
    assert segmentation_scores(torch.zeros(2, 3, dtype=torch.long))["miou"] is None


# ---------------------------------------------------------------------------------------------
# Segmentation models
# ---------------------------------------------------------------------------------------------


def _tiny_segmenter() -> nn.Module:
    conv = nn.Conv2d(3, 4, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[3.0, 0, 0], [0, 3, 0], [0, 0, 3], [-2, -2, -2]]).view(4, 3, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 0.1, -0.1, 2.0]))
    return conv.eval()


def test_torchscript_and_onnx_agree(tmp_path):
    model = _tiny_segmenter()
    example = torch.rand(1, 3, 8, 8)
    torch.jit.trace(model, example).save(str(tmp_path / "seg.pt"))
    torch.onnx.export(
        model,
        (example,),
        str(tmp_path / "seg.onnx"),
        dynamo=False,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}},
    )
    ts = SegmentationModel.load(tmp_path / "seg.pt", input_range="unit")
    ox = SegmentationModel.load(tmp_path / "seg.onnx", input_range="unit")

    images = torch.rand(2, 3, 20, 12) * 2 - 1
    expected = model((images + 1) / 2).argmax(1)
    assert torch.equal(ts(images), expected)
    assert torch.equal(ox(images), expected)
    assert ts(images).dtype == torch.long and ts(images).shape == (2, 20, 12)

    labels = expected.clone()
    labels[:, :5] = (labels[:, :5] + 1) % 4
    labels[0, 0, 0] = 255
    batches = [(images[:1], labels[:1]), (images[1:], labels[1:])]
    r_ts = evaluate_segmentation(ts, batches, num_classes=4)
    r_ox = evaluate_segmentation(ox, batches, num_classes=4)
    assert torch.equal(r_ts["confusion_matrix"], r_ox["confusion_matrix"])
    assert r_ts["miou"] == r_ox["miou"] and 0 < r_ts["miou"] < 1
    assert r_ts["num_pixels"] == 2 * 20 * 12 - 1
    direct = segmentation_scores(confusion_matrix(expected, labels, 4))
    assert r_ts["miou"] == pytest.approx(direct["miou"])


def test_input_ranges_and_output_forms():
    seen = {}

    def capture(x):
        seen["x"] = x
        return torch.zeros(x.shape[0], 2, x.shape[2] // 2, x.shape[3] // 2)

    images = torch.full((1, 3, 4, 6), 1.0)
    for input_range, value in (("unit", 1.0), ("signed", 1.0), ("imagenet", (1 - 0.485) / 0.229)):
        out = SegmentationModel(capture, input_range=input_range)(images)
        assert out.shape == (1, 4, 6)  # logits upsampled bilinearly
        assert seen["x"][0, 0, 0, 0].item() == pytest.approx(value)
    images = -images
    SegmentationModel(capture, input_range="unit")(images)
    assert seen["x"].abs().max() == 0

    classes = torch.tensor([[[0, 1], [2, 3]]])
    up = SegmentationModel(lambda x: {"aux": torch.zeros(1), "out": classes})(torch.zeros(1, 3, 4, 4))
    assert up[0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


def test_bad_model_files(tmp_path):
    cases = {"missing.pt": None, "model.txt": b"hello", "junk.onnx": b"\x00garbage\xff" * 10, "junk.pt": b"junk" * 10}
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(EdgeganError) as info:
            SegmentationModel.load(path)
        message = str(info.value)
        assert name in message and "\n" not in message, message
    with pytest.raises(EdgeganError, match="input_range"):
        SegmentationModel.load(tmp_path / "junk.pt", input_range="bgr")
