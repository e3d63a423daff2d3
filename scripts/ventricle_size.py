"""Size of the lateral ventricles on the montage's slice, real FLAIRs against synthetic cases.

Development script (reads the real data beside the checkout; the package never does). On the axial
slice the montage shows (scripts/make_synth_montage.py: the lateral ventricles' bodies, found without
labels), resampled to 1 mm in-plane: the dark (CSF-like) area inside the head's central box, kept to its
two largest parts (the two ventricles; sulci reach into the box's corners), over the head's section.
Also printed: the left-right width of those parts over the head's width.

Measured (session 32): real clinical 2D FLAIRs 0.017 median (0.005-0.065), MNI cases 0.030, the 3D
FLAIR 0.032; synthetic cache 27 0.055 (0.022-0.118), which set ``anatomy.VENTRICLE_CHANGE_MM``.

Usage:  python scripts/ventricle_size.py [--n-synth 20] [--seed 2026] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_synth_montage import (DEFAULT_DATA, central_box, dark_csf, head_support,  # noqa: E402
                                montage_slice, real_flairs)

from wmhkit import synth  # noqa: E402


def dark_central_share(data: np.ndarray, affine: np.ndarray) -> tuple[float, float]:
    """(dark central area / head section, dark parts' width / head width) on the montage's slice."""
    image = montage_slice(data, affine)[0]
    support = head_support(image)
    box = np.zeros_like(support)
    box[central_box(support)] = True
    dark = dark_csf(image, support) & box
    labels, count = ndi.label(dark)
    if count:
        sizes = ndi.sum(dark, labels, range(1, count + 1))
        dark = np.isin(labels, np.argsort(sizes)[::-1][:2] + 1)
    columns = np.nonzero(dark.any(axis=1))[0]
    rows = np.flatnonzero(support.any(axis=1))
    width = (columns.max() - columns.min() + 1) / (rows[-1] - rows[0]) if columns.size else 0.0
    return float(dark.sum() / support.sum()), float(width)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--n-synth", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--stripped", type=int, default=4, help="synthetic cases shown skull-stripped, as the montage's")
    args = ap.parse_args()
    rows = []
    sources = real_flairs(args.data)
    for group, name, path in sources:
        img = nib.load(str(path))
        rows.append((group, name, *dark_central_share(img.get_fdata(dtype=np.float32), img.affine)))
    for i in range(args.n_synth):
        s = synth.generate_sample(args.seed, "mixed", skull=i >= args.stripped, index=i)
        move = s.meta["atrophy"]["ventricle_growth_mm"]
        rows.append(("synthetic", f"index {i} (walls {move:+.1f} mm)", *dark_central_share(s.flair, s.affine)))
    for group, name, area, width in rows:
        print(f"{group:10s} {name:28s} area {area:.3f} width {width:.3f}", flush=True)
    for group in dict.fromkeys(r[0] for r in rows):
        area = np.array([r[2] for r in rows if r[0] == group])
        width = np.array([r[3] for r in rows if r[0] == group])
        print(f"{group}: n {area.size}, area median {np.median(area):.3f} ({area.min():.3f}-{area.max():.3f}), "
              f"width median {np.median(width):.3f} ({width.min():.3f}-{width.max():.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
