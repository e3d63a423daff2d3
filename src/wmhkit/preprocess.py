"""Preprocessing stages: orientation, resampling, bias correction, registration, normalisation, top-hat.

Each stage is a function on numpy arrays of shape (X, Y, Z) plus their 4x4 voxel-to-world affines (RAS+,
mm), usable alone. SimpleITK does the heavy lifting; the conversion between a (data, affine) pair and a
SimpleITK image (which lives in LPS with (z, y, x) arrays) is kept here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nibabel.orientations as nio
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

# RAS <-> LPS: ITK's physical space flips the first two world axes.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "label": sitk.sitkNearestNeighbor,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
}


# ------------------------------------------------------------------------------ SimpleITK conversions


def to_sitk(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image with the voxels of ``data`` (X, Y, Z) placed by the RAS ``affine``."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0)))
    set_sitk_geometry(image, affine)
    return image


def set_sitk_geometry(image: sitk.Image, affine: np.ndarray) -> None:
    """Give a SimpleITK image the geometry of a RAS voxel-to-world affine."""
    affine = np.asarray(affine, dtype=float)
    linear = _RAS_TO_LPS @ affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (linear / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in _RAS_TO_LPS @ affine[:3, 3]))


def from_sitk(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(data (X, Y, Z), RAS affine) of a SimpleITK image."""
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return np.ascontiguousarray(data), sitk_affine(image)


