"""FLAIR intensity distributions of real clinical scans and synthetic clinical 2D cases, side by side.

Development script (reads the real data beside the checkout; the package never does). It measures two
things a reader of the montage sees at a glance and that lesion statistics do not capture:

* brain spread: quantiles (5, 25, 75, 90, 97 %) of FLAIR in the brain, over an axial slab through the
  lateral ventricles (45-70 % of the brain's height, 2 voxels in from its edge), relative to that slab's
  median. A flat synthetic brain (cortex hardly brighter than white matter) has a narrow spread.
* head outside the brain: quantiles (50, 75, 90, 97 %) of FLAIR in the head beyond 2 voxels outside the
  brain mask, relative to the brain's median (scalp, bone, muscle, fat).
* white-matter texture, on the slab's axial slices resampled to 1 mm in-plane (as the montage shows
  them), in the deep brain (12 mm in from its edge) at intensities 0.85-1.25 x its median (white matter:
  no ventricles, no lesions): *fine* = median |I - G1(I)| (noise and grain finer than ~2 mm) and
  *blotch* = SD of G1.5(I) - G4(I) (patches of 2-6 mm), both / the median. G_s is a Gaussian of s mm
  normalised over the kept voxels only, so ventricle and lesion edges do not count as texture.
* noise: Immerkaer's estimate (sqrt(pi/2) / 6 x the median |Laplacian 3x3 mask|) on the slab's native
  axial slices, 8 voxels in from the brain's edge, / the slab's median. It sees the pixel-to-pixel
  noise and hardly any anatomy, so it tells white noise from noise correlated over a voxel (scanners
  reconstruct on a finer matrix than they acquire), which *fine* cannot.
* sharpness: the 90th and 99th percentiles of the in-plane gradient magnitude (Sobel, per mm, on the
  same 1 mm slices, 3 mm in from the brain's edge) / the brain's median: sulci, the cortical ribbon and
  the ventricles' walls make the strongest edges, and a blurred synthetic brain has weaker ones.
* the scalp's layers: median FLAIR outside the brain at each 1 mm depth below the head's surface
  (0-12 mm, on the same 1 mm slices, every other slice of the slab), / the brain's median: the thin bright
  fat line and the dark bone under it show as a peak and a trough.
* the cortex over the white matter: the same, inside the brain at each 1 mm depth below the brain
  mask's surface: the cortical ribbon is a bright band in the first millimetres, the white matter under
  it a plateau. Label-free, so real and synthetic images are measured alike.
* sulcal CSF: at the same depths, the share of voxels darker than DARK_SHARE_BELOW x the brain median.
  Sulci widened too far break the cortical ribbon into bright fragments between dark gaps.

Real brain masks come from wmhkit's brain extractor (the 3 labeled MNI cases, already stripped: their
non-zero region); synthetic ones are the generator's own. Synthetic
cases use realistic contrasts only (the random-contrast share is skipped: it is meant to look odd).

Usage:  python scripts/compare_flair_intensities.py [--n-synth 16] [--seed 11] [--data ../shared/data]
        [--synthetic-only]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from make_synth_montage import canonical as canonical_with_affine  # noqa: E402
from make_synth_montage import head_support  # noqa: E402

from wmhkit import brain, datasets, synth  # noqa: E402

BRAIN_QUANTILES = (5, 25, 75, 90, 97)
HEAD_QUANTILES = (50, 75, 90, 97)
SLAB = (0.45, 0.70)
DEPTHS_MM = tuple(range(13))
# "Dark" inside the brain: below this share of the brain's median FLAIR (CSF and what is mostly CSF).
DARK_SHARE_BELOW = 0.6


def canonical(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``image`` reoriented to RAS (as the montage shows it), without its affine."""
    return canonical_with_affine(image, affine)[0]


