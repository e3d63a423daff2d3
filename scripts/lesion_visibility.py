"""How bright each lesion renders against the white matter right around it, real against synthetic.

Development script (reads the real data beside the checkout; the package never does). Raters label what
they see: a lesion barely brighter than the white matter next to it is not in a real reference mask. A
synthetic lesion labelled but rendered at the brightness of its neighbourhood teaches a network to mark
white matter by its place alone, the false positives that the 3D networks paint in deep and
periventricular white matter of the real cases (docs/training.md, session 29).

Per lesion (26-connected component of the reference mask): median FLAIR of the lesion / median FLAIR of
its white-matter shell (2-6 voxels out, other lesions and their 2-voxel margins left out, at least 20
voxels). Per case: the volume-weighted median of that ratio and the share of lesion volume under 1.10
and in 1.10-1.20. White matter: on the real labeled cases (MNI space) the generator's atlas white matter
where T1 is above the brain's 60th percentile (so misregistered grey matter does not count); on
synthetic cases the sample's own white-matter map.

Usage:  python scripts/lesion_visibility.py [--n-synth 12] [--seed 11] [--profile mixed]
        python scripts/lesion_visibility.py --cache runs/RUN/cache/synthetic   (a training run's cases)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from wm_midscale_variation import REAL, labeled_real_cases  # noqa: E402
from wmhkit import synth  # noqa: E402
from wmhkit.synth.anatomy import WM_CLASSES, load_atlas  # noqa: E402

SHELL_VOXELS = (2, 6)
MIN_SHELL_VOXELS = 20
BANDS = (1.10, 1.20)


def lesion_shell_ratios(flair: np.ndarray, white_matter: np.ndarray, lesions: np.ndarray) -> np.ndarray:
    """(n, 2): voxel count and FLAIR lesion / shell median ratio of each measurable lesion."""
    labels, _ = ndi.label(lesions, structure=np.ones((3, 3, 3)))
    rows = []
    for k, box in enumerate(ndi.find_objects(labels)):
        if box is None:
            continue
        padded = tuple(slice(max(s.start - SHELL_VOXELS[1] - 2, 0), s.stop + SHELL_VOXELS[1] + 2) for s in box)
        lesion = labels[padded] == k + 1
        shell = (ndi.binary_dilation(lesion, iterations=SHELL_VOXELS[1])
                 & ~ndi.binary_dilation(lesions[padded], iterations=SHELL_VOXELS[0]) & white_matter[padded])
        if shell.sum() >= MIN_SHELL_VOXELS:
            rows.append((lesion.sum(), np.median(flair[padded][lesion]) / np.median(flair[padded][shell])))
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


def summary(rows: np.ndarray) -> str:
    if len(rows) == 0:
        return "no measurable lesion"
    volume, ratio = rows[:, 0], rows[:, 1]
    order = np.argsort(ratio)
    weighted_median = ratio[order][np.searchsorted(np.cumsum(volume[order]), volume.sum() / 2)]
    low = volume[ratio < BANDS[0]].sum() / volume.sum()
    faint = volume[(ratio >= BANDS[0]) & (ratio < BANDS[1])].sum() / volume.sum()
    return (f"lesion / shell FLAIR {weighted_median:.2f} (volume-weighted median of {len(rows)} lesions); "
            f"volume under {BANDS[0]:.2f}: {low:.2f}, {BANDS[0]:.2f}-{BANDS[1]:.2f}: {faint:.2f}")


def real_rows():
    for name, _, flair, lesions, white_matter in labeled_real_cases():
        # The atlas alone puts misregistered grey matter into white matter: keep its bright-T1 part.
        t1 = nib.load(str(REAL / name / "T1.nii.gz")).get_fdata(dtype=np.float32)
        white_matter = white_matter & (t1 > np.percentile(t1[flair > 0], 60))
        yield f"real {name} ({lesions.sum() / 1000:.1f} ml)", lesion_shell_ratios(flair, white_matter, lesions)


def synthetic_rows(n: int, seed: int, profile: str):
    wm_ids = load_atlas().ids(WM_CLASSES)
    for index in range(n):
        sample = synth.generate_sample(seed, profile, skull=False, index=index, random_contrast_share=0.0)
        if not sample.wmh.any():
            continue
        meta = sample.meta
        label = (f"synthetic {index} {meta['profile']} ({meta['lesion_volume_ml']:.1f} ml, drawn contrast "
                 f"{meta['flair_lesion_wm_contrast']:+.2f})")
        yield label, lesion_shell_ratios(sample.flair, np.isin(sample.tissue, wm_ids), sample.wmh > 0)


def cached_rows(folder: Path):
    for path in sorted(folder.glob("*_[0-9][0-9][0-9][0-9][0-9].npz")):
        arrays = np.load(path)
        meta = json.loads(str(arrays["meta"]))
        if meta["random_contrast"] or not arrays["wmh"].any():
            continue
        label = f"cached {meta['index']} {meta['profile']} ({meta['lesion_volume_ml']:.1f} ml)"
        yield label, lesion_shell_ratios(arrays["flair"].astype(np.float32), arrays["wm"] > 0, arrays["wmh"] > 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-synth", type=int, default=12)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--profile", default="mixed")
    parser.add_argument("--cache", type=Path, help="a training run's cache/synthetic folder instead of new samples")
    parser.add_argument("--no-real", action="store_true")
    args = parser.parse_args(argv)
    rows = [] if args.no_real else list(real_rows())
    synthetic = cached_rows(args.cache) if args.cache else synthetic_rows(args.n_synth, args.seed, args.profile)
    pooled = []
    for label, ratios in [*rows, *synthetic]:
        print(f"{label}: {summary(ratios)}", flush=True)
        if not label.startswith("real"):
            pooled.append(ratios)
    if pooled:
        print(f"synthetic, all lesions pooled: {summary(np.concatenate(pooled))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
