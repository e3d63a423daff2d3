"""The main job: a FLAIR (T1 optional) on its native grid -> WMH probability, mask, brain mask, statistics.

Stages, each timed: T1 -> FLAIR rigid registration (only when the T1 lies on another grid), optional N4,
brain mask (given, kept from a skull-stripped input, or FCN-1), network inputs in the brain on the
canonical grid, the WMH network (2D slice-wise or 3D sliding window, as its model file says), threshold
and 26-connected lesion count. Everything returned lives on the FLAIR's native grid.

Models are files exported by ``wmhkit train`` (network, its input kind and geometry, weights). The
shipped ones live in ``wmhkit/data/models``; :data:`SHIPPED_MODELS` names them. ``"default"`` picks the
one that matches the inputs given (with or without T1).
"""

from __future__ import annotations

import pickle
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from wmhkit import __version__
from wmhkit.errors import InputError
from wmhkit.io import Volume, voxel_volume_ml
from wmhkit.metrics import label_lesions
from wmhkit.preprocess import (
    RegistrationFailed,
    apply_rigid,
    from_canonical,
    mask_bounding_box,
    n4_bias_correct,
    register_rigid,
    to_canonical,
)

# name -> file in wmhkit/data/models (see docs/model_card.md)
SHIPPED_MODELS = {
    "sidefcn-flair-t1": "wmh_sidefcn_flair_t1.pt",
    "sidefcn-flair": "wmh_sidefcn_flair.pt",
}
# Anatomy models other stages use (not offered by --model): white matter for annotation-free training.
ANATOMY_MODELS = {
    "wm-sidefcn-flair": "wm_sidefcn_flair.pt",
}
DEFAULT_WITH_T1 = "sidefcn-flair-t1"
DEFAULT_FLAIR_ONLY = "sidefcn-flair"
# Two grids closer than this (mm, any affine entry) are one grid: no registration needed.
SAME_GRID_TOLERANCE_MM = 1e-3
# Context kept around the brain's bounding box for 3D networks (mm).
BOX_MARGIN_MM = 8.0


@dataclass
class WmhModel:
    """A loaded WMH network with what inference needs to know about it.

    network: in eval mode; inputs: input kind (:mod:`wmhkit.train.inputs`); data: the model file's data
    section (``size`` for 2D networks, ``patch`` and ``spacing_mm`` for 3D ones); dims: 2 or 3.
    """

    name: str
    network: torch.nn.Module
    inputs: str
    data: dict
    dims: int
    info: dict = field(default_factory=dict)

    @property
    def needs_t1(self) -> bool:
        from wmhkit.train.inputs import NEEDS_T1

        return self.inputs in NEEDS_T1


@dataclass
class Segmentation:
    """Result of :func:`segment_scan`, on the FLAIR's native grid.

    probability: float32 (X, Y, Z) in [0, 1], 0 outside the brain; mask: uint8 (X, Y, Z);
    brain: uint8 (X, Y, Z); stats: JSON-ready dict (volumes in ml, counts, timings in s, geometry).
    """

    probability: np.ndarray
    mask: np.ndarray
    brain: np.ndarray
    stats: dict


# ------------------------------------------------------------------------------------------ models


def shipped_model_path(name: str) -> Path:
    """File of a shipped WMH model (:data:`SHIPPED_MODELS`) or anatomy model (:data:`ANATOMY_MODELS`)."""
    filename = SHIPPED_MODELS.get(name) or ANATOMY_MODELS[name]
    resource = resources.files("wmhkit").joinpath("data", "models", filename)
    return Path(str(resource))


def resolve_model(name: str | None, with_t1: bool) -> Path:
    """Model file for ``--model``: None/"default", a shipped name, a model file or a run folder."""
    if name in (None, "default"):
        name = DEFAULT_WITH_T1 if with_t1 else DEFAULT_FLAIR_ONLY
    if name in SHIPPED_MODELS:
        path = shipped_model_path(name)
        if not path.is_file():
            raise InputError(path, f"shipped model {name!r} is missing from this installation")
        return path
    path = Path(name)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise InputError(name, "no such model: give a shipped name (" + ", ".join(SHIPPED_MODELS)
                         + "), a model file exported by `wmhkit train` or its run folder")
    return path


def load_model(path: str | Path) -> WmhModel:
    """A model file exported by ``wmhkit train`` (cached: a cohort loads each model once)."""
    return _load_model(str(Path(path).resolve()))


