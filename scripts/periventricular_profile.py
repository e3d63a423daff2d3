"""FLAIR next to the lateral ventricles, real against synthetic: is the normal periventricular lining right?

Development script (reads the real data beside the checkout; the package never does). Real FLAIR shows a
bright lining along the ventricles that raters of the 3 labeled open_ms cases did not call lesion; if the
generator draws it weaker, thinner or rarer than real scans have it, a network trained on synthesis
labels the whole lining as WMH (FCN-2 did: docs/training.md, session 18).

Measured alike on both, without labels other than the lesion mask:

* ventricles: FLAIR < VENTRICLE_BELOW x the brain median, inside the central box of the brain (30-70 % in x
  and y, 35-70 % of its height), its two largest connected components if at least 2 ml;
* profile: median FLAIR in 1 mm shells at 0-10 mm from the ventricles (Euclidean distance in mm),
  central box only, CSF-dark voxels and lesions dilated by 2 mm left out, / the median of the 8-12 mm shell;
* with --edge, the wall itself: median FLAIR / the brain's median in 0.5 mm bins of the signed distance
  (negative inside) from -2.5 to 5 mm, CSF-dark voxels kept. On a 1 mm grid the first layer outside
  the ventricles falls in (0.5, 1], the diagonal neighbours in (1, 1.5]: how many layers the wall's
  partial volume spans, and whether a brighter lining follows it;
* with --wall, how ragged the ventricles' outline is on axial slices (see wall_roughness);
* with --septum, the wall between the two lateral ventricles, on axial rows (images reoriented to RAS)
  of the central box that cross the ventricles: rows where the ventricle voxels form two runs at most
  SEPTUM_GAP_MM apart give the gap's width and its brightest FLAIR / the brain's median; rows where
  one run crosses the midline are fused (no septum brighter than the ventricle threshold).

Usage:  python scripts/periventricular_profile.py [--n-synth 12] [--seed 11] [--profile research3d] [--clinical]
        [--edge | --septum | --wall]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
from nibabel.affines import voxel_sizes
import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from compare_flair_intensities import flairs_with_brains  # noqa: E402
from wmhkit import datasets, synth  # noqa: E402

VENTRICLE_BELOW = 0.45
SHELLS_MM = np.arange(0, 11)
REFERENCE_MM = (8.0, 12.0)
EDGE_BINS_MM = np.arange(-3.0, 5.01, 0.5)
# Two ventricle runs further apart than this on a row are not the frontal horns and the septum between
# them (the third ventricle's level, or the atria either side of the thalami).
SEPTUM_GAP_MM = 6.0
WALL_SMOOTH_MM = 2.0
WALL_MIN_AREA_MM2 = 100.0


def central_box(brain: np.ndarray) -> np.ndarray:
    idx = np.argwhere(brain)
    lo, hi = idx.min(0), idx.max(0)
    box = np.zeros(brain.shape, bool)
    span = hi - lo
    sl = [slice(int(lo[a] + 0.3 * span[a]), int(lo[a] + 0.7 * span[a])) for a in (0, 1)]
    sl.append(slice(int(lo[2] + 0.35 * span[2]), int(lo[2] + 0.7 * span[2])))
    box[tuple(sl)] = True
    return box & brain


def ventricles(flair: np.ndarray, brain: np.ndarray, box: np.ndarray, spacing) -> np.ndarray:
    dark = (flair < VENTRICLE_BELOW * np.median(flair[brain])) & box
    lab, n = ndi.label(dark)
    if n == 0:
        return dark
    sizes = np.bincount(lab.ravel(), minlength=n + 1) * float(np.prod(spacing)) / 1000.0
    # The lateral ventricles: the two largest dark components (sulci in the box are smaller).
    keep = np.argsort(sizes[1:])[::-1][:2] + 1
    return np.isin(lab, keep[sizes[keep] >= 2.0])


def _box_and_ventricles(flair, brain, spacing):
    """(central box, ventricles) of one image, or None when it has no ventricles by the rule above."""
    box = central_box(brain)
    vent = ventricles(flair, brain, box, spacing)
    return None if vent.sum() == 0 else (box, vent)


def _without_lesions(keep: np.ndarray, lesion, spacing) -> np.ndarray:
    if lesion is None:
        return keep
    grow = np.maximum(1, np.round(2.0 / np.asarray(spacing)).astype(int))
    return keep & ~ndi.binary_dilation(lesion > 0, np.ones(2 * grow + 1, bool))


def profile(flair, brain, lesion, spacing) -> np.ndarray | None:
    """Median FLAIR per 1 mm shell (SHELLS_MM) / the reference shell's median; None without ventricles."""
    found = _box_and_ventricles(flair, brain, spacing)
    if found is None:
        return None
    box, vent = found
    dist = ndi.distance_transform_edt(~vent, sampling=spacing)
    keep = _without_lesions(box & ~vent & (flair >= VENTRICLE_BELOW * np.median(flair[brain])), lesion, spacing)
    ref = keep & (dist >= REFERENCE_MM[0]) & (dist < REFERENCE_MM[1])
    ref_median = float(np.median(flair[ref]))
    out = []
    for d in SHELLS_MM:
        shell = keep & (dist > d) & (dist <= d + 1)
        out.append(float(np.median(flair[shell])) / ref_median if shell.sum() > 50 else np.nan)
    return np.array(out)


