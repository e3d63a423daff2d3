"""The two-stage pipeline of Zeng & Zheng 2017 in one call: FCN-1 (brain) -> mask -> FCN-2 (WMH).

Stage 1 is :func:`wmhkit.brain.extract_brain` (FCN-1, :class:`wmhkit.models.msfcn.BrainFCN`, on the
FLAIR image; an already skull-stripped FLAIR keeps its non-zero region). Stage 2 builds the network
inputs inside that mask (:func:`wmhkit.train.inputs.build_inputs`, e.g. FLAIR and T1 z-scored in the
brain), crops the canonical volume to the brain's bounding box plus a margin, runs FCN-2
(:class:`wmhkit.models.msfcn.MSFCN`, or any 3D network) by sliding window
(:func:`wmhkit.infer.predict_volume_3d`), and returns the probability on the input grid, zero outside the
stage-1 mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wmhkit.brain import BrainResult, extract_brain
from wmhkit.preprocess import from_canonical, mask_bounding_box, to_canonical


@dataclass
class TwoStageResult:
    """probability: float32 (X, Y, Z) WMH probability on the input grid, 0 outside ``brain``;
    brain: uint8 (X, Y, Z) stage-1 mask; stage1: the full :class:`wmhkit.brain.BrainResult`."""

    probability: np.ndarray
    brain: np.ndarray
    stage1: BrainResult


def segment_two_stage(
    model: torch.nn.Module | str | Path,
    flair: np.ndarray,
    affine: np.ndarray,
    t1: np.ndarray | None = None,
    *,
    kind: str | None = None,
    patch: tuple[int, int, int] | None = None,
    spacing_mm: float | None = None,
    brain_model: torch.nn.Module | None = None,
    brain_threshold: float | None = None,
    detect_stripped: bool = True,
    margin_mm: float = 8.0,
    overlap: float = 0.5,
    flip_tta: bool = False,
    device: str | torch.device = "cpu",
    bf16: bool | None = None,
) -> TwoStageResult:
    """WMH probability of a head (or brain) scan by FCN-1 -> brain mask -> FCN-2.

    Parameters
    ----------
    model : FCN-2 (a 3D network on canonical patches), or the path of a model exported by
        ``wmhkit train``, whose recorded ``inputs``, ``patch`` and ``spacing_mm`` are then the defaults
    flair : (X, Y, Z) FLAIR on its native grid, skull on or off
    affine : its 4x4 voxel-to-world affine (mm); ``t1`` (optional) must share grid and affine
    kind : input kind (:mod:`wmhkit.train.inputs`); default from the model file, else ``"flair_t1"`` when
        a T1 is given and the network takes 2 channels, else ``"flair"``
    patch : sliding-window patch (voxels of the working grid); default the model file's or (96, 96, 96)
    spacing_mm : isotropic working grid of FCN-2 (None: the canonical grid itself)
    brain_model, brain_threshold, detect_stripped : stage 1, as :func:`wmhkit.brain.extract_brain`
    margin_mm : context kept around the brain's bounding box for stage 2
    overlap, flip_tta, device, bf16 : as :func:`wmhkit.infer.predict_sliding_window`

    Returns a :class:`TwoStageResult` on the input grid.
    """
    from wmhkit import infer
    from wmhkit.train.inputs import build_inputs, input_channels

    model, defaults = _stage2_model(model)
    kind = kind or defaults.get("inputs") or _default_kind(model, t1)
    patch = tuple(patch or defaults.get("patch") or (96, 96, 96))
    if spacing_mm is None:
        spacing_mm = defaults.get("spacing_mm")
    expected = getattr(model, "config", {}).get("in_channels")
    if expected is not None and expected != input_channels(kind):
        raise ValueError(f"the network takes {expected} channel(s) but input kind {kind!r} gives "
                         f"{input_channels(kind)}")
    if t1 is not None and np.shape(t1) != np.shape(flair):
        raise ValueError(f"FLAIR {np.shape(flair)} and T1 {np.shape(t1)} must share one grid")

    stage1 = extract_brain(flair, affine, brain_model, threshold=brain_threshold, detect_stripped=detect_stripped)
    probability = np.zeros(np.shape(flair), np.float32)
    if not stage1.mask.any():
        return TwoStageResult(probability, stage1.mask, stage1)

    flair_c, c_affine, how = to_canonical(np.asarray(flair, np.float32), affine)
    t1_c = None if t1 is None else to_canonical(np.asarray(t1, np.float32), affine)[0]
    brain_c = to_canonical(stage1.mask, affine)[0] > 0
    spacing = np.linalg.norm(c_affine[:3, :3], axis=0)
    channels = build_inputs(kind, flair_c, t1_c, brain_c, tuple(float(s) for s in spacing))
    # Stage 2 only looks at the brain (plus context): the sliding window skips the rest of the head.
    box = mask_bounding_box(brain_c, [math.ceil(margin_mm / s) for s in spacing])
    crop_affine = c_affine.copy()
    crop_affine[:3, 3] = c_affine[:3, :3] @ np.array([b.start for b in box]) + c_affine[:3, 3]
    inside = infer.predict_volume_3d(model, channels[(slice(None), *box)], crop_affine, patch=patch,
                                     spacing_mm=spacing_mm, overlap=overlap, flip_tta=flip_tta, device=device,
                                     bf16=bf16)
    canonical = np.zeros(brain_c.shape, np.float32)
    canonical[box] = inside
    canonical[~brain_c] = 0.0
    probability = from_canonical(canonical, how).astype(np.float32)
    return TwoStageResult(probability, stage1.mask, stage1)


def _stage2_model(model) -> tuple[torch.nn.Module, dict]:
    if isinstance(model, (str, Path)):
        from wmhkit.train.engine import load_exported

        network, payload = load_exported(model)
        return network, dict(payload.get("data", {}))
    return model, {}


def _default_kind(model: torch.nn.Module, t1) -> str:
    channels = getattr(model, "config", {}).get("in_channels", 1)
    return "flair_t1" if t1 is not None and channels == 2 else "flair"
