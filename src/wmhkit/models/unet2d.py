"""2D U-Net for WMH segmentation (Viteri et al. 2021).

The paper's network has 21 layers: 15 convolutions, 3 max-poolings and 3 up-samplings. The first two
convolutions are 5x5, all others 3x3 (except the 1x1 classifier); filters 64 -> 128 -> 256 -> 512 on the
contracting side; ReLU; trained with Adam at lr 2e-4; one sigmoid output map (binary WMH) at input size.

The 15 convolutions are laid out as::

    encoder     2 x conv 5x5 @ 64  (conv 1-2)   -> max-pool 2x2
                2 x conv 3x3 @ 128 (conv 3-4)   -> max-pool 2x2
                2 x conv 3x3 @ 256 (conv 5-6)   -> max-pool 2x2
    bottleneck  2 x conv 3x3 @ 512 (conv 7-8)
    decoder     up-sample x2, concat skip @ 256, 2 x conv 3x3 @ 256 (conv 9-10)
                up-sample x2, concat skip @ 128, 2 x conv 3x3 @ 128 (conv 11-12)
                up-sample x2, concat skip @ 64,  2 x conv 3x3 @ 64  (conv 13-14)
    classifier  conv 1x1 -> 1 (conv 15)

The up-samplings are parameter-free (nearest neighbour), so that the conv count stays exactly 15; the
stage's first conv does the learned part of the "up-convolution".

Three variants of the paper, all with 2 input channels (``build_unet2d``):

* ``v1``: FLAIR and the voxel-wise T1 x FLAIR product (:func:`v1_inputs`); ReLU, default init.
* ``v2``: preprocessed FLAIR and T1; ReLU, default init.
* ``v3``: as v2 with ELU activations and He-normal initialisation.

Shapes: input (N, C, H, W) with H and W divisible by 8 (three 2x poolings); output logits (N, 1, H, W):
the sigmoid is left to the loss (``BCEWithLogitsLoss``) or to inference, for numerical stability.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

VARIANTS = ("v1", "v2", "v3")
NORMS = (None, "batch", "instance")
BASE_FILTERS = (64, 128, 256, 512)
DIVISOR = 8  # three 2x poolings


def v1_inputs(flair: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    """Input of variant v1: channels (FLAIR, T1 * FLAIR).

    ``flair`` and ``t1``: (N, H, W) or (N, 1, H, W), same shape; returns (N, 2, H, W).
    """
    if flair.shape != t1.shape:
        raise ValueError(f"FLAIR {tuple(flair.shape)} and T1 {tuple(t1.shape)} differ in shape")
    if flair.dim() == 4:
        if flair.shape[1] != 1:
            raise ValueError(f"expected one channel, got {tuple(flair.shape)}")
        flair, t1 = flair[:, 0], t1[:, 0]
    elif flair.dim() != 3:
        raise ValueError(f"expected (N, H, W) or (N, 1, H, W), got {tuple(flair.shape)}")
    return torch.stack([flair, t1 * flair], dim=1)


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "elu":
        return nn.ELU(inplace=True)
    raise ValueError(f"activation must be 'relu' or 'elu', not {name!r}")


class ConvPair(nn.Module):
    """Two same-padded convs, each followed by (optional Batch- or InstanceNorm and) the activation.

    (N, in_channels, H, W) -> (N, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, activation: str, norm: str | None):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            # No conv bias when a norm follows: its shift makes the bias redundant.
            layers.append(nn.Conv2d(c_in, out_channels, kernel, padding=kernel // 2, bias=norm is None))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(out_channels))
            elif norm == "instance":
                layers.append(nn.InstanceNorm2d(out_channels, affine=True))
            layers.append(_activation(activation))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UNet2D(nn.Module):
    """The 15-conv 2D U-Net of Viteri et al. 2021.

    Parameters
    ----------
    in_channels : input channels (2: FLAIR + T1 or FLAIR + T1*FLAIR; 1: FLAIR only)
    width : factor on every filter count (1.0: 64..512 as in the paper; 0.25: 16..128)
    activation : "relu" (v1, v2) or "elu" (v3)
    init : "default" (PyTorch's) or "he" (He-normal weights, zero biases; v3)
    norm : None (the paper), "batch" (BatchNorm after every 3x3/5x5 conv; helps small-batch CPU
        training converge) or "instance" (InstanceNorm with affine parameters: statistics of each slice
        itself, also at inference, as nnU-Net; 1.5-2x slower on CPU)
    variant : label of the paper variant this configuration stands for, kept in ``config`` only

    ``forward``: (N, in_channels, H, W), H and W divisible by 8 -> logits (N, 1, H, W).
    ``UNet2D(**model.config)`` rebuilds the architecture for a saved state dict.
    """

    def __init__(
        self,
        in_channels: int = 2,
        width: float = 1.0,
        activation: str = "relu",
        init: str = "default",
        norm: str | None = None,
        variant: str | None = None,
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
        if init not in ("default", "he"):
            raise ValueError(f"init must be 'default' or 'he', not {init!r}")
        _activation(activation)  # validates the name before any layer is built
        self.config = {
            "in_channels": in_channels,
            "width": width,
            "activation": activation,
            "init": init,
            "norm": norm,
            "variant": variant,
        }
        f1, f2, f3, f4 = (max(1, round(f * width)) for f in BASE_FILTERS)
        self.enc1 = ConvPair(in_channels, f1, 5, activation, norm)
        self.enc2 = ConvPair(f1, f2, 3, activation, norm)
        self.enc3 = ConvPair(f2, f3, 3, activation, norm)
        self.bottleneck = ConvPair(f3, f4, 3, activation, norm)
        self.dec3 = ConvPair(f4 + f3, f3, 3, activation, norm)
        self.dec2 = ConvPair(f3 + f2, f2, 3, activation, norm)
        self.dec1 = ConvPair(f2 + f1, f1, 3, activation, norm)
        self.head = nn.Conv2d(f1, 1, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        if init == "he":
            self._he_init()

    def _he_init(self) -> None:
        # He-normal (fan-in, gain sqrt(2)): std sqrt(2 / fan_in), as Keras' he_normal the paper used.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % DIVISOR or width % DIVISOR:
            raise ValueError(
                f"UNet2D needs height and width divisible by {DIVISOR} (three 2x poolings); "
                f"got {height}x{width}: pad or crop the slice first"
            )
        s1 = self.enc1(x)
        s2 = self.enc2(F.max_pool2d(s1, 2))
        s3 = self.enc3(F.max_pool2d(s2, 2))
        x = self.bottleneck(F.max_pool2d(s3, 2))
        x = self.dec3(torch.cat([self.up(x), s3], dim=1))
        x = self.dec2(torch.cat([self.up(x), s2], dim=1))
        x = self.dec1(torch.cat([self.up(x), s1], dim=1))
        return self.head(x)


def build_unet2d(variant: str, width: float = 1.0, in_channels: int = 2, norm: str | None = None) -> UNet2D:
    """The paper's variant ``"v1"``, ``"v2"`` or ``"v3"`` (see the module docstring) as a :class:`UNet2D`.

    v1 expects its input built by :func:`v1_inputs`; v2 and v3 take (FLAIR, T1) stacked as channels.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    if variant == "v3":
        return UNet2D(in_channels, width, activation="elu", init="he", norm=norm, variant=variant)
    return UNet2D(in_channels, width, activation="relu", init="default", norm=norm, variant=variant)
