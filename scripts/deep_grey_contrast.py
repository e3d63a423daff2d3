"""FLAIR (or T1) of each tissue class over deep white matter, on real scans and synthetic cases.

Development script (reads the real data beside the checkout; the package never does). Readers of the
synthetic montage named "a flat grey block" around the ventricles at the foramina of Monro: the
caudate, putamen, internal capsule and thalamus rendered as one even grey. This measures whether the
deep grey matter stands out from the white matter as much as on real FLAIRs.

* Real: the unlabeled clinical 2D FLAIRs (one study per patient, skull on) and the research 3D FLAIR. The Colin27 head
  (../shared/data/templates/ch2.nii.gz, the head the synthetic atlas was built from) is registered to
  each FLAIR (SimpleITK, affine, Mattes mutual information), and the atlas's labels follow it
  (nearest neighbour). The labeled MNI cases need no registration (same space as the atlas).
* Synthetic: clinical 2D (or, with --profile, research 3D) cases, realistic contrasts only, with their
  own tissue labels.
* ``--contrast t1`` reads T1 instead: the labeled MNI cases' and the synthetic cases' (the clinical
  scans are FLAIR only here). FCN-2's T1 encoder adds false alarms in the deep grey matter of real
  scans (docs/training.md, session 35); this asks whether the synthetic T1 draws it as the real T1 is.

Each class is eroded (2 mm in-plane) so that partial volume at its edges and registration error count
less, and only the axial slab through the lateral ventricles is used (where the montage cuts). Printed:
median intensity of the class / median intensity of deep white matter.

Usage:  python scripts/deep_grey_contrast.py [--n-synth 10] [--seed 11] [--profile clinical2d|research3d]
        [--synthetic-only] [--contrast flair|t1] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from wmhkit import datasets, synth  # noqa: E402
from wmhkit.synth.anatomy import ASSETS, load_atlas  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"
ATLAS = ASSETS / "atlas_labels.nii.gz"
CLASSES = {
    "pv_wm": ("wm_periventricular",),
    "jc_wm": ("wm_juxtacortical",),
    "striatum": ("gm_deep_striatum",),
    "thalamus": ("gm_deep_thalamus",),
    "cortex": ("gm_cortex_frontal", "gm_cortex_parietooccipital", "gm_cortex_temporal"),
}
REFERENCE = "wm_deep"
ERODE_MM = 2.0


def class_ratios(image: np.ndarray, labels: np.ndarray, spacing, names: dict[int, str]) -> dict[str, float] | None:
    """Median intensity of each class in CLASSES / that of deep WM, over the slab through the ventricles."""
    ids = {v: k for k, v in names.items()}
    vent = np.isin(labels, [ids["csf_lateral_ventricle"]])
    z = np.flatnonzero(vent.any(axis=(0, 1)))
    if z.size == 0:
        return None
    slab = np.zeros(labels.shape, bool)
    slab[:, :, z[0]:z[-1] + 1] = True
    iterations = max(1, int(round(ERODE_MM / min(spacing[:2]))))
    structure = np.zeros((3, 3, 3), bool)
    structure[:, :, 1] = ndi.generate_binary_structure(2, 1)  # in-plane: thick slices stay whole

    def inner(members) -> np.ndarray:
        return ndi.binary_erosion(np.isin(labels, [ids[n] for n in members]), structure, iterations) & slab

    ref = inner((REFERENCE,))
    if ref.sum() < 100:
        return None
    wm = float(np.median(image[ref]))
    out = {}
    for key, members in CLASSES.items():
        m = inner(members)
        out[key] = float(np.median(image[m]) / wm) if m.sum() >= 50 else float("nan")
    return out


def register_colin(fixed: sitk.Image, colin: sitk.Image, transform: sitk.Transform, shrink=(4, 2, 1),
                   smoothing=(2, 1, 0), smoothing_in_mm: bool = False, max_step: float = 1.0,
                   min_step: float = 1e-4) -> sitk.Transform:
    """The Colin27 head registered onto ``fixed`` (Mattes mutual information, moments initialised).

    ``transform`` picks the model: affine for label transfer, scale-versor (rotation + per-axis scale)
    where the rotation itself is measured (scripts/slice_pitch.py).
    """
    fixed, moving = sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(colin, sitk.sitkFloat32)
    init = sitk.CenteredTransformInitializer(fixed, moving, transform,
                                             sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.05, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(max_step, min_step, 200, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel(list(smoothing))
    if smoothing_in_mm:
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)
    found = reg.Execute(fixed, moving)
    return found.GetNthTransform(0) if isinstance(found, sitk.CompositeTransform) else found


def register_atlas(flair_img: nib.Nifti1Image, colin: sitk.Image, atlas: sitk.Image) -> np.ndarray:
    """Atlas labels on the FLAIR's grid (array in nibabel's axis order) via an affine Colin27 -> FLAIR."""
    fixed = sitk.Cast(sitk.ReadImage(flair_img.get_filename()), sitk.sitkFloat32)
    transform = register_colin(fixed, colin, sitk.AffineTransform(3))
    labels = sitk.Resample(atlas, fixed, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return np.transpose(sitk.GetArrayFromImage(labels), (2, 1, 0))


def real_clinical(data: Path, research_3d: bool = False) -> list[tuple[str, dict]]:
    """One study per patient of the unlabeled clinical 2D FLAIRs, or the research 3D FLAIR."""
    colin = sitk.ReadImage(str(data / "templates" / "ch2.nii.gz"))
    atlas = sitk.ReadImage(str(ATLAS))
    names = load_atlas().names
    rows, seen = [], set()
    paths = ([data / "unlabeled" / "flair_3d_1mm.nii.gz"] if research_3d
             else sorted((data / "open_ms" / "unlabeled_clinical").glob("*_FLAIR.nii.gz")))
    for path in paths:
        patient = path.name.split("_")[0]
        if patient in seen:
            continue
        seen.add(patient)
        img = nib.load(str(path))
        labels = register_atlas(img, colin, atlas)
        r = class_ratios(img.get_fdata(dtype=np.float32), labels, img.header.get_zooms()[:3], names)
        if r:
            rows.append((path.name.replace("_FLAIR.nii.gz", "").replace(".nii.gz", ""), r))
    return rows


def real_mni(data: Path, contrast: str = "flair") -> list[tuple[str, dict]]:
    atlas = load_atlas()
    rows = []
    for case in datasets.open_ms_labeled(data / "open_ms"):
        img = nib.load(str(case.flair))
        m = np.linalg.solve(atlas.affine, img.affine)
        labels = ndi.affine_transform(atlas.labels, m[:3, :3], m[:3, 3], output_shape=img.shape, order=0)
        lesion = np.asarray(nib.load(str(case.wmh)).dataobj) > 0
        flair = img.get_fdata(dtype=np.float32)
        labels[ndi.binary_dilation(lesion, iterations=3) | (flair <= 0)] = 0  # not lesions, not outside the brain
        image = flair if contrast == "flair" else nib.load(str(case.t1)).get_fdata(dtype=np.float32)
        r = class_ratios(image, labels, img.header.get_zooms()[:3], atlas.names)
        if r:
            rows.append((case.case_id, r))
    return rows


def synthetic(n: int, seed: int, profile: str, contrast: str = "flair") -> list[tuple[str, dict]]:
    names = load_atlas().names
    rows = []
    for i in range(n):
        s = synth.generate_sample(seed, profile, skull=True, index=i)
        if s.meta["random_contrast"]:
            continue
        labels = s.tissue.copy()
        labels[ndi.binary_dilation(s.wmh > 0, iterations=2)] = 0
        r = class_ratios(s.flair if contrast == "flair" else s.t1, labels, np.linalg.norm(s.affine[:3, :3], axis=0), names)
        if r:
            rows.append((f"index {i}", r))
    return rows


def print_rows(title: str, rows) -> None:
    print(f"\n{title}")
    print(f"{'case':<24}" + "".join(f"{k:>10}" for k in CLASSES))
    for name, r in rows:
        print(f"{name:<24}" + "".join(f"{r[k]:10.2f}" for k in CLASSES))
    if rows:
        print(f"{'median':<24}" + "".join(f"{np.nanmedian([r[k] for _, r in rows]):10.2f}" for k in CLASSES))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-synth", type=int, default=10)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--profile", default="clinical2d", choices=("clinical2d", "research3d"))
    ap.add_argument("--synthetic-only", action="store_true")
    ap.add_argument("--contrast", default="flair", choices=("flair", "t1"))
    args = ap.parse_args()
    name = {"flair": "FLAIR", "t1": "T1"}[args.contrast]
    print(f"median {name} / deep white matter, classes eroded {ERODE_MM:g} mm in-plane, slab through the ventricles")
    if not args.synthetic_only:
        if args.contrast == "flair":
            print_rows("real clinical 2D (Colin27 registered, affine)", real_clinical(args.data))
            print_rows("real 3D FLAIR 1 mm (Colin27 registered, affine)", real_clinical(args.data, research_3d=True))
        print_rows("real labeled (MNI, atlas as is)", real_mni(args.data, args.contrast))
    print_rows(f"synthetic {args.profile} (seed {args.seed})",
               synthetic(args.n_synth, args.seed, args.profile, args.contrast))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