def edge_profile(flair, brain, lesion, spacing) -> np.ndarray | None:
    """Median FLAIR / the brain's median per EDGE_BINS_MM bin of the signed distance (mm, negative
    inside) from the ventricles; None without ventricles."""
    found = _box_and_ventricles(flair, brain, spacing)
    if found is None:
        return None
    box, vent = found
    signed = ndi.distance_transform_edt(~vent, sampling=spacing) - ndi.distance_transform_edt(vent, sampling=spacing)
    keep = _without_lesions(box, lesion, spacing)
    brain_median = float(np.median(flair[brain]))
    out = []
    for lo, hi in zip(EDGE_BINS_MM[:-1], EDGE_BINS_MM[1:]):
        m = keep & (signed > lo) & (signed <= hi)
        out.append(float(np.median(flair[m])) / brain_median if m.sum() > 50 else np.nan)
    return np.array(out)


def septum_rows(flair, brain, lesion, spacing) -> np.ndarray | None:
    """(share of fused rows, median gap mm, median peak FLAIR / brain median, rows seen) for an image in
    RAS orientation (axis 0 left-right, 2 inferior-superior); None without ventricles. ``lesion`` is
    unused: lesions do not sit in the septum, and the rule reads only ventricle runs."""
    found = _box_and_ventricles(flair, brain, spacing)
    if found is None:
        return None
    _, vent = found
    brain_median = float(np.median(flair[brain]))
    midline = int(round(np.argwhere(brain)[:, 0].mean()))
    fused, gaps, peaks = 0, [], []
    for y, z in np.argwhere(vent.any(0)):
        runs = _runs(np.flatnonzero(vent[:, y, z]))
        if len(runs) == 1 and runs[0][0] <= midline <= runs[0][1]:
            fused += 1
        elif len(runs) == 2:
            (_, a), (b, _) = runs
            width_mm = (b - a - 1) * spacing[0]
            if width_mm <= SEPTUM_GAP_MM:
                gaps.append(width_mm)
                peaks.append(float(flair[a + 1:b, y, z].max()) / brain_median)
    seen = fused + len(gaps)
    if seen == 0:
        return None
    return np.array([fused / seen, np.median(gaps) if gaps else np.nan, np.median(peaks) if peaks else np.nan, seen])


def wall_roughness(flair, brain, lesion, spacing) -> np.ndarray | None:
    """(median wall roughness mm, axial slices seen) for an image in RAS orientation; None without
    ventricles. Per axial slice with at least WALL_MIN_AREA_MM2 of ventricle: the area between the
    ventricles' outline and the same outline smoothed (Gaussian WALL_SMOOTH_MM, cut at one half), over
    the outline's length: how far, on average, the wall wanders from a smooth curve. ``lesion`` is unused
    (lesions are bright and do not move the dark outline)."""
    found = _box_and_ventricles(flair, brain, spacing)
    if found is None:
        return None
    _, vent = found
    pixel_mm2 = float(spacing[0] * spacing[1])
    sigma = [WALL_SMOOTH_MM / float(spacing[0]), WALL_SMOOTH_MM / float(spacing[1])]
    rough = []
    for z in np.flatnonzero(vent.sum(axis=(0, 1)) * pixel_mm2 >= WALL_MIN_AREA_MM2):
        v = vent[:, :, z]
        smooth = ndi.gaussian_filter(v.astype(np.float32), sigma) > 0.5
        outline = v & ~ndi.binary_erosion(v)
        length_mm = outline.sum() * float(np.sqrt(pixel_mm2))
        rough.append((v ^ smooth).sum() * pixel_mm2 / length_mm)
    return None if not rough else np.array([np.median(rough), len(rough)])


# Measures that read axial rows or slices: images are reoriented to RAS first.
AXIAL_MEASURES = (septum_rows, wall_roughness)


