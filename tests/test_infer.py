import numpy as np
import pytest
import torch
from torch import nn

from wmhkit.infer import (
    _gaussian_weights,
    channels_last,
    predict_slices,
    predict_sliding_window,
    predict_volume_2d,
    predict_volume_3d,
)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class Oracle(nn.Module):
    """Pointwise logits ``scale * (channel 0 - offset - channel 1)`` (channel 1 only if present), shaped
    (N, 1, ...), or as two-class logits / a deep-supervision list."""

    def __init__(self, scale=20.0, offset=0.5, mode="sigmoid"):
        super().__init__()
        self.scale, self.offset, self.mode = scale, offset, mode

    def forward(self, x):
        logit = self.scale * (x[:, :1] - self.offset - (x[:, 1:2] if x.shape[1] > 1 else 0))
        if self.mode == "softmax":
            # Softmax of (a, b) gives class 1 the sigmoid of b - a.
            return torch.cat([-logit / 2, logit / 2], dim=1)
        if self.mode == "deep":
            coarse = nn.functional.avg_pool2d(logit, 2) if x.ndim == 4 else nn.functional.avg_pool3d(logit, 2)
            return [logit, coarse]
        return logit


def oracle_probability(channels, scale=20.0, offset=0.5):
    second = channels[1] if channels.shape[0] > 1 else 0
    return sigmoid(scale * (channels[0] - offset - second))


def difference_net(dims, axis):
    """A central difference along one spatial axis (``axis`` counted from the end): sensitive to which
    voxel axis is which and to its direction."""
    kernel = [1] * dims
    kernel[axis] = 3
    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(1, 1, kernel, padding=tuple(k // 2 for k in kernel), bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        index = [0, 0] + [0] * dims
        index[axis] = 0
        conv.weight[tuple(index)] = -50.0
        index[axis] = 2
        conv.weight[tuple(index)] = 50.0
    return conv


def world_coordinates(shape, affine):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return grid @ affine[:3, :3].T + affine[:3, 3]


# A native grid stored (P, S, L): axis 0 runs posterior (-y, 1.2 mm), axis 1 superior (z, 3 mm), axis 2
# to the left (-x, 1 mm). Canonical RAS order is then (axis 2 flipped, axis 0 flipped, axis 1).
NATIVE_SHAPE = (50, 7, 44)
NATIVE_AFFINE = np.array([
    [0.0, 0.0, -1.0, 20.0],
    [-1.2, 0.0, 0.0, 30.0],
    [0.0, 3.0, 0.0, -9.0],
    [0.0, 0.0, 0.0, 1.0],
])


def smooth_channels():
    """Two smooth channels on the native grid whose oracle probability varies over the whole slice."""
    world = world_coordinates(NATIVE_SHAPE, NATIVE_AFFINE)
    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    first = 0.5 + 0.15 * np.sin(x / 9.0) + 0.004 * z
    second = 0.1 * np.cos(y / 11.0)
    return np.stack([first, second]).astype(np.float32), world


def native_brain(world):
    centre = np.array([0.0, 0.0, 0.0])
    radii = np.array([8.0, 10.0, 12.0])
    return (((world - centre) / radii) ** 2).sum(-1) <= 1


# ------------------------------------------------------------------------------------ predict_slices


def test_predict_slices_sigmoid_oracle():
    stack = np.random.default_rng(0).uniform(0, 1, (5, 2, 16, 12)).astype(np.float32)
    out = predict_slices(Oracle(), stack, batch_size=2)
    assert out.shape == (5, 16, 12) and out.dtype == np.float32
    np.testing.assert_allclose(out, oracle_probability(stack.transpose(1, 0, 2, 3)), atol=1e-5)


@pytest.mark.parametrize("mode", ["softmax", "deep"])
def test_predict_slices_softmax_and_deep_supervision(mode):
    stack = np.random.default_rng(1).uniform(0, 1, (3, 1, 8, 8)).astype(np.float32)
    out = predict_slices(Oracle(mode=mode), stack)
    np.testing.assert_allclose(out, oracle_probability(stack.transpose(1, 0, 2, 3)), atol=1e-5)


def test_predict_slices_flip_tta_averages_identity_lr_and_ap_flips():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(18.0).reshape(1, 2, 3, 3) / 10 - 0.6)  # no symmetry at all
    stack = np.random.default_rng(2).normal(size=(4, 2, 10, 14)).astype(np.float32)
    x = torch.from_numpy(stack)
    with torch.no_grad():
        plain = torch.sigmoid(conv(x))[:, 0]
        left_right = torch.sigmoid(conv(x.flip(-2))).flip(-2)[:, 0]  # H is canonical X (R-L)
        front_back = torch.sigmoid(conv(x.flip(-1))).flip(-1)[:, 0]
    expected = ((plain + left_right + front_back) / 3).numpy()
    out = predict_slices(conv, stack, batch_size=3, flip_tta=True, bf16=False)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.abs(out - plain.numpy()).max() > 0.05  # the flips do change the answer
    np.testing.assert_allclose(predict_slices(conv, stack, bf16=False), plain.numpy(), atol=1e-5)
    # bf16 (default on CPU) stays close to float32 and still returns float32.
    fast = predict_slices(conv, stack, flip_tta=True)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, expected, atol=0.03)