def sitk_affine(image: sitk.Image) -> np.ndarray:
    """The RAS voxel-to-world affine of a SimpleITK image's geometry."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _RAS_TO_LPS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = _RAS_TO_LPS @ np.asarray(image.GetOrigin(), dtype=float)
    return affine


# -------------------------------------------------------------------------------------- orientation


@dataclass(frozen=True)
class Reorientation:
    """How a volume was permuted/flipped into RAS voxel order, to undo it exactly."""

    to_ras: np.ndarray  # nibabel orientation array, native -> RAS
    native_shape: tuple[int, int, int]


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, Reorientation]:
    """Permute/flip voxels so that array axes run closest to R, A, S. No interpolation.

    Returns (data, affine, reorientation); :func:`from_canonical` undoes it exactly. Oblique affines
    stay oblique: only the axis order and signs change.
    """
    native = nio.io_orientation(affine)
    target = nio.axcodes2ornt(("R", "A", "S"))
    to_ras = nio.ornt_transform(native, target)
    canonical = nio.apply_orientation(data, to_ras)
    new_affine = affine @ nio.inv_ornt_aff(to_ras, data.shape)
    return np.ascontiguousarray(canonical), new_affine, Reorientation(to_ras, tuple(data.shape))


def from_canonical(data: np.ndarray, reorientation: Reorientation) -> np.ndarray:
    """Undo :func:`to_canonical` on an array of the canonical shape (labels, probabilities...)."""
    back = nio.ornt_transform(nio.axcodes2ornt(("R", "A", "S")), _native_codes(reorientation))
    restored = nio.apply_orientation(data, back)
    if restored.shape != reorientation.native_shape:
        raise ValueError(f"array of shape {data.shape} is not on the canonical grid of this volume")
    return np.ascontiguousarray(restored)


def _native_codes(reorientation: Reorientation) -> np.ndarray:
    # to_ras maps native axes to RAS; inverting it gives the native orientation relative to RAS.
    native = np.zeros_like(reorientation.to_ras)
    for axis, (target_axis, flip) in enumerate(reorientation.to_ras):
        native[axis] = (target_axis, flip)
    return native


# --------------------------------------------------------------------------------------- resampling


def working_grid(
    shape: tuple[int, int, int], affine: np.ndarray, spacing: float | tuple[float, float, float]
) -> tuple[tuple[int, int, int], np.ndarray]:
    """A grid covering the same field of view with voxels of ``spacing`` mm along the same axes.

    The outer edges of the field of view are kept (voxel centres shift by half the size change), so a
    label map resampled to a finer grid and back comes back unchanged.
    """
    affine = np.asarray(affine, dtype=float)
    old = np.linalg.norm(affine[:3, :3], axis=0)
    new = np.broadcast_to(np.asarray(spacing, dtype=float), (3,))
    new_shape = np.maximum(1, np.round(np.asarray(shape) * old / new)).astype(int)
    # Exact spacing that tiles the field of view with whole voxels.
    new = old * np.asarray(shape) / new_shape
    directions = affine[:3, :3] / old
    new_affine = np.eye(4)
    new_affine[:3, :3] = directions * new
    first_corner = affine[:3, :3] @ np.full(3, -0.5) + affine[:3, 3]
    new_affine[:3, 3] = first_corner + new_affine[:3, :3] @ np.full(3, 0.5)
    return tuple(int(n) for n in new_shape), new_affine


def resample(
    data: np.ndarray,
    affine: np.ndarray,
    target_shape: tuple[int, int, int],
    target_affine: np.ndarray,
    *,
    kind: str = "linear",
    fill: float = 0.0,
) -> np.ndarray:
    """Resample ``data`` onto another grid in world space.

    kind: "linear" (images, probability maps; float32 out), "label"/"nearest" (label maps; dtype kept),
    "bspline". Voxels of the target outside the source field of view get ``fill``.
    Returns an array of ``target_shape``.
    """
    if kind not in _INTERPOLATORS:
        raise ValueError(f"kind must be one of {sorted(_INTERPOLATORS)}")
    source = np.asarray(data)
    if kind in ("linear", "bspline"):
        source = source.astype(np.float32, copy=False)
    elif source.dtype == bool:
        source = source.astype(np.uint8)
    reference = sitk.Image([int(n) for n in target_shape], sitk.sitkUInt8)
    set_sitk_geometry(reference, target_affine)
    moved = sitk.Resample(
        to_sitk(source, affine), reference, sitk.Transform(), _INTERPOLATORS[kind], float(fill)
    )
    out = sitk.GetArrayFromImage(moved).transpose(2, 1, 0)
    if np.asarray(data).dtype == bool:
        out = out.astype(bool)
    return np.ascontiguousarray(out)


# ----------------------------------------------------------------------------------- bias correction


def n4_bias_correct(
    image: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    fit_spacing_mm: float = 8.0,
    iterations: tuple[int, ...] = (50, 40, 30),
    control_points: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """N4 bias-field correction fitted on a shrunken copy, applied at full resolution.

    Parameters
    ----------
    image : (X, Y, Z) intensities (> 0 where it matters)
    affine : its 4x4 RAS affine
    mask : (X, Y, Z) bool, voxels used for the fit (default: image > 0)
    fit_spacing_mm : the field is fitted on a copy shrunk by whole factors to about this voxel size
        (bench/preprocess_speed.py: 8 mm removes a ±30 % bias as well as 4 mm, in a fraction of the
        time; the field is smooth, so finer fits only cost time)
    iterations : per fitting level (one level per entry)

    Returns (corrected float32 image, bias field float32) with ``image == corrected * field``.
    """
    image = np.asarray(image, dtype=np.float32)
    mask = image > 0 if mask is None else np.asarray(mask, dtype=bool)
    full = to_sitk(image, affine)
    full_mask = to_sitk(mask.astype(np.uint8), affine)
    factors = _shrink_factors(np.linalg.norm(np.asarray(affine)[:3, :3], axis=0), image.shape,
                              fit_spacing_mm)
    small = sitk.Shrink(full, factors)
    small_mask = sitk.Shrink(full_mask, factors)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(n) for n in iterations])
    corrector.SetNumberOfControlPoints([control_points] * 3)
    corrector.Execute(small, small_mask)
    log_field = corrector.GetLogBiasFieldAsImage(full)
    bias = np.exp(sitk.GetArrayFromImage(log_field).transpose(2, 1, 0)).astype(np.float32)
    return image / bias, bias


def _shrink_factors(spacing: np.ndarray, shape, fit_spacing_mm: float) -> list[int]:
    # Whole shrink factors towards fit_spacing_mm per axis, never below 8 voxels along an axis.
    factors = np.clip(np.round(fit_spacing_mm / spacing), 1, None).astype(int)
    factors = np.minimum(factors, np.maximum(1, np.asarray(shape) // 8))
    return [int(f) for f in factors]


# ------------------------------------------------------------------------------------- registration


class RegistrationFailed(RuntimeError):
    """Rigid registration ended in an implausible place."""


@dataclass
class RigidResult:
    """A rigid world transform and how the optimiser got there.

    ``fixed_to_moving`` (4x4, RAS mm) maps a point of the fixed image to the same anatomy in the moving
    image; ``metric`` is the final Mattes mutual information (more negative is better).
    """

    fixed_to_moving: np.ndarray
    metric: float
    initial_metric: float
    iterations: int
    stop_condition: str
    rotation_deg: float = field(default=0.0)
    translation_mm: float = field(default=0.0)


def register_rigid(
    moving: np.ndarray,
    moving_affine: np.ndarray,
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    *,
    shrink_factors: tuple[int, ...] = (2, 1),
    smoothing_mm: tuple[float, ...] = (2.0, 0.0),
    sampling: float = 0.25,
    iterations: int = 300,
    seed: int = 1,
    max_rotation_deg: float = 30.0,
    max_translation_mm: float = 60.0,
    min_mutual_information: float = 0.05,
    initialize: str = "header",
    working_spacing_mm: float = 2.0,
) -> RigidResult:
    """Rigid (6-parameter) registration of ``moving`` onto ``fixed`` by Mattes mutual information.

    Both images are first resampled to voxels of at least ``working_spacing_mm`` (a rigid fit needs no
    finer detail and this makes it fast), then registered multi-resolution (``shrink_factors`` with
    ``smoothing_mm``), started from the scanner geometry in the
    headers (``initialize="header"``, right for scans of one session) or from the centres of mass
    (``"moments"``). If the optimum is no better than the headers' alignment, the headers' alignment is
    kept. Deterministic for a given ``seed`` (random metric sampling). Raises
    :class:`RegistrationFailed` when the result is implausible for two scans of one head: a rotation
    over ``max_rotation_deg``, a translation over ``max_translation_mm``, or mutual information below
    ``min_mutual_information`` (nats) at the end.
    """
    fixed_image = _coarse_sitk(fixed, fixed_affine, working_spacing_mm)
    moving_image = _coarse_sitk(moving, moving_affine, working_spacing_mm)
    identity = sitk.Euler3DTransform()
    identity.SetCenter(_image_centre_lps(fixed_image))
    if initialize == "moments":
        start = sitk.CenteredTransformInitializer(
            fixed_image, moving_image, sitk.Euler3DTransform(),
            sitk.CenteredTransformInitializerFilter.MOMENTS,
        )
    elif initialize == "header":
        start = identity
    else:
        raise ValueError("initialize must be 'header' or 'moments'")
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, seed)
    method.SetInterpolator(sitk.sitkLinear)
    # A slow step relaxation: faster ones stopped early on noisy sampled gradients in tests.
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=iterations, relaxationFactor=0.8
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(smoothing_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(start, inPlace=False)
    identity_metric = _metric_at(fixed_image, moving_image, identity)
    transform = method.Execute(fixed_image, moving_image)
    final_metric = _metric_at(fixed_image, moving_image, transform)
    if final_metric > identity_metric:
        # Scans of one session are often aligned already; the optimiser's wander is then no gain.
        transform, final_metric = identity, identity_metric
    matrix = _transform_to_ras(transform)
    rotation = _rotation_angle_deg(matrix[:3, :3])
    translation = float(np.linalg.norm(_centre_displacement(matrix, fixed_image)))
    result = RigidResult(
        fixed_to_moving=matrix,
        metric=final_metric,
        initial_metric=identity_metric,
        iterations=int(method.GetOptimizerIteration()),
        stop_condition=method.GetOptimizerStopConditionDescription(),
        rotation_deg=rotation,
        translation_mm=translation,
    )
    if rotation > max_rotation_deg or translation > max_translation_mm:
        raise RegistrationFailed(
            f"implausible rigid transform (rotation {rotation:.1f} deg, shift {translation:.1f} mm)"
        )
    if final_metric > -min_mutual_information:
        raise RegistrationFailed(
            f"images share almost no information after registration (MI {-final_metric:.3f})"
        )
    return result


def apply_rigid(
    moving: np.ndarray,
    moving_affine: np.ndarray,
    result: RigidResult,
    fixed_shape: tuple[int, int, int],
    fixed_affine: np.ndarray,
    *,
    kind: str = "linear",
) -> np.ndarray:
    """``moving`` resampled onto the fixed grid through a registration result."""
    # Composing the transform into the moving affine keeps this a plain grid-to-grid resample.
    moved_affine = np.linalg.inv(result.fixed_to_moving) @ np.asarray(moving_affine, dtype=float)
    return resample(moving, moved_affine, fixed_shape, fixed_affine, kind=kind)


def _coarse_sitk(data: np.ndarray, affine: np.ndarray, spacing_mm: float) -> sitk.Image:
    native = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    target = np.maximum(native, spacing_mm)
    image = np.asarray(data, dtype=np.float32)
    if np.allclose(target, native):
        return to_sitk(image, affine)
    shape, coarse_affine = working_grid(image.shape, affine, target)
    # Blurring before decimation keeps the coarse image free of aliasing (sigma in native voxels).
    sigma = 0.5 * np.sqrt(np.maximum((target / native) ** 2 - 1, 0))
    smooth = ndimage.gaussian_filter(image, sigma)
    return to_sitk(resample(smooth, affine, shape, coarse_affine), coarse_affine)


def _image_centre_lps(image: sitk.Image) -> tuple[float, float, float]:
    size = np.asarray(image.GetSize(), dtype=float)
    return image.TransformContinuousIndexToPhysicalPoint(tuple((size - 1) / 2))


def _metric_at(fixed_image, moving_image, transform) -> float:
    evaluator = sitk.ImageRegistrationMethod()
    evaluator.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    evaluator.SetMetricSamplingStrategy(evaluator.NONE)
    evaluator.SetInterpolator(sitk.sitkLinear)
    evaluator.SetInitialTransform(transform)
    return float(evaluator.MetricEvaluate(fixed_image, moving_image))


def _transform_to_ras(transform: sitk.Transform) -> np.ndarray:
    """4x4 RAS matrix of a linear ITK transform (which maps fixed LPS points to moving LPS points)."""
    # Reading the transform off four mapped points works for any linear transform or composite of them.
    origin = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    lps = np.eye(4)
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 1.0
        lps[:3, axis] = np.asarray(transform.TransformPoint(tuple(unit))) - origin
    lps[:3, 3] = origin
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip


def _rotation_angle_deg(rotation: np.ndarray) -> float:
    cos = np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)))


def _centre_displacement(matrix: np.ndarray, fixed_image: sitk.Image) -> np.ndarray:
    centre = _RAS_TO_LPS @ np.asarray(_image_centre_lps(fixed_image))
    return matrix[:3, :3] @ centre + matrix[:3, 3] - centre


# ------------------------------------------------------------------------------------ normalisation


def zscore(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(image - mean) / std with statistics inside ``mask``; zero outside it; float32."""
    mask = np.asarray(mask, dtype=bool)
    values = image[mask].astype(np.float64)
    std = values.std() or 1.0
    return np.where(mask, (image - values.mean()) / std, 0).astype(np.float32)


