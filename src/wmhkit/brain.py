"""Brain extraction: FCN-1 of the two-stage network, on any contrast, 3D or thick-slice 2D.

Pipeline (inference): native grid -> RAS voxel order -> isotropic working grid (3 mm) covering the field
of view -> intensity scaling -> :class:`wmhkit.models.msfcn.BrainFCN` -> brain probability resampled
linearly to the native grid -> threshold (the model's calibrated cut-off for the scan's acquisition
geometry: thick-slice or isotropic), largest component, holes filled -> native voxel order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from wmhkit.infer import native_bf16
from wmhkit.io import save_torch, voxel_spacing, voxel_volume_ml
from wmhkit.models.msfcn import BrainFCN
from wmhkit.preprocess import from_canonical, resample, to_canonical, working_grid

WORKING_SPACING_MM = 3.0
SHIPPED_MODEL = "brain_fcn1.pt"
# A skull-stripped scan is mostly exact zeros around one brain-sized blob (ml).
STRIPPED_BRAIN_ML = (700.0, 2200.0)
STRIPPED_ZERO_SHARE = 0.3
# Models carry their own cut-off, calibrated on held-out synthetic heads (scripts/eval_brain_synthetic.py).
DEFAULT_THRESHOLD = 0.5
# Thick-slice clinical scans and isotropic 3D heads fail differently (the first lose brain at the slice
# blur, the second leak into the neck), so a model may carry one cut-off per geometry.
GEOMETRIES = ("thick_slice", "isotropic")
THICK_SLICE_MM = 2.0
FOV_EDGE_PAD = 4  # working-grid voxels (12 mm) of edge-repeated slices above and below the scan


@dataclass
class BrainResult:
    """mask: uint8 (X, Y, Z) on the native grid; probability: float32 (X, Y, Z) or None when skipped."""

    mask: np.ndarray
    probability: np.ndarray | None
    skipped_because_stripped: bool
    volume_ml: float


def scale_intensities(image: np.ndarray) -> np.ndarray:
    """Contrast-agnostic scaling: non-zero voxels' 99.5th percentile -> 1, clipped to [0, 1.5]; float32."""
    image = np.asarray(image, dtype=np.float32)
    foreground = image[image > 0]
    top = float(np.percentile(foreground, 99.5)) if foreground.size else 1.0
    return np.clip(image / max(top, 1e-6), 0.0, 1.5).astype(np.float32)


def pad_to_multiple(volume: np.ndarray, divisor: int) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad the last three axes up to multiples of ``divisor``; returns (padded, crop back)."""
    pads, crop = [], []
    for n in volume.shape[-3:]:
        extra = (-n) % divisor
        pads.append((extra // 2, extra - extra // 2))
        crop.append(slice(extra // 2, extra // 2 + n))
    lead = [(0, 0)] * (volume.ndim - 3)
    return np.pad(volume, lead + pads), tuple(crop)


def looks_skull_stripped(image: np.ndarray, affine: np.ndarray) -> bool:
    """True when the image is mostly exact zeros around a single brain-sized non-zero region."""
    nonzero = np.asarray(image) != 0
    if 1.0 - nonzero.mean() < STRIPPED_ZERO_SHARE:
        return False
    labels, count = ndimage.label(nonzero)
    if count == 0:
        return False
    largest = np.bincount(labels.ravel())[1:].max()
    voxel_ml = voxel_volume_ml(affine)
    return STRIPPED_BRAIN_ML[0] <= largest * voxel_ml <= STRIPPED_BRAIN_ML[1]


def acquisition_geometry(affine: np.ndarray) -> str:
    """``"thick_slice"`` when the largest voxel side is >= 2 mm and 1.5x the smallest, else ``"isotropic"``."""
    sides = voxel_spacing(affine)
    thick = sides.max() >= THICK_SLICE_MM and sides.max() >= 1.5 * sides.min()
    return "thick_slice" if thick else "isotropic"


def model_threshold(model: BrainFCN, affine: np.ndarray) -> float:
    """The model's calibrated cut-off for an image with this affine (its geometry's, else its single one)."""
    return float(model.mask_thresholds.get(acquisition_geometry(affine), model.mask_threshold))


def clean_mask(probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Largest 6-connected component of ``probability >= threshold`` with its holes filled (bool)."""
    mask = probability >= threshold
    labels, count = ndimage.label(mask)
    if count > 1:
        mask = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return ndimage.binary_fill_holes(mask)