@lru_cache(maxsize=4)
def _load_model(path: str) -> WmhModel:
    from wmhkit.models import network_dims
    from wmhkit.train.engine import load_exported

    try:
        network, payload = load_exported(path)
    except (pickle.UnpicklingError, RuntimeError, KeyError, EOFError, ValueError, TypeError) as exc:
        raise InputError(path, f"not a wmhkit model file ({type(exc).__name__})") from None
    info = dict(payload.get("info", {}))
    name = info.get("model_name") or Path(path).stem
    data = dict(payload["data"])
    return WmhModel(name, network, data["inputs"], data, network_dims(payload["network"]), info)


# ---------------------------------------------------------------------------------------- pipeline


def segment_scan(
    flair: Volume,
    t1: Volume | None = None,
    *,
    model: WmhModel | None = None,
    brain_mask: np.ndarray | None = None,
    threshold: float = 0.5,
    tta: bool = False,
    n4: bool = True,
    device: str = "cpu",
) -> Segmentation:
    """Segment WMH in one FLAIR (optionally with a T1 of the same head).

    Parameters
    ----------
    flair : FLAIR volume, any orientation, skull on or off, 3D or thick-slice 2D
    t1 : T1 volume; registered rigidly to the FLAIR when it lies on another grid
    model : the WMH model; default the shipped one for these inputs
    brain_mask : (X, Y, Z) on the FLAIR grid; default FCN-1 (or the non-zero region of a stripped input)
    threshold : probability cut-off of the mask, in (0, 1)
    tta : average over in-plane flips (2D) or axis flips (3D): 3-4x the network time
    n4 : N4 bias correction of FLAIR (and T1) inside the brain mask (1-2 s; docs/model_card.md measures
        what it saves under a strong bias and that it costs nothing without one)
    device : "cpu" or "cuda"

    Raises InputError (CLI exit 2) for inputs it cannot work with: a failed T1 registration, a brain
    mask on another grid or empty, a model that needs a T1 when none is given.
    """
    if not 0.0 < threshold < 1.0:
        raise InputError(None, f"threshold must lie strictly between 0 and 1, got {threshold}")
    timings: dict[str, float] = {}
    if model is None:
        with _timed(timings, "load_model"):
            model = load_model(resolve_model(None, t1 is not None))
    if model.needs_t1 and t1 is None:
        raise InputError(None, f"model {model.name!r} needs a T1 (--t1), or choose a FLAIR-only model")
    flair_data = np.asarray(flair.data, np.float32)
    t1_data, registration = None, None
    if t1 is not None and model.needs_t1:
        with _timed(timings, "register_t1"):
            t1_data, registration = t1_on_flair_grid(t1, flair)
    with _timed(timings, "brain_mask"):
        brain, brain_source = _brain(flair_data, flair, brain_mask)
    if n4:
        # After the brain mask: FCN-1 is trained on biased heads, and N4 then fits the brain alone.
        with _timed(timings, "n4"):
            flair_data = n4_bias_correct(flair_data, flair.affine, brain > 0)[0]
            t1_data = None if t1_data is None else n4_bias_correct(t1_data, flair.affine, brain > 0)[0]
    with _timed(timings, "network"):
        probability = wmh_probability(model, flair_data, flair.affine, brain, t1_data, tta=tta, device=device)
    with _timed(timings, "postprocess"):
        mask = (probability >= threshold).astype(np.uint8)
        stats = lesion_stats(mask, brain, flair.affine)
    stats.update({
        "threshold": float(threshold),
        "model": {"name": model.name, "network": model.info.get("network", type(model.network).__name__),
                  "inputs": model.inputs, "version": model.info.get("model_version", "unversioned"),
                  "tta": bool(tta)},
        "wmhkit_version": __version__,
        "brain_mask_source": brain_source,
        "n4": bool(n4),
        "input": {"flair": _geometry(flair), "t1": None if t1 is None else _geometry(t1)},
        "t1_registration": registration,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    })
    return Segmentation(probability, mask, brain, stats)


