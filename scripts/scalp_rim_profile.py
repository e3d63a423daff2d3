"""The head's rim on FLAIR, ray by ray: how smooth the outline is and how regular the scalp's layers are.

Development script (reads the real data beside the checkout; the package never does). The montage's
readers tell synthetic skull-on tiles by "a ragged, wavy dark scalp rim"; the depth profile of
compare_flair_intensities.py averages around the head and cannot see that. On axial slices of the slab
through the lateral ventricles (every other slice, resampled to 1 mm in-plane as the montage shows them),
rays leave the head's centroid every degree; along each ray:

* the outline's radius r(angle) (the outermost head-support pixel): *rough* = SD (mm) of r minus r
  smoothed over +-10 degrees (circular), that is bumps of ~1-3 cm along the outline; *solidity* = the
  head's area / its convex hull's (a lumpy outline has dents); *ring texture* = at each depth between
  the outline and the brain, the SD over rays of the profile minus its mean over +-RING_SMOOTH_DEG,
  median over depths (/ the brain's median): layers that run on unbroken have a small one, mottled ones
  a large one; *skin edge* and *brain edge* = the steepest rise of the profile (per mm, inward) in the
  outer 4 mm and within 2 mm of the brain depth (sharp layers have steep edges);
* the profile inward from the outline, 0-25 mm in 0.5 mm steps, / the brain's median: *fat peak* = the
  brightest value in the outer 4 mm (the skin-and-fat line), *peak CV* = its SD / median over rays (a
  continuous bright line has a small one); *brain depth* = the first depth where the profile reaches
  BRAIN_LEVEL (the scalp and skull's thickness along the ray), median and IQR over rays (a head whose
  layers run parallel to the brain's surface has a small IQR); *inner dark* = the darkest value in the
  INNER_DARK_MM above the brain depth (inner table, dura and CSF: a black line on real scans), and
  *diploe* = the brightest between the fat line's end and the inner dark (the marrow between the tables);
* *head W/L*: the head's left-right width / its front-back length (the cephalic index at this level);
* *dots*: small bright spots in the scalp (vessels; see scalp_dots), per slice;
* a second table: the depth profile itself at PROFILE_DEPTHS_MM, median over rays, slices and images.

Real brain masks come from wmhkit's brain extractor; synthetic ones are the generator's own; synthetic
cases with random contrasts are skipped.

Usage:  python scripts/scalp_rim_profile.py [--n-synth 12] [--seed 11] [--profile clinical2d] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from compare_flair_intensities import (  # noqa: E402
    canonical, canonical_spacing, flairs_with_brains, slab_slices, slice_at_1mm,
)
from make_synth_montage import head_support  # noqa: E402

from wmhkit import synth  # noqa: E402

ANGLES = np.deg2rad(np.arange(360))
SMOOTH_DEG = 10
RING_SMOOTH_DEG = 4
DEPTHS = np.arange(0.0, 25.01, 0.5)
FAT_WITHIN_MM = 4.0
BRAIN_LEVEL = 0.7
INNER_DARK_MM = 4.0
# Depths (mm below the outline) printed in the depth-profile table.
PROFILE_DEPTHS_MM = (1, 2, 3, 4, 5, 6, 8, 10, 12, 13, 14, 15)
DOT_LEVEL, DOT_CONTRAST, DOT_MAX_PX = 0.9, 1.3, 12
# Measure -> column title.
COLUMNS = {"head_wl": "head W/L", "dots": "dots", "rough": "rough", "solidity": "solidity", "texture": "ring texture",
           "skin_edge": "skin edge", "brain_edge": "brain edge", "peak": "fat peak", "peak_cv": "peak CV",
           "brain_depth": "brain depth", "depth_iqr": "depth IQR", "diploe": "diploe", "inner_dark": "inner dark"}


def head_rays(image: np.ndarray, brain_median: float):
    """(head support, outline radius per ray (mm), profile (rays, DEPTHS) / brain median) of one 1 mm axial
    slice, or None when the head is not found around its centroid."""
    support = head_support(image)
    labels, n = ndi.label(support)
    if n == 0:
        return None
    support = labels == 1 + int(np.argmax(ndi.sum(support, labels, range(1, n + 1))))
    cx, cy = ndi.center_of_mass(support)
    steps = np.arange(0.0, max(image.shape), 0.5)
    xs = cx + np.cos(ANGLES)[:, None] * steps
    ys = cy + np.sin(ANGLES)[:, None] * steps
    inside = ndi.map_coordinates(support.astype(np.float32), [xs, ys], order=0) > 0.5
    if not inside[:, 0].all():
        return None
    radius = steps[inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)]
    depth_r = radius[:, None] - DEPTHS[None, :]
    profile = ndi.map_coordinates(image, [cx + np.cos(ANGLES)[:, None] * depth_r,
                                          cy + np.sin(ANGLES)[:, None] * depth_r], order=1) / brain_median
    return support, radius, profile


def slice_rim(image: np.ndarray, brain_median: float) -> dict | None:
    """Rim measures of one 1 mm axial slice (x, y), or None when the head is not found; "profile" is
    the median over rays of the depth profile."""
    found = head_rays(image, brain_median)
    if found is None:
        return None
    support, radius, profile = found
    kernel = np.ones(2 * SMOOTH_DEG + 1) / (2 * SMOOTH_DEG + 1)
    smooth = np.convolve(np.concatenate([radius[-SMOOTH_DEG:], radius, radius[:SMOOTH_DEG]]), kernel, "valid")
    fat = DEPTHS <= FAT_WITHIN_MM
    peak_at = np.argmax(profile[:, fat], axis=1)
    peak = profile[np.arange(len(ANGLES)), peak_at]
    reached = profile >= BRAIN_LEVEL
    rays = np.flatnonzero(reached.any(axis=1) & (np.argmax(reached, axis=1) > int(2 * FAT_WITHIN_MM) + 2))
    if rays.size < len(ANGLES) // 2:
        return None
    edge_at = np.argmax(reached[rays], axis=1)
    dark_from = edge_at - int(2 * INNER_DARK_MM)
    inner = np.array([profile[r, max(a, 0):b].min() for r, a, b in zip(rays, dark_from, edge_at)])
    fat_end = int(2 * FAT_WITHIN_MM) + 1
    diploe = np.array([profile[r, fat_end:max(a, fat_end + 1)].max() for r, a in zip(rays, dark_from)])
    edge = DEPTHS[edge_at]
    # Sharpness: the steepest rise (per mm, going inward) of the skin edge and of the brain's edge.
    slope = np.diff(profile, axis=1) / np.diff(DEPTHS)
    skin_edge = float(np.median(slope[:, :int(2 * FAT_WITHIN_MM)].max(axis=1)))
    brain_edge = float(np.median([slope[r, max(a - 4, 0):a + 4].max() for r, a in zip(rays, edge_at)]))
    hull = ConvexHull(np.argwhere(support)).volume
    rows_x, rows_y = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
    # Along the ring, at each depth above the shallowest brain depth: fine variation (bumps under ~1 cm).
    above = profile[:, :max(2, int(np.percentile(edge_at, 10)) - 2)]
    along = above - ndi.uniform_filter1d(above, 2 * RING_SMOOTH_DEG + 1, axis=0, mode="wrap")
    texture = float(np.median(np.std(along, axis=0)))
    return {"head_wl": float((rows_x[-1] - rows_x[0] + 1) / (rows_y[-1] - rows_y[0] + 1)),
            "rough": float(np.std(radius - smooth)), "solidity": float(support.sum() / hull),
            "texture": texture, "skin_edge": skin_edge, "brain_edge": brain_edge, "peak": float(np.median(peak)),
            "peak_cv": float(np.std(peak) / max(np.median(peak), 1e-6)), "brain_depth": float(np.median(edge)),
            "depth_iqr": float(np.subtract(*np.percentile(edge, [75, 25]))),
            "inner_dark": float(np.median(inner)), "diploe": float(np.median(diploe)),
            "profile": np.median(profile, axis=0)}


def scalp_dots(image: np.ndarray, inside: np.ndarray, brain_median: float) -> int:
    """Small bright spots in the head outside the brain (3 pixels or more from it) of one 1 mm slice:
    components of at most DOT_MAX_PX pixels above DOT_LEVEL x the brain's median and DOT_CONTRAST x
    their 7 mm neighbourhood's mean (scalp vessels on real FLAIRs)."""
    scalp = head_support(image) & ~ndi.binary_dilation(inside, iterations=3)
    bright = scalp & (image > DOT_LEVEL * brain_median) & (image > DOT_CONTRAST * ndi.uniform_filter(image, 7))
    labels, n = ndi.label(bright)
    if n == 0:
        return 0
    return int((np.bincount(labels.ravel())[1:] <= DOT_MAX_PX).sum())


