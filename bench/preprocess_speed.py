"""Seconds per preprocessing stage on a 512x512x16 and a 256x256x48 FLAIR, and N4's speed/benefit trade.

The two FLAIRs are a real clinical FLAIR of the open MS data (patient12 study2, 320x320x48,
0.72x0.72x3 mm) resampled to the two clinical geometries; the T1 of the same session is registered to
each. The N4 table applies a known smooth bias (±30 %) to an N4-corrected real FLAIR and reports how
much of it each setting removes (white-matter coefficient of variation before/after).
Run: .venv/bin/python bench/preprocess_speed.py   (needs ../shared/data beside the checkout)
"""

import time
from pathlib import Path

import numpy as np

from wmhkit.io import load_image, load_labels
from wmhkit.preprocess import (
    area_tophat,
    from_canonical,
    n4_bias_correct,
    percentile_scale,
    register_rigid,
    resample,
    to_canonical,
    working_grid,
    zscore,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_ms"
CLINICAL = DATA / "unlabeled_clinical" / "patient12_study2"
GEOMETRIES = {"512x512x16": ((512, 512, 16), (0.45, 0.45, 6.0)), "256x256x48": ((256, 256, 48), (0.9, 0.9, 3.0))}
N4_SETTINGS = {
    "fit at 4 mm, 50/40/30 it": dict(fit_spacing_mm=4, iterations=(50, 40, 30)),
    "fit at 8 mm, 50/40/30 it": dict(fit_spacing_mm=8, iterations=(50, 40, 30)),
    "fit at 8 mm, 20/10 it": dict(fit_spacing_mm=8, iterations=(20, 10)),
}


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def clinical_flair(shape, spacing):
    """The real FLAIR resampled onto a grid of ``shape``/``spacing`` centred on its field of view."""
    flair = load_image(f"{CLINICAL}_FLAIR.nii.gz")
    centre = flair.affine @ [*(np.asarray(flair.shape) - 1) / 2, 1]
    affine = flair.affine.copy()
    affine[:3, :3] = flair.affine[:3, :3] / flair.spacing * spacing
    affine[:3, 3] = centre[:3] - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return resample(flair.data, flair.affine, shape, affine), affine


def stage_times(name, shape, spacing):
    flair, affine = clinical_flair(shape, spacing)
    t1 = load_image(f"{CLINICAL}_T1W.nii.gz")
    head = flair > np.percentile(flair, 50)
    rows = []
    (canonical, c_affine, how), t = timed(to_canonical, flair, affine)
    rows.append(("reorient to RAS", t))
    work_shape, work_affine = working_grid(canonical.shape, c_affine, (1.0, 1.0, spacing[2]))
    work, t = timed(resample, canonical, c_affine, work_shape, work_affine)
    rows.append((f"resample to {work_shape} (1 mm in-plane)", t))
    back, t = timed(resample, work > np.percentile(work, 90), work_affine, canonical.shape, c_affine,
                    kind="label")
    rows.append(("resample a mask back to native", t))
    _, t = timed(from_canonical, back, how)
    rows.append(("orientation back to native", t))
    for label, setting in N4_SETTINGS.items():
        _, t = timed(n4_bias_correct, flair, affine, head, **setting)
        rows.append((f"N4 {label}", t))
    result, t = timed(register_rigid, t1.data, t1.affine, flair, affine)
    rows.append((f"T1->FLAIR rigid (MI {-result.metric:.3f})", t))
    _, t = timed(zscore, flair, head)
    rows.append(("z-score in mask", t))
    _, t = timed(percentile_scale, flair, head)
    rows.append(("percentile scaling in mask", t))
    _, t = timed(area_tophat, flair, 25)
    rows.append(("area top-hat (25 px, per slice)", t))
    print(f"\n{name} ({'x'.join(f'{s:g}' for s in spacing)} mm)")
    for label, seconds in rows:
        print(f"  {label:<44s} {seconds:6.2f} s")


def n4_benefit():
    case = DATA / "labeled_mni" / "patient26"
    flair = load_image(case / "FLAIR.nii.gz")
    brain = flair.data > 0
    wm = load_labels(case / "lesions.nii.gz").data == 0
    wm &= (flair.data > np.percentile(flair.data[brain], 30)) & (flair.data < np.percentile(flair.data[brain], 70))
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in flair.shape], indexing="ij"))
    bias = np.exp(0.3 * (0.8 * grid[0] + 0.5 * grid[1] ** 2 - 0.6 * grid[2])).astype(np.float32)
    biased = flair.data * bias
    cv = lambda v: float(v[wm].std() / v[wm].mean())  # noqa: E731
    print("\nN4 benefit (real N4-corrected FLAIR x known bias; WM intensity CV, lower is better)")
    print(f"  {'no bias (original)':<28s} CV {cv(flair.data):.3f}")
    print(f"  {'biased, uncorrected':<28s} CV {cv(biased):.3f}")
    for label, setting in N4_SETTINGS.items():
        (corrected, _), t = timed(n4_bias_correct, biased, flair.affine, brain, **setting)
        print(f"  {label:<28s} CV {cv(corrected):.3f}   {t:5.1f} s (182x218x182)")


def main():
    for name, (shape, spacing) in GEOMETRIES.items():
        stage_times(name, shape, spacing)
    n4_benefit()


if __name__ == "__main__":
    main()
