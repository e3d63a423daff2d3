"""Two-stage multi-scale FCN (Zeng & Zheng 2017).

Stage 1 (FCN-1, :class:`BrainFCN`) extracts the brain from the whole head; stage 2 (FCN-2) segments WMH
inside it. Both are 3D encoder-decoders with long skips (encoder -> decoder, concatenated), short skips
(residual blocks) and deep supervision: two down-scaled auxiliary classifiers (1/4 and 1/2 scale) next
to the full-scale one.

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
    """

    def __init__(self, in_channels: int = 1, width: int = 8, levels: int = 4):
        super().__init__()
        if levels < 3:
            raise ValueError("deep supervision at three scales needs at least 3 levels")
        widths = tuple(width * 2**i for i in range(levels))
        self.config = {"in_channels": in_channels, "width": width, "levels": levels}
        self.divisor = 2 ** (levels - 1)
        self.encoder = Encoder(in_channels, widths)
        self.decoder = Decoder(widths, 1)

    def forward(self, x: torch.Tensor):
        outputs = self.decoder(self.encoder(x))
        return outputs if self.training else outputs[0]
