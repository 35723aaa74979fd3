import random

import pytest
import torch
from torch import nn

import edgegan
from edgegan.compress.supernet import extract_subnet
from edgegan.errors import ConfigError
from edgegan.models import MobileResnetGenerator, MobileResnetSupernet
from edgegan.nn.dynamic import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicConvTranspose2d,
    DynamicSeparableConv2d,
)
from edgegan.profile.macs import profile_macs

CHOICES = [4, 8, 12, 16]


def _x(batch=2, size=16):
    return torch.randn(batch, 3, size, size)


def _assert_close(a, b):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() < 1e-5


@pytest.mark.parametrize("n_blocks", [3, 9])
@pytest.mark.parametrize("padding_type", ["reflect", "zero"])
def test_supernet_matches_extracted_subnet_instance_norm(n_blocks, padding_type):
    sup = MobileResnetSupernet(ngf=16, n_blocks=n_blocks, padding_type=padding_type).eval()
    x = _x()
    configs = [sup.largest_config(), sup.smallest_config(CHOICES)]
    configs += [sup.sample_config(random.Random(seed), CHOICES) for seed in range(3)]
    for ch in configs:
        sup.set_config(ch)
        sub = extract_subnet(sup, ch)
        assert type(sub) is MobileResnetGenerator
        assert sub.config.channels == ch
        assert not sub.training
        with torch.no_grad():
            _assert_close(sup(x), sub(x))


@pytest.mark.parametrize("paths", [{"residual": True}, {"input_skip": True}, {"residual": True, "input_skip": True}])
def test_supernet_with_input_paths_matches_extracted_subnet(paths):
    """Sub-networks keep the teacher's input paths; the skip feeds min(c0, c7) channels, so c0 != c7 is exact."""
    torch.manual_seed(0)
    sup = MobileResnetSupernet(ngf=16, n_blocks=3, **paths).eval()
    with torch.no_grad():  # the residual head starts at zero (output = input): give it weights to compare
        for p in sup.head.parameters():
            p.normal_(0, 0.05)
    x = _x()
    configs = [(16, 8, 8, 8, 8, 8, 8, 4), (4, 8, 8, 8, 8, 8, 8, 16), sup.smallest_config(CHOICES)]
    configs += [sup.sample_config(random.Random(seed), CHOICES) for seed in range(3)]
    for ch in configs:
        sup.set_config(ch)
        sub = extract_subnet(sup, ch)
        assert (sub.config.residual, sub.config.input_skip) == (sup.config.residual, sup.config.input_skip)
        with torch.no_grad():
            out = sup(x)
            _assert_close(out, sub(x))
            if paths.get("residual"):  # the correction is not zero, and evaluation clamps to the image range
                assert (out - x.clamp(-1, 1)).abs().max() > 1e-3
                assert out.abs().max() <= 1.0


def test_supernet_matches_subnet_with_batch_norm_and_dropout_in_eval():
    sup = MobileResnetSupernet(ngf=16, n_blocks=3, norm="batch", dropout=0.5)
    rng = random.Random(1)
    configs = [sup.sample_config(rng, CHOICES) for _ in range(3)] + [sup.smallest_config(CHOICES)]
    with torch.no_grad():
        sup.train()
        for ch in configs:  # populate the running statistics (each config updates its leading slice)
            sup.set_config(ch)
            sup(_x(batch=4))
        sup.eval()
        x = _x()
        for ch in configs:
            sup.set_config(ch)
            sub = extract_subnet(sup, ch)
            _assert_close(sup(x), sub(x))
    bn = sup.down[0][1]
    assert isinstance(bn, DynamicBatchNorm2d)
    assert int(bn.num_batches_tracked) == len(configs)
    assert not torch.equal(bn.running_mean[:8], torch.zeros(8))


def test_extracted_subnet_saves_and_loads_as_plain_generator(tmp_path):
    sup = MobileResnetSupernet(ngf=16, n_blocks=3, norm="batch").eval()
    ch = (8, 4, 12, 16, 4, 8, 12, 4)
    sub = extract_subnet(sup, ch)
    path = sub.save(tmp_path / "sub")
    loaded = edgegan.load(path)
    assert type(loaded) is MobileResnetGenerator
    assert loaded.arch == "mobile_resnet_generator"
    assert loaded.config.channels == ch
    x = _x()
    with torch.no_grad():
        sup.set_config(ch)
        _assert_close(loaded(x), sub(x))
        _assert_close(loaded(x), sup(x))


def test_supernet_itself_is_registered_and_saveable(tmp_path):
    sup = edgegan.build("mobile_resnet_supernet", ngf=8, n_blocks=3)
    assert isinstance(sup, MobileResnetSupernet)
    loaded = edgegan.load(sup.save(tmp_path / "sup"))
    assert isinstance(loaded, MobileResnetSupernet)
    x = _x()
    with torch.no_grad():
        _assert_close(loaded(x), sup.eval()(x))


