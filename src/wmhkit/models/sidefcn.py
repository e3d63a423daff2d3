"""Side-output FCN with VGG-16 transfer learning (Xu et al. 2017).

The base is the convolutional part of VGG-16 up to conv4_3: four stages of 2, 2, 3 and 3 3x3 convs at
64, 128, 256 and 512 filters, ReLU, a 2x2 max-pool after stages 1-3 (none after stage 4), initialised
from ImageNet weights (:func:`load_vgg16_features`). After each stage a 3x3 conv with K = 16 maps makes a
"side output", bilinearly up-sampled to the input size; the 4K maps are concatenated and a 1x1 conv
gives the two class scores (background, WMH).

The input is a 3-channel "colour" slice, as the pretrained filters expect: FLAIR, T1 and the white
area top-hat of FLAIR, each requantised to 8 bits and centred by -127 (:func:`colour_slices`).

Shapes: input (N, 3, H, W), any H and W (side outputs are resized to the exact input size; sizes
divisible by 8 avoid rounding in the poolings); output logits (N, 2, H, W).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

STAGE_CONVS = (2, 2, 3, 3)  # VGG-16 conv1_1 .. conv4_3
BASE_FILTERS = (64, 128, 256, 512)
# Indices of conv1_1 .. conv4_3 in torchvision's ``vgg16().features`` (ReLUs and pools in between).
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)


class VGGStage(nn.Module):
    """``n_convs`` same-padded 3x3 conv (+ BatchNorm) + ReLU: (N, in_channels, H, W) -> (N, out_channels, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, n_convs: int, batch_norm: bool = False):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1) for i in range(n_convs)
        )
        self.norms = nn.ModuleList(
            nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity() for _ in range(n_convs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)), inplace=True)
        return x


class SideFCN(nn.Module):
    """VGG-16 base (conv1_1..conv4_3) with one side output per stage, fused by a 1x1 conv.

    Parameters
    ----------
    in_channels : 3 (the colour slice; the pretrained conv1_1 needs 3)
    width : factor on every base filter count (1.0: 64..512 as VGG-16; pretrained weights need 1.0)
    k_side : maps per side output (the paper's K = 16)
    n_classes : output classes (2: background, WMH)
    norm : "none" (the paper's VGG-16) or "batch" (BatchNorm after every base conv, as torchvision's
        VGG-16-BN; not in the paper: a base trained from scratch on a CPU budget converges much faster
        with it, and ImageNet VGG-16 weights still load into its convs)

    ``forward``: (N, in_channels, H, W) -> logits (N, n_classes, H, W).
    ``SideFCN(**model.config)`` rebuilds the architecture for a saved state dict.
    """

    def __init__(self, in_channels: int = 3, width: float = 1.0, k_side: int = 16, n_classes: int = 2,
                 norm: str = "none"):
        super().__init__()
        if norm not in ("none", "batch"):
            raise ValueError(f"norm must be 'none' or 'batch', not {norm!r}")
        self.config = {"in_channels": in_channels, "width": width, "k_side": k_side, "n_classes": n_classes,
                       "norm": norm}
        filters = [max(1, round(f * width)) for f in BASE_FILTERS]
        channels = [in_channels] + filters
        self.stages = nn.ModuleList(
            VGGStage(c_in, c_out, n, batch_norm=norm == "batch")
            for c_in, c_out, n in zip(channels[:-1], channels[1:], STAGE_CONVS)
        )
        self.sides = nn.ModuleList(nn.Conv2d(c, k_side, 3, padding=1) for c in filters)
        self.fuse = nn.Conv2d(len(filters) * k_side, n_classes, 1)

    def base_convs(self) -> list[tuple[str, nn.Conv2d]]:
        """The 10 base convs in VGG order (conv1_1 .. conv4_3), with their module names."""
        return [
            (f"stages.{s}.convs.{i}", conv) for s, stage in enumerate(self.stages) for i, conv in enumerate(stage.convs)
        ]

    def side_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Side outputs of the 4 stages, each up-sampled to the input size: 4 x (N, k_side, H, W)."""
        size = x.shape[-2:]
        sides = []
        for level, (stage, side) in enumerate(zip(self.stages, self.sides)):
            if level:
                x = F.max_pool2d(x, 2)
            x = stage(x)
            # The side convs stay linear: the fusing 1x1 conv weighs raw evidence from every scale.
            sides.append(F.interpolate(side(x), size=size, mode="bilinear", align_corners=False))
        return sides

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat(self.side_outputs(x), dim=1))


def load_vgg16_features(model: SideFCN, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Copy VGG-16 conv1_1..conv4_3 from a torchvision-style state dict onto ``model``'s base.

    ``state_dict`` holds ``features.{i}.weight`` / ``features.{i}.bias`` for i in
    :data:`VGG16_CONV_INDICES` (other keys, e.g. the classifier or deeper convs, are ignored). Every
    shape is checked before anything is copied, so a failing call leaves the model untouched. Returns
    the names of the loaded parameters of ``model`` (20: weight and bias of 10 convs).
    """
    pairs = []
    for index, (name, conv) in zip(VGG16_CONV_INDICES, model.base_convs()):
        for kind in ("weight", "bias"):
            key = f"features.{index}.{kind}"
            if key not in state_dict:
                raise ValueError(f"VGG-16 state dict lacks {key!r}")
            source, target = state_dict[key], getattr(conv, kind)
            if tuple(source.shape) != tuple(target.shape):
                raise ValueError(
                    f"{key!r} has shape {tuple(source.shape)} but {name}.{kind} needs {tuple(target.shape)} "
                    f"(pretrained weights need width=1.0 and in_channels=3)"
                )
            pairs.append((f"{name}.{kind}", source, target))
    with torch.no_grad():
        for _, source, target in pairs:
            target.copy_(torch.as_tensor(source, dtype=target.dtype))
    return [name for name, _, _ in pairs]


