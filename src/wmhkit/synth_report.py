"""How realistic are the synthetic lesions? Statistics of lesion burden, shape, position and contrast.

The statistics are flat numpy-in/numpy-out functions:

* :func:`lesion_volume_ml`, :func:`lesion_count`, :func:`lesion_sizes_ml` (26-connected components),
* :func:`ventricle_distance_map` and :func:`lesion_ventricle_distances` (mm, Euclidean, anisotropic
  voxels honoured),
* :func:`lesion_contrast` (median intensity in lesions / median intensity in normal-appearing white
  matter; FLAIR and, where there is one, T1).

:func:`case_statistics` bundles them for one case; :func:`summarise` turns per-case values into
distribution summaries; :func:`format_table` prints synthetic and real side by side.

Real-data statistics come from the open_ms database (Lesjak et al. 2018, CC-BY): 30 lesion masks
without images (volume, count, lesion sizes and, via an affine registration of each brain mask to an
MNI152 brain mask, distances to template ventricles) and 3 MNI-registered labeled cases (all statistics).
:func:`real_lesion_stats` computes them from a copy of the data set whose root the caller passes; the
package ships a precomputed copy (``data/real_lesion_stats.json``, made by
``scripts/real_lesion_stats.py``) so the report runs without the data.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi

from wmhkit.metrics import label_lesions

# Lesions smaller than this (ml) depend on the grid (1 voxel at 1 mm is 1 ul, at 1.5 mm 3.4 ul), so a
# second count leaves them out to compare a 1.5 mm synthetic grid with 1 mm real masks fairly.
MIN_COUNTED_ML = 0.01
# Lesion voxels this close (mm) to a ventricle are called periventricular (Fazekas-style cut-off).
PERIVENTRICULAR_MM = 10.0

# Labels of the shipped MNI152 template label map (data/mni152_2009a_labels.npz).
TEMPLATE_BRAIN, TEMPLATE_WM, TEMPLATE_VENTRICLE = 1, 2, 3
TEMPLATE_FILE = "mni152_2009a_labels.npz"
REAL_STATS_FILE = "real_lesion_stats.json"

# Per-case statistics, in the order the table lists them, with the unit the table shows.
CASE_STATS = {
    "volume_ml": "lesion volume / case (ml)",
    "count": "lesion count / case (26-conn.)",
    "count_10ul": f"lesions >= {MIN_COUNTED_ML * 1000:g} ul / case",
    "ventricle_distance_mm": "median distance to ventricles / case (mm)",
    "periventricular_fraction": f"share of lesion <= {PERIVENTRICULAR_MM:g} mm from ventricles",
    "contrast": "FLAIR contrast (lesion / NAWM medians)",
    "t1_contrast": "T1 contrast (lesion / NAWM medians)",
}
# Per-lesion statistics, pooled over all lesions of all cases.
LESION_STATS = {
    "lesion_size_ml": "lesion size (ml, all lesions)",
    "lesion_distance_mm": "lesion-ventricle distance (mm, all lesions)",
}


# ------------------------------------------------------------------------------------------ statistics


def lesion_labels(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a lesion mask.

    Parameters
    ----------
    mask : ndarray, shape (X, Y, Z); nonzero = lesion

    Returns
    -------
    labels : int32 ndarray, shape (X, Y, Z); 0 = background, 1..n = lesion id
    n : number of lesions
    """
    labels, n = label_lesions(np.asarray(mask) > 0)
    return labels.astype(np.int32, copy=False), n


def lesion_count(mask: np.ndarray) -> int:
    """Number of 26-connected lesions in ``mask`` (shape (X, Y, Z))."""
    return lesion_labels(mask)[1]


def lesion_volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Total lesion volume (ml) of ``mask`` (shape (X, Y, Z)) with voxel edges ``spacing`` (mm, 3)."""
    return float(np.count_nonzero(mask)) * _voxel_ml(spacing)


def lesion_sizes_ml(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Volume (ml) of each 26-connected lesion, shape (n,), in label order."""
    labels, n = lesion_labels(mask)
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return counts.astype(float) * _voxel_ml(spacing)