def predict_probability(model: BrainFCN, image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Brain probability (float32, image's shape) of a native-grid image."""
    canonical, c_affine, how = to_canonical(np.asarray(image, dtype=np.float32), affine)
    shape, w_affine = working_grid(canonical.shape, c_affine, WORKING_SPACING_MM)
    work = scale_intensities(resample(canonical, c_affine, shape, w_affine))
    # Clinical 2D scans often stop mid-brain at the top or bottom. Zero padding there would look like
    # the end of the head and the network would round the brain off; repeating the edge slices lets it
    # continue the brain to the edge of the field of view (a whole-head scan repeats air or neck).
    work = np.pad(work, ((0, 0), (0, 0), (FOV_EDGE_PAD, FOV_EDGE_PAD)), mode="edge")
    padded, crop = pad_to_multiple(work[None, None], model.divisor)
    model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16("cpu")):
        logits = model(torch.from_numpy(padded))
    prob = torch.sigmoid(logits.float())[0, 0].numpy()[crop][:, :, FOV_EDGE_PAD:-FOV_EDGE_PAD]
    native = resample(prob, w_affine, canonical.shape, c_affine, kind="linear")
    return from_canonical(native, how)


def extract_brain(
    image: np.ndarray,
    affine: np.ndarray,
    model: BrainFCN | None = None,
    *,
    threshold: float | None = None,
    detect_stripped: bool = True,
) -> BrainResult:
    """Binary brain mask of a head (or brain) image on its native grid.

    Parameters
    ----------
    image : (X, Y, Z) any MR contrast, skull on or off
    affine : its 4x4 voxel-to-world affine (mm)
    model : a BrainFCN; default the shipped one
    threshold : probability cut-off; default the model's calibrated one for this geometry
        (:func:`model_threshold`)
    detect_stripped : if the image is already skull-stripped, return its non-zero region unchanged
    """
    voxel_ml = voxel_volume_ml(affine)
    if detect_stripped and looks_skull_stripped(image, affine):
        mask = ndimage.binary_fill_holes(np.asarray(image) != 0)
        return BrainResult(mask.astype(np.uint8), None, True, float(mask.sum() * voxel_ml))
    model = model or load_brain_model()
    probability = predict_probability(model, image, affine)
    if threshold is None:
        threshold = model_threshold(model, affine)
    mask = clean_mask(probability, threshold)
    return BrainResult(mask.astype(np.uint8), probability, False, float(mask.sum() * voxel_ml))


def save_brain_model(model: BrainFCN, path: str | Path, info: dict | None = None) -> None:
    """Weights (bf16 halves the file; inference runs in bf16 where the CPU has it) plus the architecture."""
    state = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    save_torch({"config": model.config, "state_dict": state, "info": info or {}}, path)


def load_brain_model_file(path: str | Path) -> BrainFCN:
    payload = torch.load(str(path), map_location="cpu", weights_only=True)
    model = BrainFCN(**payload["config"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()})
    info = payload.get("info", {})
    model.mask_threshold = float(info.get("threshold", DEFAULT_THRESHOLD))
    model.mask_thresholds = {g: float(t) for g, t in info.get("thresholds", {}).items() if g in GEOMETRIES}
    return model.eval()


def set_model_threshold(path: str | Path, threshold: float, per_geometry: dict[str, float] | None = None) -> None:
    """Record calibrated probability cut-offs in a saved brain model file (atomically).

    ``threshold`` is the single cut-off (used for a geometry without its own); ``per_geometry`` maps
    names of :data:`GEOMETRIES` to their own cut-offs.
    """
    unknown = set(per_geometry or {}) - set(GEOMETRIES)
    if unknown:
        raise ValueError(f"unknown geometries {sorted(unknown)}; expected {GEOMETRIES}")
    payload = torch.load(str(path), map_location="cpu", weights_only=True)
    info = payload.setdefault("info", {})
    info["threshold"] = float(threshold)
    if per_geometry:
        info["thresholds"] = {str(g): float(t) for g, t in per_geometry.items()}
    else:
        info.pop("thresholds", None)
    save_torch(payload, path)


@lru_cache(maxsize=1)
def load_brain_model() -> BrainFCN:
    """The brain extractor shipped in the package (``wmhkit/data/models/brain_fcn1.pt``)."""
    resource = resources.files("wmhkit").joinpath("data", "models", SHIPPED_MODEL)
    if not resource.is_file():
        raise FileNotFoundError(f"shipped brain model missing: {resource}")
    with resources.as_file(resource) as path:
        return load_brain_model_file(path)


def model_card(path: str | Path) -> dict:
    payload = torch.load(str(path), map_location="cpu", weights_only=True)
    return json.loads(json.dumps(payload.get("info", {})))
