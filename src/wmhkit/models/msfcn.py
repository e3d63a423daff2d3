"""Two-stage multi-scale FCN (Zeng & Zheng 2017).

Stage 1 (FCN-1, :class:`BrainFCN`, used by :mod:`wmhkit.brain`) extracts the brain from the whole head;
stage 2 (FCN-2, :class:`MSFCN`: one encoder per input channel, FLAIR and T1) segments WMH inside it.
:func:`wmhkit.two_stage.segment_two_stage` runs both in one call. Both are 3D encoder-decoders with
long skips (encoder -> decoder, concatenated), short skips (residual blocks) and deep supervision: two
down-scaled auxiliary classifiers (1/4 and 1/2 scale) next to the full-scale one.

Shapes: inputs (N, C, X, Y, Z) with X, Y, Z divisible by 2**(levels - 1); outputs are logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a (1x1x1-projected) identity: the paper's short skip."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Sequential(nn.Conv3d(in_channels, out_channels, 1, bias=False), nn.BatchNorm3d(out_channels))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.skip(x), inplace=True)


class Encoder(nn.Module):
    """Residual blocks with 2x max-pooling between them; returns the features of every level."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]):
        super().__init__()
        channels = (in_channels,) + tuple(widths)
        self.blocks = nn.ModuleList(ResidualBlock(a, b) for a, b in zip(channels[:-1], channels[1:]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level, block in enumerate(self.blocks):
            if level:
                x = F.max_pool3d(x, 2)
            x = block(x)
            features.append(x)
        return features


class Decoder(nn.Module):
    """Upsampling path with long skips and a classifier at full, 1/2 and 1/4 scale (deep supervision)."""

    def __init__(self, widths: tuple[int, ...], out_channels: int, skip_widths: tuple[int, ...] | None = None):
        super().__init__()
        skip_widths = tuple(widths) if skip_widths is None else tuple(skip_widths)
        self.up = nn.ModuleList()
        self.blocks = nn.ModuleList()
        below = skip_widths[-1]
        for level in range(len(widths) - 2, -1, -1):
            self.up.append(nn.ConvTranspose3d(below, widths[level], 2, stride=2))
            self.blocks.append(ResidualBlock(widths[level] + skip_widths[level], widths[level]))
            below = widths[level]
        # Heads on the three finest decoder levels: full scale first.
        self.heads = nn.ModuleList(nn.Conv3d(widths[level], out_channels, 1) for level in range(3))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        x = features[-1]
        decoded = {}
        for step, (up, block) in enumerate(zip(self.up, self.blocks)):
            level = len(features) - 2 - step
            x = block(torch.cat([up(x), features[level]], dim=1))
            decoded[level] = x
        return [head(decoded[level]) for level, head in enumerate(self.heads)]


class BrainFCN(nn.Module):
    """FCN-1: brain extraction from one image of any contrast.

    Parameters
    ----------
    in_channels : image channels (1: the scan itself)
    width : channels of the first level, doubled at each of ``levels`` levels

    ``forward`` returns a list of logits [full, 1/2, 1/4 scale], each (N, 1, ...); in eval mode only the
    full-scale logits (N, 1, X, Y, Z).

    ``mask_threshold`` (probability cut-off) and ``mask_thresholds`` ({acquisition geometry: cut-off})
    are calibration data, not weights: a model file records them and its loader sets them.
    """

    def __init__(self, in_channels: int = 1, width: int = 8, levels: int = 4):
        super().__init__()
        if levels < 3:
            raise ValueError("deep supervision at three scales needs at least 3 levels")
        widths = tuple(width * 2**i for i in range(levels))
        self.config = {"in_channels": in_channels, "width": width, "levels": levels}
        self.divisor = 2 ** (levels - 1)
        self.mask_threshold = 0.5
        self.mask_thresholds: dict[str, float] = {}
        self.encoder = Encoder(in_channels, widths)
        self.decoder = Decoder(widths, 1)

    def forward(self, x: torch.Tensor):
        outputs = self.decoder(self.encoder(x))
        return outputs if self.training else outputs[0]


class MSFCN(nn.Module):
    """FCN-2: WMH segmentation inside the brain, one encoder per input channel.

    Each channel (FLAIR, T1, ...) has its own contracting path (:class:`Encoder`: residual blocks, the
    short skips); their features are concatenated level by level, so that the expanding path
    (:class:`Decoder`) starts from the concatenated bottlenecks and its long skips carry the features of
    every encoder. Deep supervision: the main classifier at full scale and two auxiliary ones at 1/2 and
    1/4 scale.

    Parameters
    ----------
    in_channels : 2 (FLAIR + T1: two encoders, the paper) or 1 (FLAIR only: one encoder); any C >= 1
        gives C encoders
    width : channels of the first level, doubled at each of ``levels`` levels (per encoder)
    levels : resolution levels (>= 4: three supervised decoder scales above the bottleneck)
    decoder_width : channels of the expanding path's finest level, doubled per level; None: ``width``,
        as narrow as one encoder (the only layout before session 24). ``width * in_channels`` gives the
        expanding path the width of the fused features it starts from.

    ``forward``: (N, in_channels, X, Y, Z), X, Y, Z divisible by ``2**(levels - 1)`` -> in training mode a
    list of logits [(N, 1, X, Y, Z), (N, 1, X/2, ...), (N, 1, X/4, ...)]; in eval mode the first only.
    ``MSFCN(**model.config)`` rebuilds the architecture.
    """

    def __init__(self, in_channels: int = 2, width: int = 16, levels: int = 4, decoder_width: int | None = None):
        super().__init__()
        if levels < 4:
            # Three supervised scales on decoder levels: full, 1/2 and 1/4, below which the bottleneck sits.
            raise ValueError("FCN-2's deep supervision at three decoder scales needs at least 4 levels")
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, not {in_channels}")
        decoder_width = width if decoder_width is None else decoder_width
        if decoder_width < 1:
            raise ValueError(f"decoder_width must be at least 1, not {decoder_width}")
        widths = tuple(width * 2**i for i in range(levels))
        self.config = {"in_channels": in_channels, "width": width, "levels": levels, "decoder_width": decoder_width}
        self.divisor = 2 ** (levels - 1)
        # Separate paths: FLAIR and T1 look different enough that shared early filters would be a
        # compromise; the paper fuses them only where the expanding path starts.
        self.encoders = nn.ModuleList(Encoder(1, widths) for _ in range(in_channels))
        self.decoder = Decoder(tuple(decoder_width * 2**i for i in range(levels)), 1,
                               skip_widths=tuple(w * in_channels for w in widths))

    def forward(self, x: torch.Tensor, return_all: bool = False):
        if x.shape[1] != len(self.encoders):
            raise ValueError(f"MSFCN has {len(self.encoders)} encoder(s) but got {x.shape[1]} channel(s)")
        if any(n % self.divisor for n in x.shape[2:]):
            raise ValueError(f"MSFCN needs X, Y, Z divisible by {self.divisor}; got {tuple(x.shape[2:])}")
        per_channel = [encoder(x[:, c:c + 1]) for c, encoder in enumerate(self.encoders)]
        features = [torch.cat(level, dim=1) for level in zip(*per_channel)]
        outputs = self.decoder(features)
        return outputs if (self.training or return_all) else outputs[0]
