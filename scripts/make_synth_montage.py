"""Montage of synthetic and real FLAIR slices, shuffled, for a "which ones are real?" check.

Development script (reads the real data beside the checkout; the package never does). Every tile is an
axial slice through the lateral ventricles' bodies (found without labels, alike for real and synthetic),
resampled to 1 mm in-plane, cropped to the head and shown at the same size with the same percentile
windowing. Lesion outlines are red where labels exist.

Writes (default) docs/img/synth_montage.png (with outlines), docs/img/synth_montage_blind.png (same
tiles, no outlines: outlines give away which tiles have labels) and prints the key (tile -> source).

Usage:  python scripts/make_synth_montage.py [--n-synth 14] [--seed 2026] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from wmhkit import datasets  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"
TILE_PX = 256
# Real clinical tiles to show (7 patients' raw 2D FLAIRs; one study each keeps the mix varied).
N_CLINICAL = 6
# Where to look for the lateral ventricles: this share of the head's left-right and front-back extent.
CENTRAL_BOX = ((0.3, 0.7), (0.25, 0.75))
# CSF on FLAIR: darker than this fraction of the median head intensity.
DARK_FRACTION = 0.4
# Slices whose head cross-section is at least this share of the largest one.
WIDE_FRACTION = 0.6


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient to RAS (nearest axis permutation/flip) so every tile is shown the same way up."""
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, np.float32), affine))
    return np.asarray(img.dataobj, np.float32), img.affine


def head_support(data: np.ndarray) -> np.ndarray:
    """Voxels clearly above background (air is near 0 on FLAIR, with noise)."""
    positive = data[data > 0]
    if positive.size == 0:
        return data > 0
    level = 0.1 * np.percentile(positive, 99)
    # Opening with a structure of the data's own rank: a 3D one would erase a single 2D slice.
    support = ndi.binary_opening(data > level, structure=ndi.generate_binary_structure(data.ndim, 1))
    return ndi.binary_fill_holes(support)


def central_box(support: np.ndarray) -> tuple[slice, slice]:
    """In-plane slices of CENTRAL_BOX within the bounding box of ``support`` (first two axes)."""
    idx = np.argwhere(support)
    lo, hi = idx.min(0), idx.max(0)
    return tuple(slice(int(l + CENTRAL_BOX[a][0] * (h - l)), int(l + CENTRAL_BOX[a][1] * (h - l)) + 1)
                 for a, (l, h) in enumerate(zip(lo[:2], hi[:2])))


def dark_csf(data: np.ndarray, support: np.ndarray) -> np.ndarray:
    """CSF-dark voxels of the head: under DARK_FRACTION of its median intensity."""
    return (data < DARK_FRACTION * np.median(data[support])) & support


def montage_slice(data: np.ndarray, affine: np.ndarray, labels: np.ndarray | None = None):
    """(image, labels or None): the finder's axial slice, RAS, resampled to 1 mm in-plane."""
    data, canon_affine = canonical(data, affine)
    spacing = np.linalg.norm(canon_affine[:3, :3], axis=0)
    k = pick_axial(data, spacing)
    image = ndi.zoom(data[:, :, k], spacing[:2], order=1)
    if labels is None:
        return image, None
    labels = canonical(labels, affine)[0] > 0.5
    return image, ndi.zoom(labels[:, :, k].astype(np.float32), spacing[:2], order=1) > 0.5


def real_flairs(data_root: Path) -> list[tuple[str, str, Path]]:
    """(group "mni" / "2d" / "3d", case id, path) of every real FLAIR beside the checkout."""
    rows = [("mni", c.case_id, Path(c.flair)) for c in datasets.open_ms_labeled(data_root / "open_ms")]
    rows += [("2d", c.case_id, Path(c.flair)) for c in datasets.open_ms_unlabeled(data_root / "open_ms")]
    path = data_root / "unlabeled" / "flair_3d_1mm.nii.gz"
    if path.is_file():
        rows.append(("3d", "flair_3d_1mm", path))
    return rows


def pick_axial(data: np.ndarray, spacing) -> int:
    """Axial index of the lateral ventricles' bodies, found the same way in every image.

    The slice with the largest dark (CSF-like) area in the central part of the head, where the lateral
    ventricles are the biggest dark structure on FLAIR. Labels play no part: every synthetic tile is
    labeled and only 3 real ones are, so a label-driven choice would itself tell them apart
    (docs/synth.md, twenty-third session).
    """
    support = head_support(data)
    centre = central_box(support)
    dark = dark_csf(data, support)
    slice_area = dark[centre[0], centre[1], :].sum(axis=(0, 1)).astype(float)
    area = ndi.uniform_filter1d(slice_area, max(1, int(round(6.0 / spacing[2]))))  # ignore single dark slices
    # Only slices through the wide part of the head: near the vertex and at the skull base the
    # "central" region is mostly sulci, bone or sinuses, also dark.
    section = support.sum(axis=(0, 1))
    area[section < WIDE_FRACTION * section.max()] = -1
    # The ventricles' bodies lie at or up to ~40 mm above the widest axial section of the head.
    widest = int(np.argmax(section))
    area[:widest] = -1
    area[widest + int(round(40.0 / spacing[2])) + 1:] = -1
    return int(np.argmax(area))


