"""The MICCAI 2017 WMH Segmentation Challenge metrics, with the official evaluation's semantics.

Every function takes numpy arrays of shape (X, Y, Z) and, where distances or volumes are involved, the
4x4 voxel-to-world affine of the reference image (mm). The third array axis is the slice axis of the
official evaluation: boundary extraction erodes in-plane only.

Semantics (official ``evaluation.py`` of the challenge, with its undefined cases made explicit):

* Reference: WMH = label 1. Voxels of label 2 ("other pathology") are removed from the prediction before
  scoring, so they are neither hits nor false positives. Label values are compared directly, so an
  integer reference works (the official script's thresholds break on integer references).
* Prediction: integer images are foreground where 1 <= v <= 1000, float images where 0.5 <= v <= 1000.
* DSC = 2|A∩B| / (|A|+|B|); NaN when both are empty.
* H95 (mm): boundary = mask minus its erosion by the full 3x3 in-plane neighbourhood (no erosion across
  slices, outside the image counts as foreground); boundary voxel centres mapped to world mm by the
  affine; nearest-neighbour distances both ways; max of the two 95th percentiles (linear
  interpolation). NaN when either mask is empty (or has no boundary: it fills whole slices).
* AVD (%) = |V_ref - V_pred| / V_ref * 100; NaN when the reference is empty.
* Lesion recall / F1: 26-connected components. A reference lesion is detected if any predicted voxel
  lies in it; precision is the share of predicted components that overlap the reference. Recall is 1
  with no reference lesions, precision 1 with no predicted components; F1 = 2PR/(P+R), 0 if P+R = 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from wmhkit.io import voxel_volume_ml

WMH_LABEL = 1
OTHER_PATHOLOGY_LABEL = 2
# Metric name -> True when a higher value is better (used by the challenge ranking).
HIGHER_IS_BETTER = {"dsc": True, "h95": False, "avd": False, "recall": True, "f1": True}
METRICS = tuple(HIGHER_IS_BETTER)

_IN_PLANE_3X3 = np.ones((3, 3, 1), dtype=bool)
_FULLY_CONNECTED = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class CaseScores:
    """The five challenge metrics of one case, plus volumes (ml) and lesion counts."""

    dsc: float
    h95: float
    avd: float
    recall: float
    f1: float
    ref_ml: float
    pred_ml: float
    ref_lesions: int
    pred_lesions: int

    def as_dict(self) -> dict:
        return asdict(self)


def binarize_prediction(pred: np.ndarray) -> np.ndarray:
    """Foreground of a prediction as the official evaluation reads it.

    Integer (and boolean) arrays: 1 <= v <= 1000. Float arrays: 0.5 <= v <= 1000 (a probability map
    is thresholded at 0.5; NaN is background). Returns a bool array of the same shape.
    """
    pred = np.asarray(pred)
    if pred.dtype.kind == "b":
        return pred.copy()
    low = 1 if pred.dtype.kind in "iu" else 0.5
    return (pred >= low) & (pred <= 1000)


def split_reference(ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(WMH mask, other-pathology mask) of a reference label map, both bool arrays of ref's shape."""
    ref = np.asarray(ref)
    return ref == WMH_LABEL, ref == OTHER_PATHOLOGY_LABEL


