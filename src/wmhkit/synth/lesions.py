"""White matter hyperintensities on the working grid: load, pattern and shape.

Each sample draws a load category (none / mild / moderate / severe, skewed to small loads and
shifted towards heavier loads with the atrophy "age" parameter), a target volume, and mixes
procedural and real shapes until the target is reached:

* periventricular halo: caps at the frontal and occipital horns and a smooth rim/band along the
  ventricles, its thickness modulated by smooth noise;
* deep patches: thresholded smooth noise inside deep white matter, biased towards the ventricles
  (patchy, becoming confluent in severe cases);
* punctate deep lesions: small soft ellipsoids, 1 voxel to a few mm;
* real shapes: connected components of 30 real consensus MS lesion masks (``lesion_library.npz``),
  placed at their normalised position in the brain's bounding box and trimmed to white matter.

The result is a *lesion fraction* map in [0, 1] (soft edges) that is zero outside cerebral white
matter; the image grid label is this fraction resampled and thresholded at 0.5.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from wmhkit.synth.anatomy import ASSETS, NONBRAIN_CLASSES, WM_CLASSES, WarpedAnatomy, load_atlas
from wmhkit.synth.fields import smooth_noise

SEVERITIES = ("none", "mild", "moderate", "severe")
# Target lesion load (ml) per category: log-uniform within the range.
LOAD_RANGE_ML = {"none": (0.0, 0.0), "mild": (0.05, 3.0), "moderate": (3.0, 15.0), "severe": (15.0, 80.0)}
# The 3 labeled open MS cases (Lesjak et al. patients 07, 19, 26) validate every network trained on
# synthesis; their consensus masks are also among the 30 lesion masks, so their components are never
# pasted into synthetic brains (the validation would otherwise have seen its own lesion shapes).
HELD_OUT_PATIENTS = (7, 19, 26)
# MNI y (mm) of the middle of the lateral ventricles; caps sit at both ends.
VENTRICLE_MID_Y = -15.0


def draw_severity(rng: np.random.Generator, age: float) -> str:
    """Load category; about 14% lesion-free overall, severe loads (> 15 ml) in about a quarter of
    samples, mostly 'old' ones (averaged over age: none 0.14, mild 0.26, moderate 0.30, severe 0.30).
    Achieved volumes fall short of the target by ~10-40 % (trimming to WM, the 0.5 threshold)."""
    p_none = 0.22 - 0.16 * age
    p_severe = 0.15 + 0.30 * age
    p_moderate = 0.24 + 0.12 * age
    probs = np.array([p_none, 1.0 - p_none - p_severe - p_moderate, p_moderate, p_severe])
    return SEVERITIES[int(rng.choice(4, p=probs / probs.sum()))]


def draw_target_ml(rng: np.random.Generator, severity: str) -> float:
    lo, hi = LOAD_RANGE_ML[severity]
    return 0.0 if hi == 0 else float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


@lru_cache(maxsize=1)
def load_library() -> dict[str, np.ndarray]:
    """Real lesion components: bit-packed crops (RAS, 1 mm) and their normalised centroids."""
    with np.load(ASSETS / "lesion_library.npz") as npz:
        return {k: npz[k] for k in npz.files}


def library_component(lib: dict, index: int) -> np.ndarray:
    """Component ``index`` as a bool array (its bounding-box crop, 1 mm, RAS axes)."""
    shape = tuple(int(s) for s in lib["shapes"][index])
    bits = lib["bits"][lib["offsets"][index] : lib["offsets"][index + 1]]
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)


def make_lesions(
    rng: np.random.Generator,
    anat: WarpedAnatomy,
    spacing_mm: float,
    severity: str,
    target_ml: float,
) -> tuple[np.ndarray, dict]:
    """Lesion fraction map on the working grid.

    Parameters
    ----------
    anat : warped anatomy (labels, signed ventricle distance in mm, atlas y coordinate)
    spacing_mm : isotropic working voxel size
    severity, target_ml : from :func:`draw_severity` / :func:`draw_target_ml`

    Returns
    -------
    frac : float32 (X, Y, Z) in [0, 1], zero outside cerebral white matter
    info : dict with the shape sources used and what each contributed (ml)
    """
    shape = anat.labels.shape
    frac = np.zeros(shape, np.float32)
    info: dict = {"severity": severity, "target_ml": round(target_ml, 3), "sources": [], "real_patients": []}
    if severity == "none" or target_ml <= 0:
        return frac, info
    atlas = load_atlas()
    wm = np.isin(anat.labels, atlas.ids(WM_CLASSES))
    voxel_ml = spacing_mm**3 / 1000.0
    mode = rng.choice(["procedural", "real", "both"], p=[0.4, 0.25, 0.35])
    real_share = {"procedural": 0.0, "real": 1.0, "both": float(rng.uniform(0.25, 0.75))}[str(mode)]
    budget = target_ml / voxel_ml
    # Procedural budget split between halo, deep patches and punctate lesions, by severity.
    shares = {"mild": (0.45, 0.0, 0.55), "moderate": (0.5, 0.3, 0.2), "severe": (0.45, 0.45, 0.1)}[severity]
    shares = np.array(shares) * rng.uniform(0.6, 1.4, 3)
    shares = shares / shares.sum() * (1.0 - real_share)
    contributions = {}

    if shares[0] > 0:
        halo = _periventricular_halo(rng, anat, wm, spacing_mm, shares[0] * budget)
        np.maximum(frac, halo, out=frac)
        contributions["periventricular_halo"] = float(halo.sum() * voxel_ml)
    if shares[1] > 0:
        patches = _deep_patches(rng, anat, wm, spacing_mm, shares[1] * budget)
        np.maximum(frac, patches, out=frac)
        contributions["deep_patches"] = float(patches.sum() * voxel_ml)
    if shares[2] > 0:
        n_punct = _punctate(rng, anat, wm, spacing_mm, shares[2] * budget, frac)
        contributions["punctate"] = n_punct
    if real_share > 0:
        patients = _real_components(rng, anat, wm, spacing_mm, real_share * budget, frac)
        info["real_patients"] = sorted(set(patients))
        contributions["real_components"] = len(patients)
    frac *= wm
    info["sources"] = [k for k, v in contributions.items() if v]
    info["contributions"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in contributions.items()}
    return frac, info


def _box(mask: np.ndarray, margin: int = 2) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    if idx.size == 0:
        return tuple(slice(0, 0) for _ in mask.shape)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, mask.shape)
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def _periventricular_halo(rng, anat: WarpedAnatomy, wm, spacing, budget_vox) -> np.ndarray:
    """Caps and a rim along the ventricles whose thickness is tuned to ``budget_vox`` voxels."""
    out = np.zeros(anat.labels.shape, np.float32)
    region = wm & (anat.d_vent < 16.0) & (anat.d_vent > 0.0)
    box = _box(region)
    if region[box].size == 0 or budget_vox < 1:
        return out
    d = anat.d_vent[box]
    inside = region[box]
    # Caps: thicker at the frontal and occipital horns (far from the ventricles' middle in y).
    cap = np.clip((np.abs(anat.atlas_y[box] - VENTRICLE_MID_Y) - 12.0) / 20.0, 0.0, 1.0)
    # Small loads are mostly caps; large ones add a continuous rim/band.
    base = rng.uniform(0.0, 0.3) if budget_vox * spacing**3 < 2000 else rng.uniform(0.2, 1.0)
    gain = rng.uniform(0.8, 3.0)
    noise = smooth_noise(rng, d.shape, rng.uniform(5.0, 12.0) / spacing)
    profile = (base + gain * cap) * np.clip(1.0 + 0.6 * noise, 0.1, 2.5)
    # Halo volume grows monotonically with the thickness scale t0: bisect to the budget.
    lo, hi = 0.0, 14.0
    for _ in range(9):
        t0 = 0.5 * (lo + hi)
        vol = float(_halo_fraction(t0 * profile, d, spacing, inside).sum())
        lo, hi = (t0, hi) if vol < budget_vox else (lo, t0)
    soft = _drop_specks(_halo_fraction(lo * profile, d, spacing, inside))
    out[box] = soft
    return out


def _drop_specks(frac: np.ndarray, min_voxels: int = 3) -> np.ndarray:
    """Remove islands of fewer than ``min_voxels`` labelled (>= 0.5) voxels from a lesion fraction map.

    Thresholding smooth fields leaves 1-2 voxel crumbs along the edges of halos and patches that would
    inflate lesion counts far beyond clinical ones; deliberate small lesions come from _punctate.
    """
    lab, n = ndi.label(frac >= 0.5, structure=np.ones((3, 3, 3)))
    if n == 0:
        return frac
    small = np.flatnonzero(np.bincount(lab.ravel(), minlength=n + 1)[1:] < min_voxels) + 1
    if small.size:
        frac = frac.copy()
        frac[np.isin(lab, small)] = 0.0
    return frac


def _halo_fraction(thickness, d, spacing, inside):
    """Partial volume of a band of ``thickness`` mm next to the ventricle in voxels at distance ``d``.

    Half a voxel at the band's edge; never more than the band's own thickness relative to the voxel, so
    a vanishing band contributes nothing.
    """
    edge = np.clip((thickness - d) / spacing + 0.5, 0.0, 1.0)
    return (edge * np.clip(thickness / spacing, 0.0, 1.0) * inside).astype(np.float32)


def _deep_patches(rng, anat: WarpedAnatomy, wm, spacing, budget_vox) -> np.ndarray:
    """Thresholded smooth noise in white matter, biased towards the ventricles."""
    out = np.zeros(anat.labels.shape, np.float32)
    box = _box(wm)
    cand = wm[box]
    n_cand = int(cand.sum())
    k = int(min(budget_vox, 0.5 * n_cand))
    if k < 1:
        return out
    scale = rng.uniform(3.0, 9.0) / spacing
    field = smooth_noise(rng, cand.shape, scale) + 0.3 * smooth_noise(rng, cand.shape, scale / 2.5)
    # Patches concentrate near the ventricles (~1 std per 25 mm).
    field -= np.clip(anat.d_vent[box], 0, None) * rng.uniform(0.02, 0.06)
    values = field[cand]
    thr = np.partition(values, n_cand - k)[n_cand - k]
    out[box] = _drop_specks(np.clip((field - thr) / 0.12 + 0.5, 0.0, 1.0) * cand)
    return out


def _punctate(rng, anat: WarpedAnatomy, wm, spacing, budget_vox, frac) -> int:
    """Add small soft ellipsoids in deep/juxtacortical WM into ``frac``; returns their number."""
    cand = wm & (anat.d_vent > 3.0)
    idx = np.flatnonzero(cand)
    if idx.size == 0:
        return 0
    placed, used = 0, 0.0
    while used < budget_vox and placed < 100:
        # Radii skewed to small: many dots of 1-3 voxels, some of a few mm.
        r = np.exp(rng.uniform(np.log(0.55), np.log(3.5))) * rng.uniform(0.7, 1.3, 3)
        centre = np.array(np.unravel_index(idx[rng.integers(idx.size)], wm.shape), dtype=float)
        centre += rng.uniform(-0.5, 0.5, 3)
        half = np.ceil(r.max() / spacing + 1.5).astype(int)
        lo = np.maximum(centre.astype(int) - half, 0)
        hi = np.minimum(centre.astype(int) + half + 1, wm.shape)
        if np.any(hi <= lo):
            continue
        grids = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        rho = np.sqrt(sum(((g - c) * spacing / rr) ** 2 for g, c, rr in zip(grids, centre, r)))
        # Soft edge about one voxel wide, in units of the mean radius.
        soft = np.clip((1.0 - rho) * r.mean() / spacing + 0.5, 0.0, 1.0).astype(np.float32)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        np.maximum(frac[sl], soft * wm[sl], out=frac[sl])
        used += float(soft.sum())
        placed += 1
    return placed


def _real_components(rng, anat: WarpedAnatomy, wm, spacing, budget_vox, frac) -> list[int]:
    """Paste real lesion components (trimmed to WM) into ``frac``; returns their source patients."""
    lib = load_library()
    atlas = load_atlas()
    nonbrain = set(atlas.ids(NONBRAIN_CLASSES)) | {0}
    brain = np.isin(anat.labels, [k for k in atlas.names if k not in nonbrain])
    idx = np.argwhere(brain)
    if idx.size == 0:
        return []
    blo, bhi = idx.min(0), idx.max(0)
    vox_mm3 = spacing**3
    sizes_vox = lib["voxels"] / vox_mm3  # component sizes in working voxels
    usable = ~np.isin(lib["patient"], HELD_OUT_PATIENTS)
    patients: list[int] = []
    used, tries = 0.0, 0
    while used < budget_vox * 0.9 and tries < 400:
        tries += 1
        remaining = budget_vox - used
        ok = np.flatnonzero(usable & (sizes_vox <= max(remaining * 1.3, 3.0)))
        if ok.size == 0:
            break
        # Large remaining budgets favour large components, so severe loads are reached in few pastes.
        alpha = float(np.clip(np.log10(max(remaining, 1.0)) / 4.0, 0.0, 0.9))
        weights = sizes_vox[ok] ** alpha
        i = int(ok[rng.choice(ok.size, p=weights / weights.sum())])
        comp = library_component(lib, i).astype(np.float32)
        for axis in range(3):
            if rng.random() < 0.5:
                comp = np.flip(comp, axis)
        zoom = rng.uniform(0.85, 1.2) / spacing
        if abs(zoom - 1.0) > 0.02:
            comp = np.clip(ndi.zoom(comp, zoom, order=1, prefilter=False), 0.0, 1.0)
        if comp.sum() < 0.5:
            continue
        centre = blo + lib["centroid"][i] * (bhi - blo) + rng.normal(0, 3.0 / spacing, 3)
        for _attempt in range(3):
            lo = np.rint(centre - np.array(comp.shape) / 2).astype(int)
            hi = lo + comp.shape
            if np.any(lo < 0) or np.any(hi > np.array(wm.shape)):
                centre = centre + rng.normal(0, 4.0 / spacing, 3)
                continue
            sl = tuple(slice(a, b) for a, b in zip(lo, hi))
            inside = float((comp * wm[sl]).sum()) / float(comp.sum())
            if inside >= 0.6:
                trimmed = comp * wm[sl]
                np.maximum(frac[sl], trimmed, out=frac[sl])
                used += float(trimmed.sum())
                patients.append(int(lib["patient"][i]))
                break
            centre = centre + rng.normal(0, 4.0 / spacing, 3)
    return patients
