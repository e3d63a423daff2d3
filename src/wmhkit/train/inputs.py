"""Network input builders: whole canonical volumes -> channel stacks.

Every builder takes skull-stripped or not FLAIR/T1 volumes (X, Y, Z) on one canonical (RAS) grid plus
the brain mask, and returns float32 (C, X, Y, Z). Everything outside the brain is removed first, so each
kind has one constant value there (its "background": 0 for the z-scored kinds, -127 for the colour
kinds), which the samplers use when they pad and the augmentation keeps untouched.

Kinds
-----
``flair``           FLAIR z-scored inside the brain ("Gaussian normalisation"); 1 channel.
``flair_t1``        FLAIR and T1, each z-scored inside the brain (Viteri et al., v2 / v3); 2 channels.
``flair_product``   FLAIR z-scored, and the product of FLAIR and T1 each mapped to [0, 1] over their 1st
                    to 99th brain percentiles, then z-scored inside the brain (Viteri et al., v1); 2 channels.
                    Scaling to [0, 1] first makes the product independent of the scanner's units and keeps
                    its sign meaningful (a product of two z-scores is positive for dark-dark voxels too).
``flair_t1_morph``  ``flair_t1`` plus a "morphological normalisation" channel. Viteri et al. do not define
                    it precisely; OUR INTERPRETATION is the white top-hat of the z-scored FLAIR with a disk
                    of ~15 mm diameter, per axial slice: FLAIR minus its grey-level opening, which removes
                    the slowly varying background (bias, grey/white contrast over large areas) and keeps
                    bright structures narrower than the disk (lesions, also cortex ribbons and vessels).
                    In units of the brain's FLAIR standard deviation, >= 0, 0 outside the brain; 3 channels.
``colour``          Xu et al.: FLAIR, T1 and the white area top-hat of FLAIR (``area_tophat(flair, 25,
                    per_slice=True)``), each requantised to 8 bits over its brain's 0.5-99.5 percentiles
                    and centred by -127 (:func:`wmhkit.models.sidefcn.colour_slices`); 3 channels.
``colour_t1``       the same with T1 as third channel (the ablation without top-hat); 3 channels.
``colour_flair``    ``colour`` for users without a T1: FLAIR takes the T1 slot too (FLAIR, FLAIR, top-hat), so
                    the network and its 3-channel layout stay Xu et al.'s; 3 channels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from wmhkit.preprocess import area_tophat, percentile_scale, zscore

KINDS = ("flair", "flair_t1", "flair_product", "flair_t1_morph", "colour", "colour_t1", "colour_flair")
CHANNELS = {"flair": 1, "flair_t1": 2, "flair_product": 2, "flair_t1_morph": 3, "colour": 3, "colour_t1": 3,
            "colour_flair": 3}
NEEDS_T1 = frozenset(k for k in KINDS if k not in ("flair", "colour_flair"))
# Diameter (mm) of the disk of the "morphological normalisation" opening.
MORPH_DISK_MM = 15.0
# Pixels (area) of the colour kinds' area top-hat, as Xu et al.
TOPHAT_AREA = 25


def input_channels(kind: str) -> int:
    """Number of channels that ``build_inputs(kind, ...)`` returns."""
    if kind not in CHANNELS:
        raise ValueError(f"unknown input kind {kind!r}; expected one of {KINDS}")
    return CHANNELS[kind]


def build_inputs(
    kind: str,
    flair: np.ndarray,
    t1: np.ndarray | None,
    brain: np.ndarray,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Channels of input ``kind`` (see the module docstring) for one canonical volume.

    Parameters
    ----------
    kind : one of :data:`KINDS`
    flair, t1 : (X, Y, Z) intensities in any units (t1 may be None for ``kind="flair"``)
    brain : (X, Y, Z) brain mask (non-zero = brain); must not be empty
    spacing : voxel size (mm); only ``flair_t1_morph`` uses it (the disk's size in pixels)

    Returns float32 (C, X, Y, Z), C = :func:`input_channels`.
    Raises ValueError for an unknown kind, a kind that needs T1 without one, mismatched shapes or an
    empty brain mask.
    """
    input_channels(kind)
    if kind in NEEDS_T1 and t1 is None:
        raise ValueError(f"input kind {kind!r} needs a T1 image but this case has none; "
                         "use kind='flair' or 'colour_flair'")
    if kind not in NEEDS_T1:
        t1 = None
    brain = np.asarray(brain) > 0
    flair = np.asarray(flair, dtype=np.float32)
    shapes = {flair.shape, brain.shape} | ({np.shape(t1)} if t1 is not None else set())
    if len(shapes) != 1 or flair.ndim != 3:
        raise ValueError(f"flair, t1 and brain must be (X, Y, Z) volumes of one shape, got {sorted(shapes)}")
    if not brain.any():
        raise ValueError("the brain mask is empty")
    # Skull stripping first: what lies outside the brain must never reach a network.
    flair = np.where(brain, flair, 0).astype(np.float32)
    if t1 is not None:
        t1 = np.where(brain, np.asarray(t1, dtype=np.float32), 0).astype(np.float32)

    if kind == "flair":
        out = [zscore(flair, brain)]
    elif kind == "flair_t1":
        out = [zscore(flair, brain), zscore(t1, brain)]
    elif kind == "flair_product":
        product = percentile_scale(flair, brain) * percentile_scale(t1, brain)
        out = [zscore(flair, brain), zscore(product, brain)]
    elif kind == "flair_t1_morph":
        zf = zscore(flair, brain)
        out = [zf, zscore(t1, brain), morphological_tophat(zf, brain, spacing[:2])]
    else:
        from wmhkit.models.sidefcn import colour_slices

        third = "t1" if kind == "colour_t1" else "tophat"
        tophat = area_tophat(flair, TOPHAT_AREA, per_slice=True) if third == "tophat" else None
        second = flair if kind == "colour_flair" else t1
        stack = colour_slices(flair, second, tophat, third=third, mask=brain)  # (Z, 3, X, Y)
        # Outside the brain every channel takes its floor value (-127): the raw 0 lies at or below each
        # channel's 0.5th brain percentile for skull-stripped inputs, but force it to be exact.
        out = list(np.where(brain, np.moveaxis(stack, 0, 3), -127.0).astype(np.float32))
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def morphological_tophat(
    image: np.ndarray, brain: np.ndarray, spacing_xy: tuple[float, float] = (1.0, 1.0),
    diameter_mm: float = MORPH_DISK_MM,
) -> np.ndarray:
    """White top-hat per axial slice with a disk of ``diameter_mm``: image minus its grey opening.

    image, brain : (X, Y, Z); spacing_xy : in-plane voxel size (mm). Returns float32 (X, Y, Z), >= 0,
    0 outside the brain.

    The disk is approximated by an octagon (alternating 3x3 cross and 3x3 square min/max filters, r times
    each way): exact disks cost O(r^2) per voxel and take tens of seconds on a 1 mm volume, this takes a
    second, and an opening's result hardly depends on the exact shape of a structuring element this big.
    """
    image = np.asarray(image, dtype=np.float32)
    brain = np.asarray(brain) > 0
    radius = np.maximum(1, np.round(diameter_mm / 2 / np.asarray(spacing_xy, dtype=float))).astype(int)
    steps = int(radius.max())

    def step(volume, i, extreme_1d):
        # Axes with a smaller radius (anisotropic pixels) stop growing early.
        axes = [a for a in range(2) if i < radius[a]]
        if i % 2 and len(axes) == 2:  # 3x3 square: separable
            return extreme_1d(extreme_1d(volume, 3, axis=0, mode="nearest"), 3, axis=1, mode="nearest")
        # 3x3 cross = union of two 3-pixel lines: erosion (dilation) is the min (max) of the two.
        lines = [extreme_1d(volume, 3, axis=a, mode="nearest") for a in axes]
        return lines[0] if len(lines) == 1 else (np.minimum if extreme_1d is ndimage.minimum_filter1d
                                                 else np.maximum)(*lines)

    opened = image
    for i in range(steps):
        opened = step(opened, i, ndimage.minimum_filter1d)
    for i in reversed(range(steps)):
        opened = step(opened, i, ndimage.maximum_filter1d)
    return np.where(brain, np.maximum(image - opened, 0), 0).astype(np.float32)


def background_values(channels: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Per-channel value outside the brain, shape (C,) float32 (0 where the mask fills the volume).

    The samplers pad with it and the augmentation leaves it untouched, so that training inputs look like
    inference inputs outside the brain.
    """
    outside = ~(np.asarray(brain) > 0)
    if not outside.any():
        return np.zeros(len(channels), np.float32)
    # build_inputs makes the outside constant per channel: one voxel tells it.
    index = np.unravel_index(int(np.argmax(outside)), outside.shape)
    return np.array([float(c[index]) for c in channels], np.float32)
