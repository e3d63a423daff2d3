"""3D deeply supervised U-Net (Wu et al. 2022), with an encoder that transfers from age regression.

Layout for ``levels = 4`` and ``base = 32`` (filters double per level)::

    encoder   level 0: 2 x (conv 3^3 -> norm -> act) @ 32        full scale      -> skip 0
              level 1: max-pool 2, 2 x conv @ 64                1/2             -> skip 1
              level 2: max-pool 2, 2 x conv @ 128               1/4             -> skip 2
              level 3: max-pool 2, 2 x conv @ 256               1/8 (bottleneck)
    decoder   up-conv 2 -> concat skip 2 -> 2 x conv @ 128      1/4   -> aux head (1x1x1)
              up-conv 2 -> concat skip 1 -> 2 x conv @ 64       1/2   -> aux head (1x1x1)
              up-conv 2 -> concat skip 0 -> 2 x conv @ 32       full  -> main head (1x1x1)

Deep supervision: in training mode ``forward`` returns the logits of the ``deep_supervision`` finest
decoder levels as a list, full scale first ([full, 1/2, 1/4, ...]), which
:func:`wmhkit.train.losses.segmentation_loss` weighs with ``loss.deep_supervision`` (decaying towards the
coarse levels) against the average-pooled target. In eval mode only the full-scale logits (N, 1, X, Y, Z)
come back (``return_all=True`` forces the list), which is what :mod:`wmhkit.infer` reads.

Transfer learning: :class:`UNet3DEncoder` is a separate submodule (``model.encoder``), and
:class:`wmhkit.train.pretrain.AgeRegressor` builds the same class from the same options
(:func:`encoder_options`), so an age-pretrained encoder's state dict loads into ``model.encoder`` tensor
for tensor.

Shapes: input (N, C, X, Y, Z) with X, Y, Z divisible by 2**(levels - 1); logits (N, 1, X, Y, Z).
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("batch", "instance")
ACTIVATIONS = ("relu", "leaky_relu")


def _norm(name: str, channels: int) -> nn.Module:
    if name == "batch":
        return nn.BatchNorm3d(channels)
    if name == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    raise ValueError(f"norm must be one of {NORMS}, not {name!r}")


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, not {name!r}")


def level_widths(base: int, width: float, levels: int) -> tuple[int, ...]:
    """Filters per level: ``base * width`` doubled at each level (at least 1)."""
    return tuple(max(1, round(base * width * 2**i)) for i in range(levels))


class ConvBlock(nn.Module):
    """Two (conv 3x3x3 -> norm -> activation); (N, in_channels, ...) -> (N, out_channels, ...)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, activation: str):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            # No conv bias: the norm's shift makes it redundant.
            layers += [nn.Conv3d(c_in, out_channels, 3, padding=1, bias=False), _norm(norm, out_channels),
                       _activation(activation)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UNet3DEncoder(nn.Module):
    """Contracting path: a :class:`ConvBlock` per level, 2x max-pooling between levels.

    Parameters
    ----------
    in_channels : input channels
    base, width, levels : filters ``base * width * 2**level`` for ``level`` in 0..levels-1
    norm : "batch" or "instance"; activation : "relu" or "leaky_relu"

    ``forward``: (N, in_channels, X, Y, Z) -> list of ``levels`` feature maps, level ``l`` being
    (N, widths[l], X / 2**l, Y / 2**l, Z / 2**l); the last one is the bottleneck.
    """

    def __init__(self, in_channels: int = 1, base: int = 32, width: float = 1.0, levels: int = 4,
                 norm: str = "batch", activation: str = "relu"):
        super().__init__()
        self.config = {"in_channels": in_channels, "base": base, "width": width, "levels": levels,
                       "norm": norm, "activation": activation}
        self.widths = level_widths(base, width, levels)
        channels = (in_channels,) + self.widths
        self.blocks = nn.ModuleList(ConvBlock(a, b, norm, activation) for a, b in zip(channels[:-1], channels[1:]))
        self.pool = nn.MaxPool3d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level, block in enumerate(self.blocks):
            x = block(self.pool(x) if level else x)
            features.append(x)
        return features


def encoder_options(model_section: dict, in_channels: int | None = None) -> dict:
    """The :class:`UNet3DEncoder` kwargs a ``[model]`` config section (or a ``UNet3DDS.config``) implies.

    The one place that maps network options to encoder options, so that the age regressor and the
    segmentation network built from one config get tensor-for-tensor identical encoders.
    """
    keys = ("in_channels", "base", "width", "levels", "norm", "activation")
    defaults = UNet3DDS.DEFAULTS
    options = {k: model_section.get(k, defaults[k]) for k in keys}
    if in_channels is not None and "in_channels" not in model_section:
        options["in_channels"] = in_channels
    return options


class UNet3DDS(nn.Module):
    """The deeply supervised 3D U-Net of Wu et al. 2022.

    Parameters
    ----------
    in_channels : input channels (1: FLAIR; 2: FLAIR + T1)
    base : filters of the first level (the paper-sized config: 32)
    width : factor on every filter count, as the 2D U-Net's ``width`` (0.5 with base 32: 16-32-64-128)
    levels : resolution levels including the bottleneck (>= 2)
    norm : "batch" (default; fastest on CPU) or "instance" (batch-size independent)
    activation : "relu" or "leaky_relu"
    deep_supervision : number of outputs in training mode, finest first (1: no deep supervision;
        at most ``levels - 1``, the decoder levels; None: 3, or ``levels - 1`` if fewer)

    ``forward(x, return_all=False)``: (N, in_channels, X, Y, Z) with X, Y, Z divisible by
    ``2**(levels - 1)`` -> in training mode (or with ``return_all``) a list of logits
    [(N, 1, X, Y, Z), (N, 1, X/2, Y/2, Z/2), ...]; in eval mode logits (N, 1, X, Y, Z).
    ``UNet3DDS(**model.config)`` rebuilds the architecture.
    """

    DEFAULTS = {"in_channels": 1, "base": 32, "width": 1.0, "levels": 4, "norm": "batch", "activation": "relu",
                "deep_supervision": None}

    def __init__(self, in_channels: int = 1, base: int = 32, width: float = 1.0, levels: int = 4,
                 norm: str = "batch", activation: str = "relu", deep_supervision: int | None = None):
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be at least 2, not {levels}")
        if deep_supervision is None:
            deep_supervision = min(3, levels - 1)
        if not 1 <= deep_supervision <= levels - 1:
            raise ValueError(f"deep_supervision must be 1..{levels - 1} (decoder levels), not {deep_supervision}")
        self.config = {"in_channels": in_channels, "base": base, "width": width, "levels": levels, "norm": norm,
                       "activation": activation, "deep_supervision": deep_supervision}
        self.divisor = 2 ** (levels - 1)
        self.encoder = UNet3DEncoder(**encoder_options(self.config))
        widths = self.encoder.widths
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in range(levels - 2, -1, -1):  # coarse to fine
            self.up.append(nn.ConvTranspose3d(widths[level + 1], widths[level], 2, stride=2))
            self.decoder.append(ConvBlock(2 * widths[level], widths[level], norm, activation))
        # heads[i] classifies decoder level i (0 = full scale).
        self.heads = nn.ModuleList(nn.Conv3d(widths[level], 1, 1) for level in range(deep_supervision))

    def forward(self, x: torch.Tensor, return_all: bool = False):
        if any(n % self.divisor for n in x.shape[2:]):
            raise ValueError(f"UNet3DDS needs X, Y, Z divisible by {self.divisor}; got {tuple(x.shape[2:])}: "
                             "pad or crop the patch first")
        features = self.encoder(x)
        x = features[-1]
        decoded: dict[int, torch.Tensor] = {}
        for step, (up, block) in enumerate(zip(self.up, self.decoder)):
            level = len(features) - 2 - step
            x = block(torch.cat([up(x), features[level]], dim=1))
            decoded[level] = x
        if not (self.training or return_all):
            return self.heads[0](decoded[0])
        return [head(decoded[level]) for level, head in enumerate(self.heads)]