def percentile_scale(
    image: np.ndarray, mask: np.ndarray, low: float = 1.0, high: float = 99.0
) -> np.ndarray:
    """Map the ``low``..``high`` percentiles inside ``mask`` to 0..1 (clipped); zero outside; float32."""
    mask = np.asarray(mask, dtype=bool)
    lo, hi = np.percentile(image[mask], [low, high])
    scaled = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.where(mask, scaled, 0).astype(np.float32)


# ------------------------------------------------------------------------------------------ top-hat


def area_opening(image: np.ndarray, area: int, *, per_slice: bool = True) -> np.ndarray:
    """Grey-level area opening (max-tree): removes bright structures smaller than ``area`` voxels.

    ``per_slice``: work on each (X, Y) slice alone with the area in pixels (what 2D networks see);
    otherwise in 3D with the area in voxels. Returns float32 of image's shape.
    """
    image = np.asarray(image, dtype=np.float32)
    if not per_slice:
        opened = sitk.AreaOpening(sitk.GetImageFromArray(image), float(area), False, False)
        return sitk.GetArrayFromImage(opened)
    out = np.empty_like(image)
    for z in range(image.shape[2]):
        opened = sitk.AreaOpening(
            sitk.GetImageFromArray(np.ascontiguousarray(image[:, :, z])), float(area), False, False
        )
        out[:, :, z] = sitk.GetArrayFromImage(opened)
    return out


