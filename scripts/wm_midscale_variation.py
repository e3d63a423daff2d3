"""How much normal white matter varies over 1-2 cm on FLAIR, real against synthetic.

Development script (reads the real data beside the checkout; the package never does). A network trained
on white matter that is flat at the centimetre scale calls every faintly bright real patch a lesion: the
3D U-Net's false positives on the labeled real cases lay in 0.4-3.9 ml patches at 1.05-1.2 x the brain's
median FLAIR (docs/training.md, session 29). This measures the variation those patches come from.

Measure, alike on both: inside white matter eroded by 3 mm, lesions dilated by 4 voxels left out, the
FLAIR smoothed at 4 mm over the FLAIR smoothed at 20 mm (both normalised convolutions over the same
white-matter mask, so the mask's edge does not darken either); printed as its 5/25/75/95th percentiles
and its SD (the number quoted in docs/synth.md). White matter: on the real cases the generator's own
atlas (MNI152 2009a labels, the cases are in MNI space) moved by the images' affines; on synthetic
samples the sample's tissue map.

Usage:  python scripts/wm_midscale_variation.py [--n-synth 12] [--seed 11] [--profile research3d]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from wmhkit import synth  # noqa: E402
from wmhkit.synth.anatomy import WM_CLASSES, load_atlas  # noqa: E402

REAL = REPO.parent / "shared" / "data" / "open_ms" / "labeled_mni"
FINE_MM, COARSE_MM, ERODE_MM = 4.0, 20.0, 3.0
LESION_MARGIN_VOXELS = 4


def atlas_labels_on(atlas, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """The generator's atlas labels (MNI space) on a grid in MNI space, by the affines alone (nearest)."""
    to_atlas = np.linalg.solve(atlas.affine, affine)
    return ndi.affine_transform(atlas.labels, to_atlas[:3, :3], to_atlas[:3, 3], output_shape=shape, order=0)


def normalised_smooth(volume: np.ndarray, mask: np.ndarray, sigma_voxels: float) -> np.ndarray:
    """Gaussian mean of ``volume`` over ``mask`` only (same shape), sigma in voxels."""
    weights = mask.astype(np.float32)
    total = ndi.gaussian_filter(volume * weights, sigma_voxels)
    return total / np.maximum(ndi.gaussian_filter(weights, sigma_voxels), 1e-3)


def midscale_ratio(flair: np.ndarray, white_matter: np.ndarray, lesions: np.ndarray, spacing_mm: float) -> np.ndarray:
    """FLAIR at 4 mm / FLAIR at 20 mm, at the voxels of eroded, lesion-free white matter (1D)."""
    near_lesion = ndi.binary_dilation(lesions, iterations=LESION_MARGIN_VOXELS) if lesions.any() else lesions
    mask = white_matter & ~near_lesion & (flair > 0)
    core = ndi.binary_erosion(white_matter, iterations=max(1, int(round(ERODE_MM / spacing_mm)))) & ~near_lesion
    fine = normalised_smooth(flair, mask, FINE_MM / spacing_mm)
    coarse = normalised_smooth(flair, mask, COARSE_MM / spacing_mm)
    return (fine / np.maximum(coarse, 1e-6))[core]


def summary(ratio: np.ndarray) -> str:
    p = np.percentile(ratio, [5, 25, 75, 95])
    return f"p5/25/75/95 {' / '.join(f'{v:.3f}' for v in p)}, SD {np.std(ratio):.4f}"


def labeled_real_cases():
    """(name, FLAIR image, FLAIR array, rated lesions, atlas white matter) of each labeled MNI case."""
    atlas = load_atlas()
    wm_ids = atlas.ids(WM_CLASSES)
    for case in sorted(REAL.iterdir()):
        image = nib.load(str(case / "FLAIR.nii.gz"))
        flair = image.get_fdata(dtype=np.float32)
        lesions = nib.load(str(case / "lesions.nii.gz")).get_fdata() > 0
        white_matter = np.isin(atlas_labels_on(atlas, flair.shape, image.affine), wm_ids)
        yield case.name, image, flair, lesions, white_matter


def real_rows():
    for name, image, flair, lesions, white_matter in labeled_real_cases():
        ratio = midscale_ratio(flair, white_matter, lesions, float(voxel_sizes(image.affine).min()))
        yield f"real {name} (lesions {lesions.sum() / 1000:.1f} ml)", ratio


def synthetic_rows(n: int, seed: int, profile: str):
    wm_ids = load_atlas().ids(WM_CLASSES)
    for index in range(n):
        sample = synth.generate_sample(seed, profile, skull=False, index=index, random_contrast_share=0.0)
        spacing = float(voxel_sizes(sample.affine).min())
        ratio = midscale_ratio(sample.flair, np.isin(sample.tissue, wm_ids), sample.wmh > 0, spacing)
        drawn = sample.meta["distractors"]
        label = (f"synthetic {index} ({sample.meta['lesion_volume_ml']:.1f} ml, drawn regional SD "
                 f"{drawn['wm_regional_sd']:.3f} at {drawn['wm_regional_scale_mm']:.0f} mm)")
        yield label, ratio


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-synth", type=int, default=12)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--profile", default="research3d")
    args = parser.parse_args(argv)
    for label, ratio in real_rows():
        print(f"{label}: {summary(ratio)}", flush=True)
    for label, ratio in synthetic_rows(args.n_synth, args.seed, args.profile):
        print(f"{label}: {summary(ratio)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