def rim_stats(flair: np.ndarray, brainmask: np.ndarray, affine: np.ndarray) -> dict | None:
    """Medians of :func:`slice_rim` over the slab (every other slice)."""
    flair, brainmask = canonical(flair, affine), canonical(brainmask.astype(np.uint8), affine) > 0
    spacing = canonical_spacing(affine)
    brain_median = float(np.median(flair[brainmask]))
    rows = []
    for k in slab_slices(brainmask)[::2]:
        image, inside = slice_at_1mm(flair, brainmask, spacing, k)
        row = slice_rim(image, brain_median)
        if row:
            rows.append({**row, "dots": scalp_dots(image, inside, brain_median)})
    if not rows:
        return None
    return {key: np.median([r[key] for r in rows], axis=0) for key in rows[0]}


def line(name: str, rows: list[dict]) -> str:
    cells = []
    for key in COLUMNS:
        values = np.array([r[key] for r in rows])
        digits = 3 if key == "solidity" else 2
        cells.append(f"{np.median(values):.{digits}f} ({values.min():.{digits}f}-{values.max():.{digits}f})")
    return f"| {name} ({len(rows)}) | " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--n-synth", type=int, default=12)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--profile", default="clinical2d", choices=("clinical2d", "research3d"))
    parser.add_argument("--synthetic-only", action="store_true", help="skip the real scans (quicker, for tuning)")
    args = parser.parse_args()
    groups: dict[str, list[dict]] = {}
    if not args.synthetic_only:
        for label, research in (("real clinical 2D FLAIR", False), ("real 3D FLAIR", True)):
            rows = [r for _, flair, affine, mask in flairs_with_brains(args.data, research_3d=research)
                    if (r := rim_stats(flair, mask, affine))]
            groups[label] = rows
    rows = []
    for i in range(args.n_synth):
        s = synth.generate_sample(args.seed, args.profile, skull=True, index=i)
        if not s.meta["random_contrast"] and (r := rim_stats(s.flair, s.brainmask > 0, s.affine)):
            rows.append(r)
    groups[f"synthetic {args.profile}, seed {args.seed}"] = rows
    print("Medians over images (range); dots per slice; rough, brain depth and its IQR in mm; edges per mm;"
          " the others / the brain's median.")
    print("| images | " + " | ".join(COLUMNS.values()) + " |")
    print("|" + "---|" * (len(COLUMNS) + 1))
    for name, rows in groups.items():
        if rows:
            print(line(name, rows))
    print("\nDepth profile below the head's outline (FLAIR / the brain's median; median over rays, slices, images):")
    shown = [k for k, depth in enumerate(DEPTHS) if depth in PROFILE_DEPTHS_MM]
    print("| images | " + " | ".join(f"{DEPTHS[k]:g} mm" for k in shown) + " |")
    print("|" + "---|" * (len(shown) + 1))
    for name, rows in groups.items():
        if rows:
            median = np.median([r["profile"] for r in rows], axis=0)
            print(f"| {name} ({len(rows)}) | " + " | ".join(f"{median[k]:.2f}" for k in shown) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