def _runs(idx: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) of each run of consecutive integers in the sorted ``idx``."""
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]])
    return list(zip(starts.tolist(), ends.tolist()))


def _canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data), affine))
    return np.asarray(img.dataobj), img.affine


def real_profiles(data_root: Path, measure=profile) -> list[tuple[str, np.ndarray]]:
    rows = []
    for case in datasets.open_ms_labeled(data_root / "open_ms"):
        img = nib.load(case.flair)
        flair = img.get_fdata(dtype=np.float32)
        lesion = nib.load(case.wmh).get_fdata(dtype=np.float32) > 0.5
        affine = img.affine
        if measure in AXIAL_MEASURES:
            (flair, affine), (lesion, _) = _canonical(flair, affine), _canonical(lesion.astype(np.uint8), affine)
        p = measure(flair, flair > 0, lesion, voxel_sizes(affine))
        if p is not None:
            rows.append((case.case_id, p))
    return rows


def clinical_profiles(data_root: Path, measure=profile, research_3d: bool = False) -> list[tuple[str, np.ndarray]]:
    """The unlabeled open_ms scans, or the research 3D FLAIR (brain from wmhkit's extractor; their lesions
    cannot be left out)."""
    rows = []
    for name, flair, affine, mask in flairs_with_brains(data_root, research_3d):
        if measure in AXIAL_MEASURES:
            (flair, _), (mask, affine) = _canonical(flair, affine), _canonical(mask.astype(np.uint8), affine)
        p = measure(flair, mask > 0, None, voxel_sizes(affine))
        if p is not None:
            rows.append((name, p))
    return rows


def synthetic_profiles(n: int, seed: int, profile_name: str, measure=profile) -> list[tuple[str, np.ndarray]]:
    rows = []
    for i in range(n):
        s = synth.generate_sample(seed, profile_name, skull=False, index=i)
        if s.meta["random_contrast"]:
            continue
        flair, brain, wmh, affine = s.flair, s.brainmask, s.wmh, s.affine
        if measure in AXIAL_MEASURES:
            (flair, _), (brain, _), (wmh, affine) = (_canonical(v, s.affine) for v in (flair, brain, wmh))
        p = measure(flair, brain > 0, wmh, voxel_sizes(affine))
        if p is not None:
            c = s.meta["distractors"]
            edge = s.meta.get("acquisition", {}).get("edge_enhance", 0.0)
            rows.append((f"{i} pv {c['periventricular_gradient']:.2f} edge {edge:.2f}", p))
    return rows


def print_rows(title: str, rows, header: str | None = None) -> None:
    print(f"\n{title}")
    print(f"{'case':<28}" + (header or "".join(f"{d:>2}-{d + 1:<3}" for d in SHELLS_MM)))
    for name, p in rows:
        print(f"{name:<28}" + "".join(f"{v:6.2f}" for v in p))
    if rows:
        arr = np.array([p for _, p in rows])
        print(f"{'median':<28}" + "".join(f"{v:6.2f}" for v in np.nanmedian(arr, 0)))


def print_all(args, measure, header: str) -> None:
    """The labeled real cases, the unlabeled ones with --clinical, then the synthetic cases, by ``measure``."""
    print_rows("real (open_ms labeled, MNI 1 mm)", real_profiles(args.data, measure), header)
    if args.clinical:
        print_rows("real 3D (unlabeled, native 1 mm)", clinical_profiles(args.data, measure, True), header)
        print_rows("real clinical (open_ms unlabeled, native grid)", clinical_profiles(args.data, measure), header)
    print_rows(f"synthetic ({args.profile}, seed {args.seed})",
               synthetic_profiles(args.n_synth, args.seed, args.profile, measure), header)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-synth", type=int, default=12)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--profile", default="research3d")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--clinical", action="store_true", help="also the unlabeled clinical scans")
    ap.add_argument("--edge", action="store_true", help="the wall profile in 0.5 mm bins instead of the shells")
    ap.add_argument("--septum", action="store_true", help="the septum between the lateral ventricles instead")
    ap.add_argument("--wall", action="store_true", help="how ragged the ventricles' outline is, instead")
    args = ap.parse_args()
    if args.wall:
        print(f"Axial slices through the ventricles: the outline's mean distance (mm) from itself smoothed"
              f" over {WALL_SMOOTH_MM:g} mm, median over slices")
        print_all(args, wall_roughness, f"{'rough':>6}{'slices':>7}")
        return 0
    if args.septum:
        print("Axial rows across the lateral ventricles: share fused, septum gap, its peak FLAIR / brain median")
        print_all(args, septum_rows, f"{'fused':>6}{'gap mm':>8}{'peak':>6}{'rows':>6}")
        return 0
    if args.edge:
        print("FLAIR / brain median by signed distance from the ventricles (bin upper edges, mm);"
              " unlabeled scans keep their lesions")
        print_all(args, edge_profile, "".join(f"{hi:6.1f}" for hi in EDGE_BINS_MM[1:]))
        return 0
    print_rows("real (open_ms labeled, MNI 1 mm)", real_profiles(args.data))
    if args.clinical:
        print_rows("real clinical (open_ms unlabeled, native grid, lesions not left out)",
                   clinical_profiles(args.data))
    print_rows(f"synthetic ({args.profile}, seed {args.seed})", synthetic_profiles(args.n_synth, args.seed, args.profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