def wmh_probability(
    model: WmhModel,
    flair: np.ndarray,
    affine: np.ndarray,
    brain: np.ndarray,
    t1: np.ndarray | None = None,
    *,
    tta: bool = False,
    device: str = "cpu",
) -> np.ndarray:
    """WMH probability (float32, FLAIR's native shape, 0 outside ``brain``) of one scan by ``model``.

    flair, brain, t1 : (X, Y, Z) on the grid of ``affine`` (t1 may be None for FLAIR-only inputs).
    """
    from wmhkit import infer
    from wmhkit.train.inputs import build_inputs

    brain = np.asarray(brain) > 0
    if not brain.any():
        return np.zeros(np.shape(flair), np.float32)
    flair_c, c_affine, how = to_canonical(np.asarray(flair, np.float32), affine)
    t1_c = None if t1 is None else to_canonical(np.asarray(t1, np.float32), affine)[0]
    brain_c = to_canonical(brain, affine)[0] > 0
    spacing = tuple(float(s) for s in np.linalg.norm(c_affine[:3, :3], axis=0))
    channels = build_inputs(model.inputs, flair_c, t1_c, brain_c, spacing)
    if model.dims == 2:
        canonical = infer.predict_volume_2d(model.network, channels, c_affine, brain_c,
                                            size=int(model.data["size"]), flip_tta=tta, device=device)
    else:
        # Only the brain (plus context) goes through the sliding window, not the rest of the head.
        box = mask_bounding_box(brain_c, [int(np.ceil(BOX_MARGIN_MM / s)) for s in spacing])
        crop_affine = c_affine.copy()
        crop_affine[:3, 3] = c_affine[:3, :3] @ np.array([b.start for b in box]) + c_affine[:3, 3]
        canonical = np.zeros(brain_c.shape, np.float32)
        canonical[box] = infer.predict_volume_3d(
            model.network, channels[(slice(None), *box)], crop_affine, patch=tuple(model.data["patch"]),
            spacing_mm=model.data.get("spacing_mm"), flip_tta=tta, device=device)
    canonical = np.where(brain_c, canonical, 0.0).astype(np.float32)
    return from_canonical(canonical, how).astype(np.float32)


def t1_on_flair_grid(t1: Volume, flair: Volume) -> tuple[np.ndarray, dict | None]:
    """T1 resampled onto the FLAIR grid (rigid MI registration unless it is already on that grid).

    Returns (t1 data on the FLAIR grid, registration report or None when none was needed).
    Raises InputError naming the T1 when the registration clearly failed.
    """
    if t1.shape == flair.shape and np.allclose(t1.affine, flair.affine, atol=SAME_GRID_TOLERANCE_MM):
        return np.asarray(t1.data, np.float32), None
    try:
        result = register_rigid(np.asarray(t1.data, np.float32), t1.affine, np.asarray(flair.data, np.float32),
                                flair.affine)
    except RegistrationFailed as exc:
        raise InputError(t1.path, f"could not be registered to the FLAIR: {exc}") from None
    moved = apply_rigid(np.asarray(t1.data, np.float32), t1.affine, result, flair.shape, flair.affine)
    report = {"mutual_information": round(-result.metric, 4), "rotation_deg": round(result.rotation_deg, 2),
              "translation_mm": round(result.translation_mm, 2), "iterations": result.iterations}
    return moved.astype(np.float32), report


def lesion_stats(mask: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> dict:
    """Volumes (ml) and 26-connected lesion count of a binary WMH mask inside a brain mask."""
    voxel_ml = voxel_volume_ml(affine)
    _, count = label_lesions(mask)  # 26-connected, as the MICCAI 2017 WMH challenge counts lesions
    wmh_ml = float(np.count_nonzero(mask)) * voxel_ml
    brain_ml = float(np.count_nonzero(brain)) * voxel_ml
    return {
        "wmh_volume_ml": round(wmh_ml, 4),
        "lesion_count": int(count),
        "brain_volume_ml": round(brain_ml, 2),
        "wmh_brain_ratio": round(wmh_ml / brain_ml, 6) if brain_ml > 0 else None,
    }


# ----------------------------------------------------------------------------------------- helpers


def _brain(flair: np.ndarray, volume: Volume, given: np.ndarray | None) -> tuple[np.ndarray, str]:
    from wmhkit.brain import extract_brain

    if given is not None:
        given = np.asarray(given)
        if given.shape != flair.shape:
            raise InputError(None, f"brain mask shape {given.shape} differs from the FLAIR's {flair.shape}")
        if not given.any():
            raise InputError(None, "the brain mask is empty")
        return (given > 0).astype(np.uint8), "given"
    result = extract_brain(flair, volume.affine)
    if not result.mask.any():
        raise InputError(volume.path, "no brain found in this image (is it a head scan?)")
    return result.mask, "input already skull-stripped" if result.skipped_because_stripped else "FCN-1"


def _geometry(volume: Volume) -> dict:
    import nibabel as nib

    return {
        "path": None if volume.path is None else str(volume.path),
        "shape": list(volume.shape),
        "spacing_mm": [round(float(s), 4) for s in volume.spacing],
        "orientation": "".join(nib.aff2axcodes(volume.affine)),
    }


@contextmanager
def _timed(timings: dict, stage: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start