def area_tophat(image: np.ndarray, area: int = 25, *, per_slice: bool = True) -> np.ndarray:
    """White area top-hat: image minus its area opening; small bright details (candidate lesions)."""
    image = np.asarray(image, dtype=np.float32)
    return image - area_opening(image, area, per_slice=per_slice)


# ------------------------------------------------------------------ 2D networks: axial slice stacks


@dataclass(frozen=True)
class SliceStackGeometry:
    """How a canonical (RAS) volume became a stack of square axial slices, to map predictions back.

    box : (x0, x1, y0, y1) in-plane voxel window (may reach outside the volume: zero-padded)
    canonical_shape : (X, Y, Z) of the canonical volume
    size : side of the square slices (pixels)
    """

    box: tuple[int, int, int, int]
    canonical_shape: tuple[int, int, int]
    size: int


def mask_bounding_box(mask: np.ndarray, margin=0) -> tuple[slice, ...] | None:
    """Bounding box of a mask's non-zero voxels grown by ``margin`` voxels (an int, or one per axis),
    clipped to the array; None when the mask is empty."""
    mask = np.asarray(mask) != 0
    if not mask.any():
        return None
    margins = np.broadcast_to(np.asarray(margin, int), (mask.ndim,))
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(max(0, hit[0] - margins[axis])), int(min(mask.shape[axis], hit[-1] + margins[axis] + 1))))
    return tuple(box)


