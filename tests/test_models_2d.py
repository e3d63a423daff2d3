"""2D networks: Viteri et al. 2021 U-Net and Xu et al. 2017 side-output FCN (tiny widths, CPU)."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from wmhkit.models.sidefcn import (
    VGG16_CONV_INDICES,
    SideFCN,
    colour_slices,
    load_vgg16_features,
)
from wmhkit.models.unet2d import UNet2D, build_unet2d, v1_inputs

torch.set_num_threads(1)


def convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def toy_batch(channels, size=32):
    """A bright square on noise in every channel; the target is the square."""
    gen = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(2, channels, size, size, generator=gen)
    target = torch.zeros(2, 1, size, size)
    target[0, :, 8:16, 8:16] = 1
    target[1, :, 16:28, 4:12] = 1
    return x + target, target


# ----------------------------------------------------------------------------------------- U-Net


@pytest.mark.parametrize("variant", ["v1", "v2", "v3"])
def test_unet_shapes(variant):
    model = build_unet2d(variant, width=0.125)
    assert model.config["variant"] == variant
    out = model(torch.randn(2, 2, 64, 64))
    assert out.shape == (2, 1, 64, 64)


def test_unet_flair_only_and_batchnorm():
    model = UNet2D(in_channels=1, width=0.125, norm="batch")
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(2, 1, 200, 200)).shape == (2, 1, 200, 200)


def test_unet_instance_norm_uses_each_slice_own_statistics():
    torch.manual_seed(0)
    model = UNet2D(in_channels=1, width=0.125, norm="instance").eval()
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in model.modules()) == 14
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 1, 32, 32)
    # Unlike BatchNorm's running statistics, a global gain of the input is normalised away (an offset
    # is too, except at the zero-padded borders).
    assert torch.allclose(model(x), model(3.0 * x), atol=1e-3)
    batch = UNet2D(in_channels=1, width=0.125, norm="batch").eval()
    assert not torch.allclose(batch(x), batch(3.0 * x), atol=1e-3)
    with pytest.raises(ValueError, match="norm"):
        UNet2D(norm="group")


def test_unet_has_exactly_15_convs_with_paper_kernels():
    layers = convs(build_unet2d("v2", width=0.125))
    assert len(layers) == 15
    kernels = [m.kernel_size for m in layers]
    assert kernels[:2] == [(5, 5), (5, 5)]
    assert kernels[2:14] == [(3, 3)] * 12
    assert kernels[14] == (1, 1) and layers[14].out_channels == 1


def test_unet_width_scales_filters():
    outs = [m.out_channels for m in convs(UNet2D(width=1.0))]
    assert outs == [64, 64, 128, 128, 256, 256, 512, 512, 256, 256, 128, 128, 64, 64, 1]
    outs = [m.out_channels for m in convs(UNet2D(width=0.25))]
    assert outs[:8] == [16, 16, 32, 32, 64, 64, 128, 128]


def test_unet_activations_per_variant():
    for variant in ("v1", "v2"):
        model = build_unet2d(variant, width=0.125)
        assert not any(isinstance(m, nn.ELU) for m in model.modules())
        assert any(isinstance(m, nn.ReLU) for m in model.modules())
    model = build_unet2d("v3", width=0.125)
    assert any(isinstance(m, nn.ELU) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_unet_v3_he_init():
    torch.manual_seed(0)
    layer = build_unet2d("v3", width=0.25).bottleneck.body[0]  # 64 -> 128, 3x3: fan_in 576
    fan_in = layer.in_channels * 9
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    assert torch.all(layer.bias == 0)
    default = build_unet2d("v2", width=0.25).bottleneck.body[0]
    assert default.weight.std().item() < 0.5 * math.sqrt(2 / fan_in)


def test_unet_rejects_non_divisible_input():
    with pytest.raises(ValueError, match="divisible by 8"):
        build_unet2d("v2", width=0.125)(torch.randn(1, 2, 60, 64))


def test_build_unet_rejects_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        build_unet2d("v4")


def test_v1_inputs():
    flair, t1 = torch.rand(3, 8, 8), torch.rand(3, 8, 8)
    x = v1_inputs(flair, t1)
    assert x.shape == (3, 2, 8, 8)
    assert torch.equal(x[:, 0], flair) and torch.allclose(x[:, 1], flair * t1)
    assert torch.equal(v1_inputs(flair[:, None], t1[:, None]), x)
    with pytest.raises(ValueError):
        v1_inputs(flair, t1[:2])


@pytest.mark.parametrize("variant", ["v1", "v2", "v3"])
def test_unet_learns_toy_square(variant):
    torch.manual_seed(0)
    model = build_unet2d(variant, width=0.125)
    x, target = toy_batch(2)
    if variant == "v1":
        x = v1_inputs(x[:, 0], x[:, 1])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.no_grad():
        before = F.binary_cross_entropy_with_logits(model(x), target).item()
    for _ in range(20):
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(x), target)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        after = F.binary_cross_entropy_with_logits(model(x), target).item()
    assert after < 0.75 * before


@pytest.mark.parametrize("norm", [None, "batch", "instance"])
def test_unet_rebuild_from_config(norm):
    torch.manual_seed(0)
    model = build_unet2d("v3", width=0.125, norm=norm).eval()
    saved = {"config": dict(model.config), "state_dict": model.state_dict()}
    rebuilt = UNet2D(**saved["config"]).eval()
    rebuilt.load_state_dict(saved["state_dict"])
    x = torch.randn(1, 2, 32, 32)
    assert torch.equal(model(x), rebuilt(x))


# --------------------------------------------------------------------------------------- side FCN


def test_sidefcn_shapes_and_side_outputs():
    model = SideFCN(width=0.125, k_side=16)
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 2, 64, 64)
    sides = model.side_outputs(x)
    assert len(sides) == 4
    assert all(s.shape == (2, 16, 64, 64) for s in sides)
    # Odd sizes still come back at the input size.
    assert model(torch.randn(1, 3, 30, 45)).shape == (1, 2, 30, 45)


def test_sidefcn_base_is_vgg16_up_to_conv4_3():
    base = SideFCN(width=1.0).base_convs()
    assert [conv.out_channels for _, conv in base] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512]
    assert all(conv.kernel_size == (3, 3) for _, conv in base)


def vgg16_state_dict(seed=0):
    """Synthetic torchvision ``vgg16().state_dict()`` subset: conv1_1..conv5_3 plus a classifier key."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256),
              (512, 256), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    indices = list(VGG16_CONV_INDICES) + [24, 26, 28]
    state = {}
    for index, (c_out, c_in) in zip(indices, shapes):
        state[f"features.{index}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=gen)
        state[f"features.{index}.bias"] = torch.randn(c_out, generator=gen)
    state["classifier.0.weight"] = torch.randn(4, 4, generator=gen)
    return state


def test_load_vgg16_features():
    model = SideFCN(width=1.0)
    state = vgg16_state_dict()
    side_before = model.sides[0].weight.clone()
    loaded = load_vgg16_features(model, state)
    assert len(loaded) == 20
    assert len({name.rsplit(".", 1)[0] for name in loaded}) == 10
    params = dict(model.named_parameters())
    for (_, conv), index in zip(model.base_convs(), VGG16_CONV_INDICES):
        assert torch.equal(conv.weight, state[f"features.{index}.weight"])
        assert torch.equal(conv.bias, state[f"features.{index}.bias"])
    assert torch.equal(params["stages.3.convs.2.weight"], state["features.21.weight"])
    assert torch.equal(model.sides[0].weight, side_before)


def test_load_vgg16_features_rejects_wrong_shapes():
    model = SideFCN(width=0.5)
    before = model.stages[0].convs[0].weight.clone()
    with pytest.raises(ValueError, match="features.0.weight"):
        load_vgg16_features(model, vgg16_state_dict())
    assert torch.equal(model.stages[0].convs[0].weight, before)
    state = vgg16_state_dict()
    state["features.21.bias"] = torch.zeros(3)
    with pytest.raises(ValueError, match="features.21.bias"):
        load_vgg16_features(SideFCN(width=1.0), state)


def test_sidefcn_learns_toy_square():
    torch.manual_seed(0)
    model = SideFCN(width=0.125)
    x, target = toy_batch(3)
    labels = target[:, 0].long()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.no_grad():
        before = F.cross_entropy(model(x), labels).item()
    for _ in range(20):
        optimiser.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        after = F.cross_entropy(model(x), labels).item()
    assert after < 0.75 * before


def test_sidefcn_batchnorm_option_keeps_the_vgg_convs():
    model = SideFCN(width=1.0, norm="batch")
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 10
    state = vgg16_state_dict()
    load_vgg16_features(model, state)
    assert torch.equal(model.stages[3].convs[2].weight, state["features.21.weight"])
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2, 32, 32)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in SideFCN(width=0.125).modules())
    with pytest.raises(ValueError, match="norm"):
        SideFCN(norm="instance")


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_sidefcn_rebuild_from_config(norm):
    torch.manual_seed(0)
    model = SideFCN(width=0.125, k_side=4, norm=norm).eval()
    rebuilt = SideFCN(**model.config).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x), rebuilt(x))


