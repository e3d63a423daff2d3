"""A plain FLAIR-threshold segmentation: the baseline every learned model must beat.

Voxels brighter than the brain's robust centre by ``k`` robust standard deviations are called lesion,
and components smaller than ``min_voxels`` are dropped as noise.
"""

from __future__ import annotations

import numpy as np

from wmhkit.metrics import label_lesions


def robust_z(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(image - median) / (1.4826 * MAD) with statistics taken inside ``mask``; float32, image's shape."""
    values = image[mask].astype(np.float64)
    median = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - median))
    if spread == 0:
        spread = values.std() or 1.0
    return ((image - median) / spread).astype(np.float32)


def flair_threshold(
    flair: np.ndarray,
    brain_mask: np.ndarray | None = None,
    *,
    k: float = 2.5,
    min_voxels: int = 3,
) -> np.ndarray:
    """Binary lesion mask (uint8, flair's shape) of FLAIR voxels above median + k robust SDs.

    ``brain_mask`` defaults to the non-zero voxels (a skull-stripped input).
    """
    brain = flair > 0 if brain_mask is None else np.asarray(brain_mask, dtype=bool)
    lesion = (robust_z(flair, brain) > k) & brain
    labels, _ = label_lesions(lesion)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels].astype(np.uint8)