def test_largest_config_is_exactly_the_full_mobile_generator():
    sup = MobileResnetSupernet(ngf=16, n_blocks=3).eval()
    gen = MobileResnetGenerator(ngf=16, n_blocks=3).eval()
    gen.load_state_dict(sup.state_dict(), strict=True)  # same names and shapes
    full = extract_subnet(sup, sup.largest_config())
    for k, v in full.state_dict().items():
        assert torch.equal(v, gen.state_dict()[k])
    x = _x()
    with torch.no_grad():
        y = gen(x)
        _assert_close(sup(x), y)  # default: full width
        _assert_close(full(x), y)
        _, feats_sup = sup(x, return_features=True)
        _, feats_gen = gen(x, return_features=True)
    assert list(feats_sup) == list(feats_gen)
    assert sup.distill_feature_names() == gen.distill_feature_names()


def test_macs_decrease_from_largest_to_smallest_and_supernet_profile_matches():
    sup = MobileResnetSupernet(ngf=16, n_blocks=3).eval()
    x = _x(batch=1, size=32)
    gcs = []
    for c in sorted(CHOICES, reverse=True):
        ch = (c,) * 8
        sub_report = profile_macs(extract_subnet(sup, ch), x)
        gcs.append(sub_report.macs_gc)
        sup.set_config(ch)
        # dynamic convs report their true MACs for the active widths
        assert profile_macs(sup, x).macs == sub_report.macs
    assert all(a > b for a, b in zip(gcs, gcs[1:], strict=False))


def test_set_config_widths_follow_the_channel_semantics():
    sup = MobileResnetSupernet(ngf=16, n_blocks=9)
    ch = (4, 8, 12, 16, 4, 8, 12, 4)
    sup.set_config(ch)
    assert sup.active_config == ch
    assert sup.stem[-3].active_out_channels == 4
    assert sup.down[0][0].active_out_channels == 16
    assert sup.down[1][0].active_out_channels == 48
    expand = [b.conv_block[1].pointwise.active_out_channels for b in sup.blocks]
    project = [b.conv_block[5].pointwise.active_out_channels for b in sup.blocks]
    assert expand == [64] * 3 + [16] * 3 + [32] * 3
    assert project == [48] * 9
    assert sup.up[0][0].active_out_channels == 24
    assert sup.up[1][0].active_out_channels == 4
    assert sup.head[-2].active_out_channels == 3
    assert sup(_x(batch=1)).shape == (1, 3, 16, 16)


def test_set_config_validation():
    sup = MobileResnetSupernet(ngf=16, n_blocks=3)
    for bad in [(16,) * 7, (16,) * 9, (17,) + (16,) * 7, (0,) + (16,) * 7, (8.0,) + (16,) * 7, "16_16", None]:
        with pytest.raises(ConfigError):
            sup.set_config(bad)
        with pytest.raises(ConfigError):
            extract_subnet(sup, bad)
    with pytest.raises(ConfigError):
        sup.sample_config(random.Random(0), [4, 32])
    with pytest.raises(ConfigError):
        sup.smallest_config([])
    with pytest.raises(ConfigError):
        MobileResnetSupernet(ngf=0)
    with pytest.raises(ConfigError):
        MobileResnetSupernet(dropout=1.5)
    assert sup.active_config == sup.largest_config() == (16,) * 8


def test_sample_config_draws_from_choices_and_is_seeded():
    sup = MobileResnetSupernet(ngf=16, n_blocks=3)
    a = [sup.sample_config(random.Random(7), CHOICES) for _ in range(2)]
    assert a[0] == a[1]
    rng = random.Random(3)
    seen = set()
    for _ in range(20):
        ch = sup.sample_config(rng, CHOICES)
        assert len(ch) == 8 and set(ch) <= set(CHOICES)
        seen.update(ch)
    assert seen == set(CHOICES)
    assert sup.smallest_config(CHOICES) == (4,) * 8


def test_dynamic_layers_match_sliced_static_layers():
    x = torch.randn(2, 6, 9, 9)
    conv = DynamicConv2d(8, 10, 3, stride=2, padding=1)
    conv.set_active(7)
    ref = nn.Conv2d(6, 7, 3, stride=2, padding=1)
    ref.weight.data.copy_(conv.weight[:7, :6])
    ref.bias.data.copy_(conv.bias[:7])
    _assert_close(conv(x), ref(x))

    tconv = DynamicConvTranspose2d(8, 10, 3, stride=2, padding=1, output_padding=1)
    tconv.set_active(5)
    tref = nn.ConvTranspose2d(6, 5, 3, stride=2, padding=1, output_padding=1)
    tref.weight.data.copy_(tconv.weight[:6, :5])
    tref.bias.data.copy_(tconv.bias[:5])
    _assert_close(tconv(x), tref(x))

    sep = DynamicSeparableConv2d(8, 10, 3, padding=1, norm="instance")
    sep.set_active(4)
    assert sep(x).shape == (2, 4, 9, 9)
    assert sep.depthwise(x).shape == (2, 6, 9, 9)

    with pytest.raises(ValueError):
        conv.set_active(11)
    with pytest.raises(ValueError):
        conv(torch.randn(1, 9, 4, 4))
    with pytest.raises(ValueError):
        sep.depthwise.set_active(3)