def test_predict_slices_restores_training_mode_and_rejects_bad_outputs():
    model = Oracle().train()
    predict_slices(model, np.zeros((1, 1, 4, 4), np.float32))
    assert model.training
    with pytest.raises(ValueError, match="output channels"):
        predict_slices(nn.Conv2d(1, 3, 1), np.zeros((1, 1, 4, 4), np.float32))


# ---------------------------------------------------------------------------- predict_sliding_window


def pointwise_net():
    conv = nn.Conv3d(2, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([3.0, -2.0]).reshape(1, 2, 1, 1, 1))
        conv.bias.fill_(0.2)
    return conv


@pytest.mark.parametrize("flip_tta", [False, True])
def test_sliding_window_matches_whole_volume(flip_tta):
    # 13 and 21 are not multiples of the patch; 5 is smaller than it.
    volume = np.random.default_rng(3).normal(size=(2, 13, 5, 21)).astype(np.float32)
    net = pointwise_net()
    with torch.no_grad():
        expected = torch.sigmoid(net(torch.from_numpy(volume)[None]))[0, 0].numpy()
    out = predict_sliding_window(net, volume, (8, 8, 8), overlap=0.5, batch_size=3, flip_tta=flip_tta, bf16=False)
    assert out.shape == (13, 5, 21) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_sliding_window_covers_every_voxel_with_deep_supervision_and_softmax():
    volume = np.random.default_rng(4).uniform(size=(1, 11, 9, 10)).astype(np.float32)
    for mode in ("deep", "softmax"):
        out = predict_sliding_window(Oracle(scale=4, mode=mode), volume, (4, 6, 4), overlap=0.25)
        np.testing.assert_allclose(out, oracle_probability(volume, scale=4), atol=1e-5)


def test_sliding_window_blends_patch_borders_by_gaussian_weight():
    weights = _gaussian_weights((8, 9, 16))
    assert weights.shape == (8, 9, 16) and weights.min() > 0
    assert weights[4, 4, 8] == weights.max() and weights[4, 4, 8] == weights[3, 4, 7]  # symmetric peak
    assert weights[0, 4, 8] < 0.01 * weights[4, 4, 8]

    class PatchBorder(nn.Module):
        """Confident (p ~ 1) near a patch's centre, confidently wrong (p ~ 0) at its faces."""

        def forward(self, x):
            n = x.shape[-1]
            distance = (torch.arange(n) - (n - 1) / 2).abs()
            return (10.0 - 20.0 * (distance >= n / 2 - 1).float()).expand(x.shape[0], 1, *x.shape[2:])

    out = predict_sliding_window(PatchBorder(), np.zeros((1, 4, 4, 24), np.float32), (4, 4, 8), overlap=0.5)
    # Inner voxels sit at the face of one patch but the centre of another: the centre wins.
    assert out[..., 1:-1].min() > 0.95


# ------------------------------------------------------------------------------- native-grid volumes


def test_predict_volume_2d_lps_permuted_matches_pointwise_function():
    channels, world = smooth_channels()
    brain = native_brain(world)
    out = predict_volume_2d(Oracle(scale=6, offset=0.5), channels, NATIVE_AFFINE, brain, size=64)
    assert out.shape == NATIVE_SHAPE and out.dtype == np.float32
    expected = oracle_probability(channels, scale=6)
    inside = np.abs(world[..., :2]).max(-1) <= 12  # well within brain extent + 10 mm margin, in-plane
    assert np.abs(out - expected)[inside].max() < 0.02
    # The window is the brain's in-plane extent plus 10 mm: beyond 14 mm from it nothing is predicted.
    far = (np.abs(world[..., 0]) > 8 + 14) | (np.abs(world[..., 1]) > 10 + 14)
    assert far.any() and (out[far] == 0).all()
    near = (np.abs(world[..., 0]) <= 8 + 6) & (np.abs(world[..., 1]) <= 10 + 6)
    assert (out[near] > 0).all()