def brain_box(brain: np.ndarray, spacing_xy: tuple[float, float], margin_mm: float = 10.0) -> tuple[int, int, int, int]:
    """Square (in mm) in-plane window around a canonical brain mask's extent over all slices (the
    2D U-Net's "brain field-of-view crop"); the whole slice when the mask is empty."""
    shape = brain.shape
    if not brain.any():
        return 0, shape[0], 0, shape[1]
    xs = np.flatnonzero(brain.any(axis=(1, 2)))
    ys = np.flatnonzero(brain.any(axis=(0, 2)))
    centre = np.array([(xs[0] + xs[-1] + 1) / 2, (ys[0] + ys[-1] + 1) / 2])
    half_mm = max((xs[-1] + 1 - xs[0]) * spacing_xy[0], (ys[-1] + 1 - ys[0]) * spacing_xy[1]) / 2 + margin_mm
    half = half_mm / np.asarray(spacing_xy, dtype=float)
    lo = np.floor(centre - half).astype(int)
    hi = np.ceil(centre + half).astype(int)
    return int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1])


def to_slice_stack(channels: np.ndarray, box: tuple[int, int, int, int], size: int, *, labels: bool = False) -> np.ndarray:
    """Crop canonical (C, X, Y, Z) volumes to ``box`` (zero outside the volume) and resize each axial
    slice to size x size; returns (Z, C, size, size) float32. ``labels`` resizes by nearest neighbour."""
    import torch
    from torch.nn import functional as F

    channels = np.asarray(channels, dtype=np.float32)
    x0, x1, y0, y1 = box
    pad = [(0, 0), (max(0, -x0), max(0, x1 - channels.shape[1])), (max(0, -y0), max(0, y1 - channels.shape[2])), (0, 0)]
    padded = np.pad(channels, pad)
    crop = padded[:, x0 + pad[1][0]: x1 + pad[1][0], y0 + pad[2][0]: y1 + pad[2][0]]
    stack = torch.from_numpy(np.ascontiguousarray(crop.transpose(3, 0, 1, 2)))
    mode = {"mode": "nearest-exact"} if labels else {"mode": "bilinear", "align_corners": False, "antialias": True}
    return F.interpolate(stack, size=(size, size), **mode).numpy()


def from_slice_stack(stack: np.ndarray, geometry: SliceStackGeometry) -> np.ndarray:
    """(Z, size, size) slice predictions -> (X, Y, Z) canonical volume (bilinear; 0 outside the box)."""
    import torch
    from torch.nn import functional as F

    x0, x1, y0, y1 = geometry.box
    X, Y, Z = geometry.canonical_shape
    resized = F.interpolate(torch.from_numpy(np.asarray(stack, np.float32))[:, None], size=(x1 - x0, y1 - y0),
                            mode="bilinear", align_corners=False)[:, 0].numpy()
    out = np.zeros((X, Y, Z), np.float32)
    sx, sy = slice(max(x0, 0), min(x1, X)), slice(max(y0, 0), min(y1, Y))
    out[sx, sy, :] = resized[:, sx.start - x0: sx.stop - x0, sy.start - y0: sy.stop - y0].transpose(1, 2, 0)
    return out