def tile(data: np.ndarray, affine: np.ndarray, labels: np.ndarray | None = None):
    """(image, lesion outline mask or None), both TILE_PX x TILE_PX, axes (x right, y up)."""
    image, lab = montage_slice(data, affine, labels)
    support = head_support(image)
    xs, ys = np.nonzero(support)
    if xs.size == 0:
        xs, ys = np.nonzero(image > 0)
    margin = 6
    x0, x1 = max(0, xs.min() - margin), min(image.shape[0], xs.max() + margin + 1)
    y0, y1 = max(0, ys.min() - margin), min(image.shape[1], ys.max() + margin + 1)
    image = image[x0:x1, y0:y1]
    lab = None if lab is None else lab[x0:x1, y0:y1]
    side = max(image.shape)
    pad = [((side - s) // 2, side - s - (side - s) // 2) for s in image.shape]
    image = np.pad(image, pad)
    factor = TILE_PX / side
    image = ndi.zoom(image, factor, order=1)[:TILE_PX, :TILE_PX]
    values = image[head_support(image)]
    lo, hi = np.percentile(values, [0.5, 99.5]) if values.size else (0, 1)
    image = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    if lab is not None:
        lab = ndi.zoom(np.pad(lab.astype(np.float32), pad), factor, order=1)[:TILE_PX, :TILE_PX] > 0.5
    return image, lab


def real_tiles(data_root: Path, rng: np.random.Generator) -> list[dict]:
    """Tiles of real FLAIRs: clinical 2D (skull on), MNI labeled (stripped, outlined), one 3D FLAIR."""
    tiles = []
    clinical = datasets.open_ms_unlabeled(data_root / "open_ms")
    by_patient: dict[int, list] = {}
    for case in clinical:
        by_patient.setdefault(case.meta["patient"], []).append(case)
    patients = sorted(by_patient)
    for p in rng.permutation(patients)[:N_CLINICAL]:
        case = by_patient[int(p)][int(rng.integers(len(by_patient[int(p)])))]
        img = nib.load(case.flair)
        tiles.append({"source": f"real: open_ms clinical 2D FLAIR {case.case_id}",
                      "tile": tile(img.get_fdata(), img.affine)})
    for case in datasets.open_ms_labeled(data_root / "open_ms"):
        img = nib.load(case.flair)
        tiles.append({"source": f"real: open_ms labeled MNI FLAIR {case.case_id} (skull-stripped)",
                      "tile": tile(img.get_fdata(), img.affine, nib.load(case.wmh).get_fdata())})
    path = data_root / "unlabeled" / "flair_3d_1mm.nii.gz"
    if path.is_file():
        img = nib.load(path)
        tiles.append({"source": "real: 3D FLAIR 1 mm (py_synthsr example)", "tile": tile(img.get_fdata(), img.affine)})
    return tiles


def synthetic_tiles(n: int, seed: int, stripped: int) -> list[dict]:
    """Tiles of ``n`` generated cases ('mixed' profile: clinical 2D or research 3D); ``stripped`` of
    them skull-stripped, like the labeled real cases."""
    from wmhkit import synth

    tiles = []
    for i in range(n):
        skull = i >= stripped
        started = time.perf_counter()
        s = synth.generate_sample(seed, "mixed", skull=skull, index=i)
        m = s.meta
        print(f"synthetic {i}: {time.perf_counter() - started:.1f} s, {m['profile']}, "
              f"{m['lesion_volume_ml']} ml, severity {m['lesion_severity']}", file=sys.stderr, flush=True)
        tiles.append({
            "source": f"synthetic: seed {seed} index {i}, {m['profile']}, {'skull' if skull else 'stripped'}, "
                      f"{m['lesion_volume_ml']:.1f} ml",
            "tile": tile(s.flair, s.affine, s.wmh),
        })
    return tiles


def draw(tiles: list[dict], path: Path, outlines: bool, columns: int) -> None:
    rows = int(np.ceil(len(tiles) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.2 * rows), facecolor="black")
    for ax in np.ravel(axes):
        ax.set_axis_off()
    for number, (ax, t) in enumerate(zip(np.ravel(axes), tiles), 1):
        image, lab = t["tile"]
        ax.imshow(image.T, origin="lower", cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
        if outlines and lab is not None and lab.any():
            ax.contour(lab.T.astype(float), [0.5], colors="red", linewidths=0.6)
        ax.text(6, TILE_PX - 8, str(number), color="yellow", fontsize=9, va="top")
    fig.subplots_adjust(left=0.005, right=0.995, top=0.995, bottom=0.005, wspace=0.02, hspace=0.02)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, facecolor="black")
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--n-synth", type=int, default=14)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "synth_montage.png")
    parser.add_argument("--blind-out", type=Path, default=REPO / "docs" / "img" / "synth_montage_blind.png")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    tiles = real_tiles(args.data, rng)
    # As many stripped synthetic tiles as there are stripped real ones, so stripping is no giveaway.
    stripped_real = sum("skull-stripped" in t["source"] for t in tiles)
    tiles += synthetic_tiles(args.n_synth, args.seed, stripped=min(args.n_synth, 2 * stripped_real))
    order = rng.permutation(len(tiles))
    tiles = [tiles[i] for i in order]
    draw(tiles, args.out, outlines=True, columns=args.columns)
    draw(tiles, args.blind_out, outlines=False, columns=args.columns)
    key = {str(i): t["source"] for i, t in enumerate(tiles, 1)}
    print(json.dumps(key, indent=1))
    print(f"wrote {args.out} and {args.blind_out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