def canonical_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along the RAS-reoriented axes."""
    return np.linalg.norm(canonical_with_affine(np.zeros((1, 1, 1)), affine)[1][:3, :3], axis=0)


def slab_slices(brainmask: np.ndarray) -> range:
    """Axial indices of the slab through the lateral ventricles (SLAB of the brain's height)."""
    z = np.flatnonzero(brainmask.any(axis=(0, 1)))
    return range(z.min() + int(SLAB[0] * np.ptp(z)), z.min() + int(SLAB[1] * np.ptp(z)) + 1)


def slice_at_1mm(flair: np.ndarray, brainmask: np.ndarray, spacing, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Axial slice ``k`` of FLAIR and brain mask resampled to 1 mm in-plane, as the montage shows it."""
    image = ndi.zoom(flair[:, :, k], spacing[:2], order=1)
    inside = ndi.zoom(brainmask[:, :, k].astype(np.float32), spacing[:2], order=1) > 0.5
    return image, inside


def stats_of(flair: np.ndarray, brainmask: np.ndarray, affine: np.ndarray) -> dict | None:
    """:func:`intensity_stats` of a FLAIR and brain mask on their own grid (``affine``)."""
    return intensity_stats(canonical(flair, affine), canonical(brainmask.astype(np.uint8), affine) > 0,
                           canonical_spacing(affine))


def intensity_stats(flair: np.ndarray, brainmask: np.ndarray, spacing) -> dict | None:
    """Brain-spread and outside-brain quantiles and white-matter texture of one FLAIR (RAS arrays,
    ``spacing`` in mm); None if the slab is tiny."""
    slab = np.zeros_like(brainmask)
    ks = slab_slices(brainmask)
    slab[:, :, ks.start:ks.stop - 1] = brainmask[:, :, ks.start:ks.stop - 1]
    slab = ndi.binary_erosion(slab, iterations=2)
    values = flair[slab]
    if values.size < 1000:
        return None
    median = float(np.median(values))
    outside = head_support(flair) & ~ndi.binary_dilation(brainmask, iterations=2)
    head = profile = None  # skull-stripped images have no head around the brain
    if outside.sum() >= 1000:
        head = np.percentile(flair[outside], HEAD_QUANTILES) / float(np.median(flair[brainmask]))
        profile = depth_profile(flair, brainmask, spacing)
    texture = texture_stats(flair, brainmask, spacing)
    if texture is not None:
        texture += (noise_estimate(flair, brainmask, ks) / median,)
    return {"brain": np.percentile(values, BRAIN_QUANTILES) / median, "head": head, "profile": profile,
            "cortex": depth_profile(flair, brainmask, spacing, within="brain"),
            "dark": depth_profile(flair, brainmask, spacing, within="brain", dark=True), "texture": texture}


IMMERKAER_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def noise_estimate(flair: np.ndarray, brainmask: np.ndarray, slices: range) -> float:
    """Immerkaer's noise SD (image units) over the native axial ``slices``, deep inside the brain."""
    residuals = []
    for k in slices:
        deep = ndi.binary_erosion(brainmask[:, :, k], iterations=8)
        if deep.sum() >= 200:
            residuals.append(np.abs(ndi.convolve(flair[:, :, k].astype(np.float32), IMMERKAER_MASK))[deep])
    return float(np.sqrt(np.pi / 2) / 6 * np.median(np.concatenate(residuals))) if residuals else float("nan")


def _masked_gaussian(image: np.ndarray, keep: np.ndarray, sigma: float) -> np.ndarray:
    weight = ndi.gaussian_filter(keep.astype(np.float32), sigma)
    return ndi.gaussian_filter(np.where(keep, image, 0).astype(np.float32), sigma) / np.maximum(weight, 1e-3)


def texture_stats(flair: np.ndarray, brainmask: np.ndarray, spacing) -> tuple[float, ...] | None:
    """(fine, blotch) white-matter texture and (p90, p99) edge strength of one FLAIR (RAS arrays,
    ``spacing`` in mm); None if too little deep white matter."""
    fine, blotch, edges = [], [], []
    for k in slab_slices(brainmask):
        image, inside = slice_at_1mm(flair, brainmask, spacing, k)
        gradient = np.hypot(ndi.sobel(image, 0), ndi.sobel(image, 1)) / 8.0
        edges.append(gradient[ndi.binary_erosion(inside, iterations=3)])
        deep = ndi.binary_erosion(inside, iterations=12)
        if deep.sum() < 200:
            continue
        median = float(np.median(image[deep]))
        keep = deep & (image > 0.85 * median) & (image < 1.25 * median)
        core = ndi.binary_erosion(keep, iterations=1)
        if core.sum() < 200:
            continue
        fine.append(np.abs(image - _masked_gaussian(image, keep, 1.0))[core] / median)
        blotch.append((_masked_gaussian(image, keep, 1.5) - _masked_gaussian(image, keep, 4.0))[core] / median)
    if not fine:
        return None
    median = float(np.median(flair[brainmask]))
    edge_p90, edge_p99 = np.percentile(np.concatenate(edges), [90, 99]) / median
    return (float(np.median(np.concatenate(fine))), float(np.std(np.concatenate(blotch))),
            float(edge_p90), float(edge_p99))


def flairs_with_brains(data_root: Path, research_3d: bool = False):
    """(name, FLAIR, affine, brain mask) of each unlabeled open_ms scan, or with ``research_3d`` of the one
    research 3D FLAIR of ``unlabeled/``; the brain from wmhkit's extractor (these scans have skulls)."""
    if research_3d:
        paths = [("flair_3d_1mm", data_root / "unlabeled" / "flair_3d_1mm.nii.gz")]
    else:
        paths = [(case.case_id, case.flair) for case in datasets.open_ms_unlabeled(data_root / "open_ms")]
    for name, path in paths:
        img = nib.load(path)
        flair = img.get_fdata(dtype=np.float32)
        yield name, flair, img.affine, brain.extract_brain(flair, img.affine).mask > 0


def real_stats(data_root: Path) -> list[dict]:
    rows = []
    for name, flair, affine, mask in flairs_with_brains(data_root):
        stats = stats_of(flair, mask, affine)
        if stats:
            rows.append({"case": name, **stats})
    return rows


def depth_profile(flair: np.ndarray, brainmask: np.ndarray, spacing, within: str = "head",
                  dark: bool = False) -> np.ndarray | None:
    """Median FLAIR at depths DEPTHS_MM / the brain median: below the head's surface and outside the
    brain (``within="head"``, the scalp's layers), or below the brain's surface inside it
    (``within="brain"``, cortex over white matter). With ``dark``, instead the share of voxels at each
    depth darker than DARK_SHARE_BELOW x the brain median (CSF-like: sulci, widened by atrophy)."""
    brain_median = float(np.median(flair[brainmask]))
    rings = [[] for _ in DEPTHS_MM]
    for k in slab_slices(brainmask)[::2]:
        image, inside = slice_at_1mm(flair, brainmask, spacing, k)
        surface, region = (inside, inside) if within == "brain" else (head_support(image), ~inside)
        depth = ndi.distance_transform_edt(surface)
        for ring, d in zip(rings, DEPTHS_MM):
            sel = (depth > d) & (depth <= d + 1) & region
            if sel.sum() > 50:
                ring.append(np.mean(image[sel] < DARK_SHARE_BELOW * brain_median) if dark else np.median(image[sel]))
    if not all(rings):
        return None
    return np.array([np.median(r) for r in rings]) / (1.0 if dark else brain_median)


def real_3d_stats(data_root: Path) -> list[dict]:
    """The one research 3D FLAIR (skull on, 1 mm) of ``unlabeled/``, with wmhkit's brain extractor."""
    rows = []
    for name, flair, affine, mask in flairs_with_brains(data_root, research_3d=True):
        stats = stats_of(flair, mask, affine)
        if stats:
            rows.append({"case": name, **stats})
    return rows


def real_stripped_stats(data_root: Path) -> list[dict]:
    """The 3 labeled open_ms cases: skull-stripped, MNI-registered, their own non-zero region as mask."""
    rows = []
    for case in datasets.open_ms_labeled(data_root / "open_ms"):
        img = nib.load(case.flair)
        flair = canonical(img.get_fdata(dtype=np.float32), img.affine)
        stats = intensity_stats(flair, flair > 0, canonical_spacing(img.affine))
        if stats:
            rows.append({"case": case.case_id, **stats})
    return rows


def synthetic_stats(n: int, seed: int) -> list[dict]:
    rows = []
    for i in range(n):
        s = synth.generate_sample(seed, "clinical2d", skull=True, index=i)
        if s.meta["random_contrast"]:
            continue
        stats = stats_of(s.flair, s.brainmask > 0, s.affine)
        if stats:
            rows.append({"case": f"seed {seed} index {i}", **stats})
    return rows


def table(name: str, rows: list[dict]) -> str:
    brain_q = np.array([r["brain"] for r in rows])
    head_q = np.array([r["head"] for r in rows if r["head"] is not None])
    iqr = brain_q[:, 2] - brain_q[:, 1]
    cells = [f"{np.median(brain_q[:, j]):.2f}" for j in range(len(BRAIN_QUANTILES))]
    cells += [f"{np.median(iqr):.3f} ({iqr.min():.3f}-{iqr.max():.3f})"]
    cells += [f"{np.median(head_q[:, j]):.2f}" if len(head_q) else "-" for j in range(len(HEAD_QUANTILES))]
    texture = np.array([r["texture"] for r in rows if r["texture"] is not None])
    cells += [f"{np.median(texture[:, j]):.4f} ({texture[:, j].min():.4f}-{texture[:, j].max():.4f})"
              if len(texture) else "-" for j in range(5)]
    return f"| {name} ({len(rows)}) | " + " | ".join(cells) + " |"


def profile_table(name: str, rows: list[dict], key: str = "profile") -> str | None:
    profiles = np.array([r[key] for r in rows if r.get(key) is not None])
    if not len(profiles):
        return None
    return f"| {name} ({len(profiles)}) | " + " | ".join(f"{v:.2f}" for v in np.median(profiles, axis=0)) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--n-synth", type=int, default=16)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--synthetic-only", action="store_true", help="skip the real scans (quicker, for tuning)")
    args = parser.parse_args()
    header = (["images"] + [f"brain p{q}" for q in BRAIN_QUANTILES] + ["brain IQR (range)"]
              + [f"head p{q}" for q in HEAD_QUANTILES] + ["WM fine (range)", "WM blotch (range)",
                                                                       "edge p90 (range)", "edge p99 (range)",
                                                                       "noise (range)"])
    print("Medians over images; brain quantiles / slab median, head quantiles / brain median.")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    groups = {} if args.synthetic_only else {
        "real clinical FLAIR": real_stats(args.data),
        "real labeled MNI FLAIR (stripped)": real_stripped_stats(args.data),
        "real 3D FLAIR": real_3d_stats(args.data),
    }
    groups["synthetic clinical2d"] = synthetic_stats(args.n_synth, args.seed)
    for name, rows in groups.items():
        print(table(name, rows))
    for title, key in (
        ("Scalp layers: median FLAIR outside the brain at each depth below the head's surface / brain median.",
         "profile"),
        ("Cortex over white matter: median FLAIR inside the brain at each depth below its surface / brain median.",
         "cortex"),
        (f"Sulcal CSF: share of voxels darker than {DARK_SHARE_BELOW} x the brain median at each depth below "
         "its surface.", "dark"),
    ):
        print()
        print(title)
        print("| images | " + " | ".join(f"{d}-{d + 1} mm" for d in DEPTHS_MM) + " |")
        print("|" + "---|" * (len(DEPTHS_MM) + 1))
        for name, rows in groups.items():
            line = profile_table(name, rows, key=key)
            if line:
                print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