# ------------------------------------------------------------------------------------ colour slices


def test_colour_slices_requantise_and_centre():
    rng = np.random.default_rng(0)
    flair = rng.normal(100, 20, (16, 12, 5)).astype(np.float32)
    t1 = rng.normal(500, 50, (16, 12, 5)).astype(np.float32)
    tophat = np.zeros_like(flair)
    tophat[4:6, 4:6, 2] = 30
    out = colour_slices(flair, t1, tophat)
    assert out.shape == (5, 3, 16, 12) and out.dtype == np.float32
    assert out.min() >= -127 and out.max() <= 128
    assert np.all(out == np.round(out))  # integer levels: 8-bit requantised
    # Each channel spans its own range: 0.5 % of voxels at the bottom level, 0.5 % at the top.
    for c in range(2):
        assert (out[:, c] == -127).mean() == pytest.approx(0.005, abs=0.004)
        assert (out[:, c] == 128).mean() == pytest.approx(0.005, abs=0.004)
    # Slice z of the volume is row z of the output.
    single = colour_slices(flair[:, :, 2], t1[:, :, 2], tophat[:, :, 2])
    assert single.shape == (3, 16, 12)
    lo, hi = np.percentile(flair, [0.5, 99.5])  # of the volume, not of the slice
    expected = np.round(np.clip((flair[:, :, 2] - lo) / (hi - lo), 0, 1) * 255) - 127
    assert np.allclose(out[2, 0], expected)
    # The sparse top-hat (0.4 % bright voxels) is flat up to its 99.5th percentile: its maximum sets the top.
    assert out[2, 2, 4, 4] == 128 and out[0, 2, 0, 0] == -127


def test_colour_slices_constant_channel_and_mask():
    flair = np.full((6, 6, 2), 7.0)
    out = colour_slices(flair, flair, third="t1")
    assert np.all(out == -127)
    t1 = np.arange(72, dtype=float).reshape(6, 6, 2)
    mask = np.zeros((6, 6, 2), bool)
    mask[:3] = True  # values 0..35: brighter voxels outside the mask clip to the top level
    out = colour_slices(t1, t1, third="t1", mask=mask)
    assert np.all(out[:, 0][np.moveaxis(~mask, 2, 0)] == 128)
    with pytest.raises(ValueError, match="empty"):
        colour_slices(t1, t1, third="t1", mask=np.zeros_like(mask))


def test_colour_slices_without_tophat_repeats_t1():
    rng = np.random.default_rng(1)
    flair, t1 = rng.random((8, 8, 3)), rng.random((8, 8, 3))
    out = colour_slices(flair, t1, third="t1")
    assert np.array_equal(out[:, 2], out[:, 1])
    with pytest.raises(ValueError):
        colour_slices(flair, t1)  # top-hat channel asked for but missing
    with pytest.raises(ValueError):
        colour_slices(flair, t1, t1, third="flair")