def test_predict_volume_2d_feeds_canonical_ras_slices():
    # A network differentiating along H (canonical X, to the right) must see a positive slope of a ramp
    # growing to the right, and none of one growing anteriorly; the reverse along W (canonical Y). A slice
    # in native order, flipped or transposed breaks one of these.
    _, world = smooth_channels()
    brain = native_brain(world)
    inside = np.abs(world[..., :2]).max(-1) <= 10
    for axis, grows in ((-2, 0), (-1, 1)):
        net = difference_net(2, axis)
        along = predict_volume_2d(net, (world[None, ..., grows] / 20.0).astype(np.float32), NATIVE_AFFINE,
                                  brain, size=48)
        across = predict_volume_2d(net, (world[None, ..., 1 - grows] / 20.0).astype(np.float32), NATIVE_AFFINE,
                                   brain, size=48)
        assert along[inside].min() > 0.9
        np.testing.assert_allclose(across[inside], 0.5, atol=0.05)


def test_predict_volume_3d_on_working_grid_returns_native_grid():
    channels, world = smooth_channels()
    out = predict_volume_3d(Oracle(scale=6), channels, NATIVE_AFFINE, patch=(16, 16, 16), spacing_mm=2.0)
    assert out.shape == NATIVE_SHAPE and out.dtype == np.float32
    expected = oracle_probability(channels, scale=6)
    interior = (slice(2, -2), slice(1, -1), slice(2, -2))  # linear resampling clamps at the FOV's faces
    assert np.abs(out - expected)[interior].max() < 0.03
    assert np.abs(out - expected).max() < 0.1


def test_predict_volume_3d_feeds_canonical_ras_volumes():
    channels, world = smooth_channels()
    interior = (slice(2, -2), slice(None), slice(2, -2))
    for axis, grows in ((-3, 0), (-2, 1)):  # canonical X grows to the right, Y anteriorly
        ramp = (world[None, ..., grows] / 20.0).astype(np.float32)
        out = predict_volume_3d(difference_net(3, axis), ramp, NATIVE_AFFINE, patch=(16, 16, 8), bf16=False)
        assert out.shape == NATIVE_SHAPE
        assert out[interior].min() > 0.9
    exact = predict_volume_3d(pointwise_net(), channels, NATIVE_AFFINE, patch=(16, 16, 8), bf16=False)
    with torch.no_grad():
        expected = torch.sigmoid(pointwise_net()(torch.from_numpy(channels)[None]))[0, 0].numpy()
    np.testing.assert_allclose(exact, expected, atol=1e-5)


def test_channels_last_picks_the_layout_by_rank_and_keeps_values():
    # The CPU path feeds oneDNN channels-last tensors (faster convolutions); values must not change.
    torch.manual_seed(0)
    slices, volumes, other = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5, 6), torch.randn(3, 4, 5)
    assert not slices.is_contiguous(memory_format=torch.channels_last)
    assert channels_last(slices).is_contiguous(memory_format=torch.channels_last)
    assert not volumes.is_contiguous(memory_format=torch.channels_last_3d)
    assert channels_last(volumes).is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(channels_last(volumes), volumes) and torch.equal(channels_last(slices), slices)
    assert channels_last(other) is other


def test_bf16_counts_as_native_only_with_the_cpu_instructions(tmp_path, monkeypatch):
    # oneDNN reports bf16 support on every AVX-512 CPU, where it is emulated and slower than float32.
    import wmhkit.infer
    from wmhkit.infer import cpu_has_bf16_instructions, native_bf16

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n")
    assert not cpu_has_bf16_instructions(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    assert cpu_has_bf16_instructions(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n")
    assert cpu_has_bf16_instructions(info)
    assert not cpu_has_bf16_instructions(tmp_path / "missing")
    monkeypatch.setattr(wmhkit.infer, "cpu_has_bf16_instructions", lambda: False)
    assert not native_bf16("cpu")