def prepare(ref: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference WMH mask and binarised prediction with other-pathology voxels removed from it."""
    ref = np.asarray(ref)
    pred = np.asarray(pred)
    if ref.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    wmh, other = split_reference(ref)
    return wmh, binarize_prediction(pred) & ~other


def dice(ref: np.ndarray, pred: np.ndarray) -> float:
    """Dice similarity coefficient of two binary masks; NaN when both are empty."""
    ref = np.asarray(ref, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    total = int(ref.sum()) + int(pred.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(ref, pred).sum()) / total


def boundary(mask: np.ndarray) -> np.ndarray:
    """Outer boundary voxels: mask minus its in-plane 3x3 erosion (image border counts as foreground)."""
    mask = np.asarray(mask, dtype=bool)
    eroded = ndimage.binary_erosion(mask, structure=_IN_PLANE_3X3, border_value=1)
    return mask & ~eroded


def boundary_points_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of the boundary voxel centres of ``mask``, shape (N, 3)."""
    index = np.argwhere(boundary(mask)).astype(float)
    affine = np.asarray(affine, dtype=float)
    return index @ affine[:3, :3].T + affine[:3, 3]


def hausdorff95(ref: np.ndarray, pred: np.ndarray, affine: np.ndarray) -> float:
    """95th-percentile Hausdorff distance (mm) between the boundaries of two masks.

    ``affine`` maps voxel indices to world mm (anisotropic and oblique grids are honoured).
    NaN when either mask is empty.
    """
    ref = np.asarray(ref, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if not ref.any() or not pred.any():
        return float("nan")
    ref_pts = boundary_points_mm(ref, affine)
    pred_pts = boundary_points_mm(pred, affine)
    if len(ref_pts) == 0 or len(pred_pts) == 0:
        # Only a mask that fills whole slices edge to edge has no boundary (the border is foreground).
        return float("nan")
    pred_to_ref = cKDTree(ref_pts).query(pred_pts, k=1)[0]
    ref_to_pred = cKDTree(pred_pts).query(ref_pts, k=1)[0]
    return float(max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95)))


def avd(ref: np.ndarray, pred: np.ndarray) -> float:
    """Absolute volume difference in percent of the reference volume; NaN for an empty reference."""
    v_ref = int(np.count_nonzero(ref))
    if v_ref == 0:
        return float("nan")
    return abs(v_ref - int(np.count_nonzero(pred))) / v_ref * 100.0


def label_lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a binary mask: (label image, number of components)."""
    labels, count = ndimage.label(np.asarray(mask, dtype=bool), structure=_FULLY_CONNECTED)
    return labels, int(count)


def lesion_detection(ref: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Lesion-wise (recall, F1) of two binary masks with 26-connected lesions."""
    recall, precision, _, _ = _lesion_counts(ref, pred)
    return recall, _f1(precision, recall)


def _lesion_counts(ref: np.ndarray, pred: np.ndarray) -> tuple[float, float, int, int]:
    ref = np.asarray(ref, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    ref_labels, n_ref = label_lesions(ref)
    pred_labels, n_pred = label_lesions(pred)
    overlap = ref & pred
    detected = np.unique(ref_labels[overlap]).size
    true_detections = np.unique(pred_labels[overlap]).size
    recall = 1.0 if n_ref == 0 else detected / n_ref
    precision = 1.0 if n_pred == 0 else true_detections / n_pred
    return recall, precision, n_ref, n_pred


def _f1(precision: float, recall: float) -> float:
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def score(ref: np.ndarray, pred: np.ndarray, affine: np.ndarray) -> CaseScores:
    """All challenge metrics of one case.

    Parameters
    ----------
    ref : reference label map (X, Y, Z), values 0 (background), 1 (WMH), 2 (other pathology)
    pred : prediction (X, Y, Z), any numeric dtype, binarised as the official evaluation does
    affine : (4, 4) voxel-to-world (mm) of the reference grid

    Returns
    -------
    CaseScores with DSC, H95 (mm), AVD (%), lesion recall, lesion F1, volumes (ml) and lesion counts.
    """
    wmh, predicted = prepare(ref, pred)
    recall, precision, n_ref, n_pred = _lesion_counts(wmh, predicted)
    voxel_ml = voxel_volume_ml(affine)
    return CaseScores(
        dsc=dice(wmh, predicted),
        h95=hausdorff95(wmh, predicted, affine),
        avd=avd(wmh, predicted),
        recall=recall,
        f1=_f1(precision, recall),
        ref_ml=int(wmh.sum()) * voxel_ml,
        pred_ml=int(predicted.sum()) * voxel_ml,
        ref_lesions=n_ref,
        pred_lesions=n_pred,
    )
