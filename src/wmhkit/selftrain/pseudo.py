"""Pseudo-labels without annotation (the first stage of DeepWMH, Liu et al. 2024): FLAIR voxels that are
abnormally bright for where they lie in normal-appearing white matter.

The normal-appearing reference (our choice; docs/selftrain.md explains it):

* **Where white matter is**: a white-matter segmenter trained only on the training-data engine's
  synthetic brains (``wm-sidefcn-flair``, shipped; lesions count as white matter there, so they stay
  inside its mask). It follows each scan's own anatomy, which an affine atlas fit did not: the cortex
  and the septum pellucidum, the brightest normal tissue on FLAIR, then fell into the atlas's white
  matter and became false pseudo-lesions.
* **What normal white matter looks like there**: the scan's own white matter, smoothed over
  ``reference_mm`` by normalised convolution (the local mean of white-matter voxels, lesions excluded
  in a second pass) and the local spread of the residual. Lesions are a minority of the white matter,
  so the reference barely moves with them; bias field, slice-to-slice drift and the normal
  periventricular rise are all slower than that and drop out.

A voxel's abnormality is its z-score against that reference. Pseudo-lesions are hysteresis components
(seeds above ``high``, grown through voxels above ``low``) inside the white matter (closed, holes
filled: see :func:`lesion_search_region`), seeded only away from grey-matter-bright tissue (cortex,
deep grey matter, septum: partial volume there looks like lesion), from CSF borders (ependymal rims)
and from sulcal CSF, at least ``min_volume_ml`` large, bright enough on average and mostly inside the
segmenter's white matter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from wmhkit.metrics import label_lesions

WM_MODEL = "wm-sidefcn-flair"


@dataclass
class PseudoLabels:
    """mask: uint8 (X, Y, Z) pseudo-lesions; score: float32 z against normal white matter (0 outside
    it); white_matter: bool (X, Y, Z) the white-matter mask used; seed_region: where seeds may lie."""

    mask: np.ndarray
    score: np.ndarray
    white_matter: np.ndarray
    seed_region: np.ndarray


def white_matter_mask(flair: np.ndarray, affine: np.ndarray, brain: np.ndarray, *, model=None,
                      device: str = "cpu") -> np.ndarray:
    """White matter (bool, FLAIR's shape; lesions included) by the shipped synthetic-trained segmenter.

    flair, brain : (X, Y, Z) on the grid of ``affine`` (mm); ``model``: a :class:`wmhkit.segment.WmhModel`
    (default the shipped ``wm-sidefcn-flair``).
    """
    from wmhkit.segment import load_model, shipped_model_path, wmh_probability

    model = model or load_model(shipped_model_path(WM_MODEL))
    return wmh_probability(model, flair, affine, brain, device=device) >= 0.5


def abnormality_score(flair: np.ndarray, white_matter: np.ndarray, spacing_mm, *, region: np.ndarray | None = None,
                      reference_mm: float = 8.0, exclude_z: float = 2.0) -> np.ndarray:
    """z-score (float32, flair's shape) of FLAIR against the local normal white matter; 0 outside
    ``region`` (default: the white matter).

    flair, white_matter, region : (X, Y, Z); spacing_mm : voxel size (3,), mm. The reference is a
    Gaussian-weighted mean of white-matter voxels (sigma ``reference_mm``), recomputed without the
    voxels above ``exclude_z`` of the first pass; the spread is 1.4826 x the median absolute residual of
    the remaining white matter (one number per scan: a local spread would grow wherever grey matter
    leaks into the mask, and hide the lesions there). Real white matter varies by about 5 % over 1-2 cm
    (docs/synth.md, twenty-ninth session): at 8 mm the reference follows more of that than at 12 mm, and
    the labeled real cases' pseudo-labels scored Dice 0.498 against 0.488 (lesion F1 0.37 against 0.33).
    """
    flair = np.asarray(flair, np.float32)
    white = np.asarray(white_matter) > 0
    region = white if region is None else np.asarray(region) > 0
    if not white.any():
        return np.zeros(flair.shape, np.float32)
    sigma = [reference_mm / float(s) for s in spacing_mm]
    normal = white
    for _ in range(2):
        expected = _normalised_blur(flair, normal.astype(np.float32), sigma)
        residual = flair - expected
        spread = 1.4826 * float(np.median(np.abs(residual[normal])))
        z = residual / max(spread, 1e-6 * max(float(np.abs(expected[normal]).mean()), 1.0))
        normal = white & (z < exclude_z)
    return np.where(region, z, 0.0).astype(np.float32)


def lesion_search_region(white: np.ndarray, dark: np.ndarray, spacing_mm, close_mm: float = 3.0) -> np.ndarray:
    """Where pseudo-lesions may lie: the white matter, closed by ``close_mm`` and with the holes of each
    axial slice filled (white matter plus ``dark`` CSF), minus that CSF. Lesions a white-matter
    segmenter leaves out (they are brighter than the tissue it learned) are holes in its mask, or
    pockets between it and the ventricles; the cortex outside it is not."""
    white = np.asarray(white) > 0
    dark = np.asarray(dark) > 0
    radius = [int(close_mm // float(s)) for s in spacing_mm]
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    structure = sum((g * float(s)) ** 2 for g, s in zip(grid, spacing_mm)) <= close_mm ** 2
    closed = ndimage.binary_closing(white, structure=structure) | white
    filled = np.stack([ndimage.binary_fill_holes(closed[..., k] | dark[..., k]) for k in range(white.shape[2])], -1)
    return filled & ~dark


def pseudo_labels(
    flair: np.ndarray,
    affine: np.ndarray,
    brain: np.ndarray,
    *,
    white_matter: np.ndarray | None = None,
    high: float = 5.0,
    low: float = 2.5,
    min_volume_ml: float = 0.03,
    grey_margin_mm: float = 2.0,
    csf_margin_mm: float = 1.0,
    close_mm: float = 1.5,
    min_mean_z: float = 3.6,
    min_white_share: float = 0.5,
    bright_white_share: float = 0.3,
    bright_mean_z: float = 4.0,
    sulcal_margin_mm: float = 3.0,
    ventricle_depth_mm: float = 15.0,
    device: str = "cpu",
) -> PseudoLabels:
    """Pseudo-lesion mask of one FLAIR (see the module docstring).

    Parameters
    ----------
    flair, brain : (X, Y, Z) on the grid of ``affine`` (mm), skull on or off (``brain`` selects);
        bias-corrected or not (the local reference absorbs a smooth bias)
    white_matter : (X, Y, Z) bool to use instead of the shipped segmenter (e.g. a synthetic case's truth)
    high, low : hysteresis thresholds on the z-score (seeds, growth)
    min_volume_ml : smallest pseudo-lesion kept
    grey_margin_mm, csf_margin_mm : seeds lie at least this far from grey-matter-bright and CSF-dark
        non-white-matter brain tissue (growth may reach closer, but not into it)
    sulcal_margin_mm : seeds lie at least this far from sulcal CSF (CSF-dark components that are not
        mostly deeper than ``ventricle_depth_mm`` below the brain's surface), i.e. out of the cortex
    min_mean_z, min_white_share : a pseudo-lesion's mean z-score, and the share of it inside the
        segmenter's white matter, are at least these
    bright_white_share, bright_mean_z : ... or, for a pseudo-lesion of mean z-score at least
        ``bright_mean_z``, that share is at least ``bright_white_share``
    close_mm : closing radius of the white matter in :func:`lesion_search_region` (wider bridges sulci
        and lets the cortex in)
    """
    flair = np.asarray(flair, np.float32)
    brain = np.asarray(brain) > 0
    spacing = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    if white_matter is None:
        white_matter = white_matter_mask(flair, affine, brain, device=device)
    white = (np.asarray(white_matter) > 0) & brain
    empty = np.zeros(flair.shape, np.uint8)
    if not white.any():
        return PseudoLabels(empty, np.zeros(flair.shape, np.float32), white, white)
    normal_level = float(np.median(flair[white]))
    csf_like = brain & ~white & (flair < 0.6 * normal_level)
    search = lesion_search_region(white, csf_like, spacing, close_mm) & brain
    score = abnormality_score(flair, white, spacing, region=search)
    grey_like = brain & ~search & (flair > 0.9 * normal_level)
    # Sulcal CSF lies between cortical banks: bright voxels next to it are cortex, whatever the white-
    # matter mask says. Ventricles are the CSF deep inside the brain, where lesions do touch the CSF.
    sulcal = csf_like & ~_deep_components(csf_like, brain, spacing, ventricle_depth_mm)
    seed_region = (search & _farther_than(grey_like, grey_margin_mm, spacing)
                   & _farther_than(csf_like, csf_margin_mm, spacing) & _farther_than(sulcal, sulcal_margin_mm, spacing))
    near = min(grey_margin_mm, float(spacing.min()))
    grow = (score > low) & search & _farther_than(grey_like, near, spacing) & _farther_than(sulcal, near, spacing)
    labels, count = label_lesions(grow)
    if count == 0:
        return PseudoLabels(empty, score, white, seed_region)
    seeded = np.zeros(count + 1, bool)
    seeded[np.unique(labels[(score > high) & seed_region & grow])] = True
    big = component_volumes_ml(labels, count, affine) >= min_volume_ml
    # Component-level checks: cortex that reaches the growth threshold does so barely (mean z ~3.3 on
    # synthetic brains, lesions 3.6-6); a component mostly outside the segmenter's white matter came in
    # through the hole filling (cerebellar cortex, septum). The segmenter leaves bright lesions out of
    # its mask (they are brighter than the tissue it learned), so on real scans a lesion's own voxels
    # are often under half white: 0.40-0.45 for patient 26's three largest (labeled cases, mean z
    # 4.0-4.6), where the false pseudo-lesions of the labeled and synthetic development cases that
    # are 0.3-0.5 white stay under a mean z of 3.9 but one (4.02).
    index = np.arange(count + 1)
    mean_z = np.r_[0.0, ndimage.mean(score, labels, index[1:])]
    in_white = np.r_[0.0, ndimage.mean(white, labels, index[1:])]
    placed = (in_white >= min_white_share) | ((in_white >= bright_white_share) & (mean_z >= bright_mean_z))
    keep = seeded & big & (mean_z >= min_mean_z) & placed
    keep[0] = False
    return PseudoLabels(keep[labels].astype(np.uint8), score, white, seed_region)


def label_scan(flair: np.ndarray, affine: np.ndarray, *, device: str = "cpu"
               ) -> tuple[np.ndarray, np.ndarray, PseudoLabels]:
    """Brain mask, N4 inside it and pseudo-labels of one raw FLAIR, as ``wmhkit selftrain`` prepares it.

    flair : (X, Y, Z) on the grid of ``affine``, skull on or off. Returns (bias-corrected FLAIR float32,
    brain bool, :class:`PseudoLabels`). Raises ValueError when no brain is found.
    """
    from wmhkit.brain import extract_brain
    from wmhkit.preprocess import n4_bias_correct

    flair = np.asarray(flair, np.float32)
    brain = extract_brain(flair, affine).mask > 0
    if not brain.any():
        raise ValueError("no brain found in this image (is it a head scan?)")
    corrected = n4_bias_correct(flair, affine, brain)[0]
    return corrected, brain, pseudo_labels(corrected, affine, brain, device=device)


def component_volumes_ml(labels: np.ndarray, count: int, affine: np.ndarray) -> np.ndarray:
    """Volume (ml) of each labelled component, index 0 = background: (count + 1,) float."""
    from wmhkit.io import voxel_volume_ml

    return np.bincount(labels.ravel(), minlength=count + 1) * voxel_volume_ml(affine)


def _normalised_blur(values: np.ndarray, weight: np.ndarray, sigma) -> np.ndarray:
    """Gaussian-weighted mean of ``values`` over voxels with ``weight`` (normalised convolution)."""
    numerator = ndimage.gaussian_filter(values * weight, sigma, mode="nearest", truncate=3.0)
    denominator = ndimage.gaussian_filter(weight, sigma, mode="nearest", truncate=3.0)
    return numerator / np.maximum(denominator, 1e-3)


def _deep_components(mask: np.ndarray, brain: np.ndarray, spacing, depth_mm: float) -> np.ndarray:
    """Connected components of ``mask`` with most voxels deeper than ``depth_mm`` inside ``brain``."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, bool)
    deep = ndimage.distance_transform_edt(brain, sampling=spacing) > depth_mm
    share = ndimage.mean(deep, labels, np.arange(1, count + 1))
    keep = np.r_[False, np.asarray(share) > 0.5]
    return keep[labels]


def _farther_than(mask: np.ndarray, distance_mm: float, spacing) -> np.ndarray:
    """Voxels more than ``distance_mm`` from every voxel of ``mask`` (all voxels when it is empty)."""
    if not mask.any() or distance_mm <= 0:
        return np.ones(mask.shape, bool)
    return ndimage.distance_transform_edt(~mask, sampling=spacing) > distance_mm