def ventricle_distance_map(ventricles: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Euclidean distance (mm) of every voxel to the nearest ventricle voxel; 0 inside the ventricles.

    Parameters
    ----------
    ventricles : ndarray, shape (X, Y, Z); nonzero = ventricle. Must not be empty.
    spacing : voxel edge lengths (mm), shape (3,)

    Returns
    -------
    float32 ndarray, shape (X, Y, Z)
    """
    ventricles = np.asarray(ventricles) > 0
    if not ventricles.any():
        raise ValueError("the ventricle mask is empty")
    return ndi.distance_transform_edt(~ventricles, sampling=np.asarray(spacing, float)).astype(np.float32)


def lesion_ventricle_distances(
    mask: np.ndarray, ventricles: np.ndarray, spacing: Sequence[float], per: str = "voxel"
) -> np.ndarray:
    """Distances (mm) of lesions to the ventricles.

    Parameters
    ----------
    mask, ventricles : ndarray, shape (X, Y, Z) on one grid; nonzero = lesion / ventricle
    spacing : voxel edge lengths (mm), shape (3,)
    per : "voxel" -> one distance per lesion voxel, shape (n_voxels,), in C order;
          "lesion" -> one per 26-connected lesion, the distance of its voxel nearest to a ventricle,
          shape (n_lesions,), in label order. A lesion voxel inside a ventricle has distance 0.
    """
    if per not in ("voxel", "lesion"):
        raise ValueError(f"per must be 'voxel' or 'lesion', not {per!r}")
    distance = ventricle_distance_map(ventricles, spacing)
    if per == "voxel":
        return distance[np.asarray(mask) > 0].astype(float)
    labels, n = lesion_labels(mask)
    if n == 0:
        return np.zeros(0)
    return np.asarray(ndi.minimum(distance, labels, np.arange(1, n + 1)), dtype=float).reshape(n)


def lesion_contrast(image: np.ndarray, lesions: np.ndarray, white_matter: np.ndarray) -> float:
    """Lesion-to-white-matter contrast: median lesion intensity / median NAWM intensity.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z), FLAIR or T1 intensities on any scale (a ratio is scale-free); a
        T1 gives < 1 for hypointense lesions
    lesions, white_matter : ndarray, shape (X, Y, Z); nonzero = lesion / white matter. Lesion voxels
        are removed from the white matter, leaving normal-appearing white matter (NAWM).

    Returns
    -------
    The ratio (> 1 for hyperintense lesions); NaN when there is no lesion, no NAWM or the NAWM median
    is not positive.
    """
    lesions = np.asarray(lesions) > 0
    nawm = (np.asarray(white_matter) > 0) & ~lesions
    if not lesions.any() or not nawm.any():
        return float("nan")
    reference = float(np.median(image[nawm]))
    if reference <= 0:
        return float("nan")
    return float(np.median(image[lesions])) / reference


def case_statistics(
    lesions: np.ndarray,
    spacing: Sequence[float],
    *,
    ventricles: np.ndarray | None = None,
    flair: np.ndarray | None = None,
    white_matter: np.ndarray | None = None,
    t1: np.ndarray | None = None,
) -> dict:
    """All statistics of one case; those whose inputs are missing are NaN (per-lesion lists empty).

    Parameters
    ----------
    lesions : ndarray, shape (X, Y, Z); nonzero = lesion
    spacing : voxel edge lengths (mm), shape (3,)
    ventricles : optional ventricle mask on the same grid (distance statistics)
    flair, white_matter : optional FLAIR image and white-matter mask on the same grid (contrast)
    t1 : optional T1 image on the same grid (t1_contrast, with white_matter)

    Returns
    -------
    dict with the keys of :data:`CASE_STATS` (floats; count an int) and of :data:`LESION_STATS`
    (lists of floats, one per lesion).
    """
    lesions = np.asarray(lesions) > 0
    labels, n = lesion_labels(lesions)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:] * _voxel_ml(spacing)
    stats = {
        "volume_ml": float(sizes.sum()),
        "count": n,
        "count_10ul": int(np.sum(sizes >= MIN_COUNTED_ML - 1e-9)),
        "ventricle_distance_mm": float("nan"),
        "periventricular_fraction": float("nan"),
        "contrast": float("nan"),
        "t1_contrast": float("nan"),
        "lesion_size_ml": [float(s) for s in sizes],
        "lesion_distance_mm": [],
    }
    if ventricles is not None and np.any(ventricles) and n:
        distance = ventricle_distance_map(ventricles, spacing)
        voxel = distance[lesions]
        stats["ventricle_distance_mm"] = float(np.median(voxel))
        stats["periventricular_fraction"] = float(np.mean(voxel <= PERIVENTRICULAR_MM))
        nearest = ndi.minimum(distance, labels, np.arange(1, n + 1))
        stats["lesion_distance_mm"] = [float(d) for d in np.atleast_1d(nearest)]
    if flair is not None and white_matter is not None:
        stats["contrast"] = lesion_contrast(flair, lesions, white_matter)
    if t1 is not None and white_matter is not None:
        stats["t1_contrast"] = lesion_contrast(t1, lesions, white_matter)
    return stats


def _voxel_ml(spacing: Sequence[float]) -> float:
    return float(np.prod(np.asarray(spacing, dtype=float))) / 1000.0


# ------------------------------------------------------------------------------------------ summaries


def summarise(values: Iterable[float]) -> dict:
    """Distribution summary of a sample; NaNs (statistic not computable for a case) are left out.

    Returns
    -------
    dict: n (finite values), median, q25, q75, p05, p95 (NaN when n == 0), share_zero (share of the
    values equal to 0, e.g. lesion-free cases when the values are lesion counts).
    """
    x = np.asarray(list(values), dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        nan = float("nan")
        return {"n": 0, "median": nan, "q25": nan, "q75": nan, "p05": nan, "p95": nan, "share_zero": nan}
    p05, q25, median, q75, p95 = np.percentile(x, [5, 25, 50, 75, 95])
    return {"n": int(x.size), "median": float(median), "q25": float(q25), "q75": float(q75),
            "p05": float(p05), "p95": float(p95), "share_zero": float(np.mean(x == 0))}


def summarise_cases(cases: Sequence[dict]) -> dict:
    """Summaries of every statistic over cases made by :func:`case_statistics`.

    Per-case statistics are summarised over cases; per-lesion ones over all lesions pooled. The key
    ``lesion_free`` holds the share of cases without any lesion.
    """
    cases = [_with_derived(c) for c in cases]
    out = {key: summarise(c.get(key, float("nan")) for c in cases) for key in CASE_STATS}
    for key in LESION_STATS:
        out[key] = summarise(v for c in cases for v in c.get(key, []))
    counts = [c["count"] for c in cases if "count" in c]
    out["lesion_free"] = float(np.mean([k == 0 for k in counts])) if counts else float("nan")
    out["cases"] = len(cases)
    return out


def _with_derived(case: dict) -> dict:
    # Statistics added after a stats file was written are derived from its per-lesion sizes.
    if "count_10ul" not in case and "lesion_size_ml" in case:
        sizes = np.asarray(case["lesion_size_ml"], float)
        case = {**case, "count_10ul": int(np.sum(sizes >= MIN_COUNTED_ML - 1e-9))}
    return case


def format_table(columns: dict[str, dict]) -> str:
    """Side-by-side text table of summaries made by :func:`summarise_cases`.

    Parameters
    ----------
    columns : column title -> summaries, e.g. {"synthetic (200)": ..., "real: 30 masks": ...}

    Each cell reads ``median [q25-q75] (p05-p95) n=...``; the last row gives the share of lesion-free
    cases.
    """
    titles = list(columns)
    rows = [(label, [_cell(columns[t].get(key)) for t in titles])
            for key, label in {**CASE_STATS, **LESION_STATS}.items()]
    rows.append(("share of lesion-free cases",
                 [_number(columns[t].get("lesion_free")) for t in titles]))
    rows.append(("cases", [str(columns[t].get("cases", "")) for t in titles]))
    head = ["median [IQR] (5-95 %) n"] + titles
    widths = [max(len(head[0]), *(len(r[0]) for r in rows))]
    widths += [max(len(titles[i]), *(len(r[1][i]) for r in rows)) for i in range(len(titles))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    for label, cells in rows:
        lines.append(" | ".join(c.ljust(w) for c, w in zip([label, *cells], widths)))
    return "\n".join(line.rstrip() for line in lines)


def _cell(summary: dict | None) -> str:
    if not summary or not summary.get("n"):
        return "-"
    return (f"{_number(summary['median'])} [{_number(summary['q25'])}-{_number(summary['q75'])}] "
            f"({_number(summary['p05'])}-{_number(summary['p95'])}) n={summary['n']}")


def _number(value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    value = float(value)
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


# ----------------------------------------------------------------------------- MNI template + warping


def load_template() -> tuple[np.ndarray, np.ndarray]:
    """The shipped MNI152 2009a label map and its affine.

    Returns
    -------
    labels : uint8 ndarray, shape (197, 233, 189): 0 outside the brain, TEMPLATE_BRAIN, TEMPLATE_WM
        (white-matter probability > 0.5), TEMPLATE_VENTRICLE (lateral and third ventricles)
    affine : ndarray, shape (4, 4), voxel -> MNI mm
    """
    with resources.files("wmhkit").joinpath("data", TEMPLATE_FILE).open("rb") as fh:
        with np.load(fh) as npz:
            return npz["labels"].copy(), npz["affine"].copy()


def resample_labels(labels: np.ndarray, affine: np.ndarray, target_shape, target_affine) -> np.ndarray:
    """Nearest-neighbour resampling of a label map onto another grid of the same world space.

    Parameters
    ----------
    labels : ndarray, shape (X, Y, Z) with voxel->world ``affine`` (4, 4)
    target_shape, target_affine : the output grid

    Returns
    -------
    ndarray of labels.dtype, shape target_shape (0 outside the source field of view)
    """
    from wmhkit.preprocess import resample

    return resample(labels, affine, tuple(target_shape), target_affine, kind="label")


def warp_template_to_brainmask(
    brainmask: np.ndarray, affine: np.ndarray, template: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Template labels on a subject's grid, by an affine registration of the template brain to a mask.

    Only masks are used (the 30 open_ms lesion masks come without images): the template's brain
    (labels > 0) is registered to ``brainmask`` with 12 degrees of freedom, mean squares on the
    smoothed masks, initialised by matching their centres of mass. An affine map of a template is a
    rough ventricle estimate: ventricle size varies between people (and grows with atrophy), so
    distances near the ventricles are uncertain by a few mm.

    Parameters
    ----------
    brainmask : ndarray, shape (X, Y, Z); nonzero = brain
    affine : ndarray, shape (4, 4), the mask's voxel -> world (RAS mm)
    template : (labels, affine) from :func:`load_template` (loaded when None)

    Returns
    -------
    uint8 ndarray, shape (X, Y, Z): template labels on the subject grid
    """
    import SimpleITK as sitk  # only this function needs it; import lazily to keep `import wmhkit` fast

    from wmhkit.preprocess import to_sitk as _to_sitk

    labels, template_affine = template if template is not None else load_template()
    fixed = _to_sitk((np.asarray(brainmask) > 0).astype(np.float32), affine)
    moving = _to_sitk((labels > 0).astype(np.float32), template_affine)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.05, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=200, relaxationFactor=0.5
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([8, 4, 2])
    reg.SetSmoothingSigmasPerLevel([4.0, 2.0, 1.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(initial, inPlace=False)
    transform = reg.Execute(fixed, moving)
    warped = sitk.Resample(_to_sitk(labels, template_affine), fixed, transform, sitk.sitkNearestNeighbor,
                           0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(warped).transpose(2, 1, 0).copy()


def subject_ventricles(flair: np.ndarray, template_ventricles: np.ndarray, brain: np.ndarray,
                       spacing: Sequence[float], margin_mm: float = 6.0) -> np.ndarray:
    """A subject's ventricles from FLAIR darkness near the template's ventricles.

    CSF is suppressed (dark) on FLAIR. Voxels within ``margin_mm`` of the template ventricles that are
    darker than half the median brain intensity, and connected to the template ventricles, are taken;
    this follows enlarged or shifted ventricles that an affinely placed template misses.

    Parameters
    ----------
    flair : ndarray, shape (X, Y, Z)
    template_ventricles, brain : masks on the same grid (brain: nonzero = brain)
    spacing : voxel edges (mm), shape (3,)

    Returns
    -------
    bool ndarray, shape (X, Y, Z); the template ventricles themselves when nothing dark is found
    """
    template_ventricles = np.asarray(template_ventricles) > 0
    brain = np.asarray(brain) > 0
    near = ventricle_distance_map(template_ventricles, spacing) <= margin_mm
    dark = flair < 0.5 * np.median(flair[brain])
    candidate = near & dark & brain
    labels, n = lesion_labels(candidate)
    if n == 0:
        return template_ventricles
    # Keep dark components that touch the template ventricles: sulci and lesion cores nearby do not.
    touching = np.unique(labels[template_ventricles & candidate])
    touching = touching[touching > 0]
    if touching.size == 0:
        return template_ventricles
    return np.isin(labels, touching)


# ------------------------------------------------------------------------------------------ real data


@dataclass
class RealStats:
    """Per-case statistics of the real data and where they came from."""

    mask_cases: list[dict] = field(default_factory=list)
    labeled_cases: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"meta": self.meta, "mask_cases": self.mask_cases, "labeled_cases": self.labeled_cases}

    @classmethod
    def from_json(cls, obj: dict) -> "RealStats":
        return cls(mask_cases=list(obj.get("mask_cases", [])),
                   labeled_cases=list(obj.get("labeled_cases", [])), meta=dict(obj.get("meta", {})))


REAL_ATTRIBUTION = (
    "Derived from the MS lesion database of Lesjak Z, Galimzianova A, Koren A, et al., 'A Novel Public "
    "MR Image Dataset of Multiple Sclerosis Patients With Lesion Segmentations Based on Multi-rater "
    "Consensus', Neuroinformatics 2018, doi:10.1007/s12021-017-9348-7, released under CC-BY "
    "(see the database's LICENSE.txt). Ventricle and white-matter estimates from the MNI ICBM152 2009a "
    "nonlinear symmetric template (Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging "
    "Centre, Montreal Neurological Institute, McGill University), as shipped in nilearn."
)


def real_lesion_stats(open_ms_root: str | os.PathLike,
                      progress: Callable[[str], None] | None = None) -> RealStats:
    """Statistics of the real open_ms data (see the module docstring for the methods).

    Parameters
    ----------
    open_ms_root : the ``open_ms`` folder (with ``lesion_masks/`` and ``labeled_mni/``)
    progress : called with a short message per case (e.g. ``print``)

    Returns
    -------
    RealStats; each case dict is :func:`case_statistics` output plus ``case_id``. Mask cases have no
    contrast (no images); their distances use the affinely warped template ventricles. Labeled cases
    use FLAIR-refined ventricles (:func:`subject_ventricles`) and WM = template WM minus lesions.
    """
    from wmhkit import datasets
    from wmhkit.io import load_image, load_labels

    template = load_template()
    started = time.perf_counter()
    mask_cases = []
    for item in datasets.open_ms_lesion_masks(open_ms_root):
        lesions = load_labels(item.lesions)
        brain = load_labels(item.brainmask).data > 0 if item.brainmask else None
        ventricles = None
        if brain is not None:
            warped = warp_template_to_brainmask(brain, lesions.affine, template)
            ventricles = warped == TEMPLATE_VENTRICLE
        stats = case_statistics(lesions.data, lesions.spacing, ventricles=ventricles)
        mask_cases.append({"case_id": item.case_id, **stats})
        _report(progress, item.case_id, stats)
    labeled_cases = []
    for case in datasets.open_ms_labeled(open_ms_root):
        flair = load_image(case.flair)
        lesions = load_labels(case.wmh).data > 0
        labels = resample_labels(template[0], template[1], flair.shape, flair.affine)
        brain = flair.data > 0  # skull-stripped: the image's support is the brain
        ventricles = subject_ventricles(flair.data, labels == TEMPLATE_VENTRICLE, brain, flair.spacing)
        # The labeled cases' T1 lies on the FLAIR's MNI grid.
        t1 = load_image(case.t1).data if case.t1 else None
        stats = case_statistics(lesions, flair.spacing, ventricles=ventricles, flair=flair.data,
                                white_matter=(labels == TEMPLATE_WM) & brain, t1=t1)
        labeled_cases.append({"case_id": case.case_id, **stats})
        _report(progress, case.case_id, stats)
    meta = {
        "attribution": REAL_ATTRIBUTION,
        "methods": {
            "mask_cases": "30 consensus masks in FLAIR space; ventricles = MNI152 2009a template "
                          "ventricles (CSF prob. > 0.5, dark on T1, central box) warped by a 12-dof "
                          "affine registration of the template brain mask to each brain mask "
                          "(SimpleITK, mean squares); no contrast (no images)",
            "labeled_cases": "3 MNI-registered cases; WM = template WM prob. > 0.5 within the brain; "
                             "ventricles = FLAIR voxels darker than half the brain median within 6 mm "
                             "of the template ventricles and connected to them; FLAIR and T1 contrast against "
                             "that WM minus lesions",
            "connectivity": 26,
            "periventricular_mm": PERIVENTRICULAR_MM,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    return RealStats(mask_cases, labeled_cases, meta)


def shipped_real_stats() -> RealStats:
    """The precomputed real-data statistics shipped with the package."""
    text = resources.files("wmhkit").joinpath("data", REAL_STATS_FILE).read_text(encoding="utf-8")
    return RealStats.from_json(json.loads(text))


def _report(progress, case_id: str, stats: dict) -> None:
    if progress:
        progress(f"{case_id}: {stats['volume_ml']:.2f} ml, {stats['count']} lesions, "
                 f"median distance {stats['ventricle_distance_mm']:.1f} mm, contrast {stats['contrast']:.2f}")


# ------------------------------------------------------------------------------------- synthetic data


def synthetic_case_statistics(
    flair: np.ndarray, wmh: np.ndarray, tissue: np.ndarray, affine: np.ndarray,
    wm_labels: Sequence[int], ventricle_labels: Sequence[int], t1: np.ndarray | None = None,
) -> dict:
    """:func:`case_statistics` of one synthetic case from its arrays.

    Parameters
    ----------
    flair : ndarray, shape (X, Y, Z)
    wmh : ndarray, shape (X, Y, Z); nonzero = lesion
    tissue : int ndarray, shape (X, Y, Z), the generator's tissue labels
    affine : ndarray, shape (4, 4), voxel -> world mm (gives the spacing)
    wm_labels, ventricle_labels : tissue ids of cerebral white matter and of the ventricles
    t1 : optional T1, shape (X, Y, Z) (T1 contrast)
    """
    spacing = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    ventricles = np.isin(tissue, list(ventricle_labels))
    return case_statistics(wmh, spacing, ventricles=ventricles if ventricles.any() else None,
                           flair=flair, white_matter=np.isin(tissue, list(wm_labels)), t1=t1)


def _generated_case(job: tuple) -> dict:
    """Worker: generate synthetic case ``index`` and return its statistics (runs in a subprocess)."""
    seed, index, profile, work_spacing_mm, train_shape = job
    from wmhkit import synth

    started = time.perf_counter()
    sample = synth.generate_sample(seed, profile, index=index, work_spacing_mm=work_spacing_mm,
                                   train_shape=train_shape)
    stats = synthetic_case_statistics(sample.flair, sample.wmh, sample.tissue, sample.affine,
                                      sample.meta["wm_labels"], sample.meta["ventricle_labels"], t1=sample.t1)
    return {"case_id": f"synth_{seed}_{index:04d}", "seconds": time.perf_counter() - started, **stats}


def _worker_init() -> None:
    # One thread per worker process: the workers already use every core.
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency, but statistics do not need it
        pass


# Synthetic cases for the report are generated on an isotropic grid that holds the whole brain: the
# statistics then describe what the generator draws, not how a simulated acquisition blurs it.
REPORT_PROFILE = "train"
REPORT_SPACING_MM = 1.5
REPORT_FOV_MM = (192.0, 240.0, 192.0)


def generated_stats(
    n: int, seed: int = 0, *, work_spacing_mm: float = REPORT_SPACING_MM, workers: int = 2,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Statistics of ``n`` cases drawn by ``wmhkit.synth.generate_sample`` (seed, index 0..n-1).

    Cases are generated on an isotropic ``work_spacing_mm`` grid covering :data:`REPORT_FOV_MM`
    (1.5 mm: about 3 s a case on one core; 1 mm is closer to the real 1 mm masks but several times
    slower). ``workers`` > 1 runs that many processes.
    """
    shape = tuple(int(round(f / work_spacing_mm)) for f in REPORT_FOV_MM)
    jobs = [(int(seed), i, REPORT_PROFILE, float(work_spacing_mm), shape) for i in range(int(n))]
    results: list[dict] = []
    if workers <= 1 or n <= 1:
        _worker_init()
        for job in jobs:
            results.append(_generated_case(job))
            _progress_line(progress, len(results), n)
        return results
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: torch's thread pools do not survive a fork reliably.
    with ProcessPoolExecutor(max_workers=int(workers), mp_context=mp.get_context("spawn"),
                             initializer=_worker_init) as pool:
        for result in pool.map(_generated_case, jobs, chunksize=1):
            results.append(result)
            _progress_line(progress, len(results), n)
    return results


def folder_stats(root: str | os.PathLike, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Statistics of the cases a ``wmhkit synth`` run wrote under ``root``.

    Each case folder needs ``pre/FLAIR.nii.gz``, ``wmh.nii.gz``, ``tissue.nii.gz`` and ``meta.json``
    (with ``wm_labels`` and ``ventricle_labels``, else the ids are looked up by name in
    ``tissue_labels``).
    """
    from wmhkit import datasets
    from wmhkit.errors import InputError
    from wmhkit.io import load_image, load_volume

    cases = datasets.challenge_layout(root)
    results = []
    for k, case in enumerate(cases, 1):
        folder = case.flair.parent.parent
        tissue_path = next((p for p in (folder / "tissue.nii.gz", folder / "tissue.nii") if p.is_file()), None)
        if case.wmh is None or tissue_path is None:
            raise InputError(folder, "synthetic case needs wmh.nii.gz and tissue.nii.gz beside pre/")
        flair = load_image(case.flair)
        wmh = load_volume(case.wmh, labels=(0, 1)).data
        tissue = np.rint(load_volume(tissue_path, labels=range(256)).data).astype(np.int32)
        wm_ids, vent_ids = _tissue_ids(case.meta, folder)
        # wmhkit synth writes the T1 on the FLAIR's grid; another grid gives no T1 contrast.
        t1 = load_image(case.t1).data if case.t1 else None
        t1 = t1 if t1 is not None and t1.shape == flair.shape else None
        stats = synthetic_case_statistics(flair.data, wmh, tissue, flair.affine, wm_ids, vent_ids, t1=t1)
        results.append({"case_id": case.case_id, **stats})
        _progress_line(progress, k, len(cases))
    return results


def _tissue_ids(meta: dict, folder) -> tuple[list[int], list[int]]:
    from wmhkit.errors import InputError

    if "wm_labels" in meta and "ventricle_labels" in meta:
        return [int(i) for i in meta["wm_labels"]], [int(i) for i in meta["ventricle_labels"]]
    names = {str(v): int(k) for k, v in meta.get("tissue_labels", {}).items()}
    wm = [i for n, i in names.items() if n.startswith("wm_")]
    vent = [i for n, i in names.items() if "ventricle" in n]
    if not wm or not vent:
        raise InputError(folder, "meta.json names no white-matter and ventricle labels")
    return wm, vent


def _progress_line(progress, done: int, total: int) -> None:
    if progress and (done == total or done % 20 == 0):
        progress(f"{done}/{total} synthetic cases")


# --------------------------------------------------------------------------------------------- report


@dataclass
class RealismReport:
    """Synthetic and real statistics side by side."""

    synthetic: list[dict]
    real: RealStats
    seconds: float
    source: str

    def columns(self) -> dict[str, dict]:
        """Column title -> :func:`summarise_cases` summaries, synthetic first."""
        return {
            f"synthetic ({len(self.synthetic)})": summarise_cases(self.synthetic),
            f"real: open_ms masks ({len(self.real.mask_cases)})": summarise_cases(self.real.mask_cases),
            f"real: open_ms labeled ({len(self.real.labeled_cases)})": summarise_cases(self.real.labeled_cases),
        }

    @property
    def table(self) -> str:
        return format_table(self.columns())

    def __str__(self) -> str:
        return (f"Realism report: {self.source}; {self.seconds:.0f} s\n{self.table}\n"
                "Real data: Lesjak et al. 2018, Neuroinformatics, doi:10.1007/s12021-017-9348-7 (CC-BY); "
                "ventricles/WM from the MNI ICBM152 2009a template.")

    def to_json(self) -> dict:
        return {"source": self.source, "seconds": self.seconds, "summaries": self.columns(),
                "synthetic_cases": self.synthetic, "real": self.real.to_json()}


def realism_report(
    *, n: int = 200, seed: int = 0, synth_root: str | os.PathLike | None = None,
    real_root: str | os.PathLike | None = None, workers: int = 2,
    work_spacing_mm: float = REPORT_SPACING_MM, progress: Callable[[str], None] | None = None,
) -> RealismReport:
    """Compare synthetic lesions with real ones.

    Parameters
    ----------
    n, seed : how many cases to generate, and the run's seed (ignored when ``synth_root`` is given)
    synth_root : a folder written by ``wmhkit synth`` to read instead of generating
    real_root : the open_ms folder to recompute the real statistics from (minutes: 30 registrations);
        None uses the statistics shipped with the package
    workers : processes generating cases
    work_spacing_mm : grid of generated cases (see :func:`generated_stats`)
    """
    started = time.perf_counter()
    if synth_root is not None:
        synthetic = folder_stats(synth_root, progress)
        source = f"{len(synthetic)} synthetic cases read from {synth_root}"
    else:
        synthetic = generated_stats(n, seed, work_spacing_mm=work_spacing_mm, workers=workers,
                                    progress=progress)
        source = (f"{n} synthetic cases generated (seed {seed}, {work_spacing_mm:g} mm grid, "
                  f"{workers} worker{'s' if workers != 1 else ''})")
    real = real_lesion_stats(real_root, progress) if real_root is not None else shipped_real_stats()
    return RealismReport(synthetic, real, time.perf_counter() - started, source)


# ------------------------------------------------------------------------------------------------ CLI


def add_report_arguments(parser) -> None:
    """The ``--report`` options of ``wmhkit synth`` (kept here so the command needs one call)."""
    group = parser.add_argument_group("realism report")
    group.add_argument("--report", action="store_true",
                       help="instead of writing cases, print statistics of synthetic vs real lesions "
                            "(volume, count, distance to ventricles, FLAIR and T1 contrast)")
    group.add_argument("--report-n", type=int, default=200, metavar="N",
                       help="synthetic cases to generate for the report (default 200)")
    group.add_argument("--report-from", type=Path, default=None, metavar="DIR",
                       help="report on cases a previous `wmhkit synth` run wrote to DIR instead")
    group.add_argument("--report-workers", type=int, default=min(2, os.cpu_count() or 1), metavar="K",
                       help="processes generating report cases (default: 2 or the CPU count)")
    group.add_argument("--report-spacing", type=float, default=REPORT_SPACING_MM, metavar="MM",
                       help=f"grid of report cases in mm (default {REPORT_SPACING_MM:g}; 1 is slower)")
    group.add_argument("--real-root", type=Path, default=None, metavar="DIR",
                       help="open_ms folder to recompute the real statistics from (default: the "
                            "statistics shipped with wmhkit)")
    group.add_argument("--report-json", type=Path, default=None, metavar="FILE",
                       help="also write the report (summaries and per-case values) to FILE")


def run_report(args) -> int:
    """Run the report for parsed ``args`` (see :func:`add_report_arguments`); returns the exit code."""
    import sys

    from wmhkit.io import write_json

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = realism_report(
        n=args.report_n, seed=int(getattr(args, "seed", 0) or 0), synth_root=args.report_from,
        real_root=args.real_root, workers=args.report_workers, work_spacing_mm=args.report_spacing,
        progress=progress,
    )
    print(report)
    if args.report_json is not None:
        write_json(args.report_json, report.to_json(), force=bool(getattr(args, "force", False)))
    return 0
