"""FLAIR intensity distributions of real clinical scans and synthetic clinical 2D cases, side by side.

Development script (reads the real data beside the checkout; the package never does). It measures two
things a reader of the montage sees at a glance and that lesion statistics do not capture:

* brain spread: quantiles (5, 25, 75, 90, 97 %) of FLAIR in the brain, over an axial slab through the
  lateral ventricles (45-70 % of the brain's height, 2 voxels in from its edge), relative to that slab's
  median. A flat synthetic brain (cortex hardly brighter than white matter) has a narrow spread.
* head outside the brain: quantiles (50, 75, 90, 97 %) of FLAIR in the head beyond 2 voxels outside the
  brain mask, relative to the brain's median (scalp, bone, muscle, fat).

Real brain masks come from wmhkit's brain extractor (the 3 labeled MNI cases, already stripped: their
non-zero region); synthetic ones are the generator's own. Synthetic
cases use realistic contrasts only (the random-contrast share is skipped: it is meant to look odd).

Usage:  python scripts/compare_flair_intensities.py [--n-synth 16] [--seed 11] [--data ../shared/data]
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


def canonical(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``image`` reoriented to RAS (as the montage shows it), without its affine."""
    return canonical_with_affine(image, affine)[0]


def intensity_stats(flair: np.ndarray, brainmask: np.ndarray) -> dict | None:
    """Brain-spread and outside-brain quantiles of one FLAIR (RAS arrays); None if the slab is tiny."""
    z = np.flatnonzero(brainmask.any(axis=(0, 1)))
    lo, hi = z.min() + int(SLAB[0] * np.ptp(z)), z.min() + int(SLAB[1] * np.ptp(z))
    slab = np.zeros_like(brainmask)
    slab[:, :, lo:hi] = brainmask[:, :, lo:hi]
    slab = ndi.binary_erosion(slab, iterations=2)
    values = flair[slab]
    if values.size < 1000:
        return None
    median = float(np.median(values))
    outside = head_support(flair) & ~ndi.binary_dilation(brainmask, iterations=2)
    head = None  # skull-stripped images have no head around the brain
    if outside.sum() >= 1000:
        head = np.percentile(flair[outside], HEAD_QUANTILES) / float(np.median(flair[brainmask]))
    return {"brain": np.percentile(values, BRAIN_QUANTILES) / median, "head": head}


def real_stats(data_root: Path) -> list[dict]:
    rows = []
    for case in datasets.open_ms_unlabeled(data_root / "open_ms"):
        img = nib.load(case.flair)
        flair = img.get_fdata(dtype=np.float32)
        mask = brain.extract_brain(flair, img.affine).mask > 0
        stats = intensity_stats(canonical(flair, img.affine), canonical(mask.astype(np.uint8), img.affine) > 0)
        if stats:
            rows.append({"case": case.case_id, **stats})
    return rows


def real_stripped_stats(data_root: Path) -> list[dict]:
    """The 3 labeled open_ms cases: skull-stripped, MNI-registered, their own non-zero region as mask."""
    rows = []
    for case in datasets.open_ms_labeled(data_root / "open_ms"):
        img = nib.load(case.flair)
        flair = canonical(img.get_fdata(dtype=np.float32), img.affine)
        stats = intensity_stats(flair, flair > 0)
        if stats:
            rows.append({"case": case.case_id, **stats})
    return rows


def synthetic_stats(n: int, seed: int) -> list[dict]:
    rows = []
    for i in range(n):
        s = synth.generate_sample(seed, "clinical2d", skull=True, index=i)
        if s.meta["random_contrast"]:
            continue
        stats = intensity_stats(canonical(s.flair, s.affine), canonical(s.brainmask, s.affine) > 0)
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
    return f"| {name} ({len(rows)}) | " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--n-synth", type=int, default=16)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    header = (["images"] + [f"brain p{q}" for q in BRAIN_QUANTILES] + ["brain IQR (range)"]
              + [f"head p{q}" for q in HEAD_QUANTILES])
    print("Medians over images; brain quantiles / slab median, head quantiles / brain median.")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    print(table("real clinical FLAIR", real_stats(args.data)))
    print(table("real labeled MNI FLAIR (stripped)", real_stripped_stats(args.data)))
    print(table("synthetic clinical2d", synthetic_stats(args.n_synth, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
