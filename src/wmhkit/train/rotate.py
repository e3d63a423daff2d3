"""Right-angle rotations about the y axis: the augmentation of Zeng & Zheng 2017 (two-stage FCN).

The paper augments its 3D training patches by 90, 180 and 270 degree rotations about the y axis and by
horizontal (left-right) flips. The flips are the engine's ``augment.flip``; this module adds the
rotations as ``augment.rot90_y = p`` (probability of rotating a patch). They are exact voxel permutations
(no interpolation), applied to image and label together.

Axes: patches are in canonical RAS voxel order (X left-right, Y posterior-anterior, Z inferior-superior),
so a rotation about y turns the X-Z (coronal) plane. A 90 or 270 degree turn swaps the X and Z sizes:
patches with px == pz draw 90, 180 or 270 degrees; others only 180 degrees, which keeps every shape.
"""

from __future__ import annotations

import numpy as np
import torch

# Spatial axes (counted from the end) that a rotation about y turns: X and Z of (..., X, Y, Z).
PLANE = (-3, -1)


def rot90_y(volume, k: int):
    """``volume`` (..., X, Y, Z) numpy array or tensor turned by ``k`` x 90 degrees about the y axis."""
    if isinstance(volume, torch.Tensor):
        return torch.rot90(volume, k, dims=PLANE)
    volume = np.asarray(volume)
    return np.rot90(volume, k, axes=(volume.ndim + PLANE[0], volume.ndim + PLANE[1]))


def allowed_turns(shape) -> tuple[int, ...]:
    """Quarter turns that keep a (..., X, Y, Z) shape: 1-3 when X == Z, else only 2 (180 degrees)."""
    return (1, 2, 3) if shape[PLANE[0]] == shape[PLANE[1]] else (2,)


class RandomRot90Y:
    """Rotate an (image, label) patch pair about the y axis with probability ``p``, after ``base``.

    Parameters
    ----------
    p : probability of a rotation; the angle is drawn uniformly from :func:`allowed_turns`
    base : an augmentation called first with the same arguments (e.g. the engine's TorchIO one), or None

    ``aug(image, label, seed=..., brain=..., background=...) -> (image, label)`` like
    :class:`wmhkit.train.augment.Augmentation`: image (C, X, Y, Z), label (X, Y, Z) or (1, X, Y, Z), numpy
    or torch, returned in the same types and shapes. The same ``seed`` gives the same rotation.
    """

    def __init__(self, p: float, base=None):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"probability of 'rot90_y' must be in [0, 1], got {p}")
        self.p = float(p)
        self.base = base

    def __repr__(self) -> str:
        return f"RandomRot90Y(p={self.p}, base={self.base!r})"

    def __call__(self, image, label, *, seed: int | None = None, brain=None, background=None):
        if self.base is not None:
            image, label = self.base(image, label, seed=seed, brain=brain, background=background)
        # Its own stream of the item's seed: independent of the draws of ``base``.
        rng = np.random.default_rng(None if seed is None else [int(seed) & 0xFFFFFFFF, 90])
        if self.p == 0.0 or rng.random() >= self.p:
            return image, label
        turns = allowed_turns(image.shape)
        k = int(turns[rng.integers(len(turns))])
        image, label = rot90_y(image, k), rot90_y(label, k)
        if isinstance(image, np.ndarray):
            # np.rot90 returns views with negative strides, which torch.from_numpy refuses.
            image, label = np.ascontiguousarray(image), np.ascontiguousarray(label)
        else:
            image, label = image.contiguous(), label.contiguous()
        return image, label
