"""The two-stage pipeline of Zeng & Zheng 2017 in one call: FCN-1 (brain) -> mask -> FCN-2 (WMH).

Stage 1 is :func:`wmhkit.brain.extract_brain` (FCN-1, :class:`wmhkit.models.msfcn.BrainFCN`, on the
FLAIR image; an already skull-stripped FLAIR keeps its non-zero region). Stage 2 builds the network
inputs inside that mask and runs FCN-2 (:class:`wmhkit.models.msfcn.MSFCN`, or any 3D network) by sliding
window over the brain's bounding box (:func:`wmhkit.segment.wmh_probability`), and returns the
probability on the input grid, zero outside the stage-1 mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wmhkit.brain import BrainResult, extract_brain


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
    flip_tta: bool = False,
    device: str | torch.device = "cpu",
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
    flip_tta, device : as :func:`wmhkit.infer.predict_sliding_window`

    Returns a :class:`TwoStageResult` on the input grid.
    """
    from wmhkit.segment import WmhModel, wmh_probability
    from wmhkit.train.inputs import input_channels

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
    stage2 = WmhModel("fcn2", model, kind, {"patch": patch, "spacing_mm": spacing_mm}, dims=3)
    probability = wmh_probability(stage2, flair, affine, stage1.mask, t1, tta=flip_tta, device=str(device))
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