def _requantise(volume: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """0.5-99.5 percentile range of the volume (within ``mask``) to integers 0..255, then minus 127.

    If the image is flat up to its 99.5th percentile, the maximum is the top of the range instead.
    """
    values = volume[mask] if mask is not None else volume
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        # Sparse images (a top-hat of clean data) can be flat up to the 99.5th percentile; their few
        # bright voxels are the whole signal, so spread up to the maximum instead.
        hi = float(values.max())
    if hi <= lo:  # truly flat: no contrast to spread over 8 bits
        levels = np.zeros(volume.shape, dtype=np.uint8)
    else:
        levels = np.round(np.clip((volume - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    return levels.astype(np.float32) - 127


def colour_slices(
    flair: np.ndarray,
    t1: np.ndarray,
    tophat: np.ndarray | None = None,
    *,
    third: str = "tophat",
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """The network input: channels (FLAIR, T1, top-hat) requantised to 8 bits and centred by -127.

    Each channel is mapped over its own 0.5-99.5 percentile range of the whole volume (within ``mask``
    if given) to the integers 0..255 (clipped), then 127 is subtracted: float32 in [-127, 128].
    ``tophat`` is the white area top-hat of FLAIR (``wmhkit.preprocess.area_tophat``); with
    ``third="t1"`` (the ablation without top-hat) the third channel is T1 again and ``tophat`` is unused.

    Inputs: volumes (X, Y, Z) of one subject -> (Z, 3, X, Y), one colour slice per axial slice; or one
    slice (X, Y) -> (3, X, Y).
    """
    if third not in ("tophat", "t1"):
        raise ValueError(f"third must be 'tophat' or 't1', not {third!r}")
    if third == "tophat" and tophat is None:
        raise ValueError("third='tophat' needs the top-hat image")
    third_image = t1 if third == "t1" else tophat
    images = [np.asarray(a, dtype=np.float32) for a in (flair, t1, third_image)]
    if any(a.shape != images[0].shape for a in images) or images[0].ndim not in (2, 3):
        raise ValueError(f"expected three (X, Y, Z) or (X, Y) arrays of one shape, got {[a.shape for a in images]}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != images[0].shape:
            raise ValueError(f"mask {mask.shape} does not match images {images[0].shape}")
        if not mask.any():
            raise ValueError("mask is empty: no voxels to take percentiles over")
    out = np.stack([_requantise(a, mask) for a in images], axis=0)  # (3, X, Y[, Z])
    if out.ndim == 4:
        out = np.moveaxis(out, 3, 0)  # (Z, 3, X, Y)
    return np.ascontiguousarray(out)
