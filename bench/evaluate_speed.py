"""Seconds to score one case with the challenge metrics at two clinical geometries (target < 1 s).

Prints, per geometry, the metric computation alone and the whole `evaluate_files` call (reading two
.nii.gz files included). Lesions: smooth random blobs, ~20 ml, the prediction a perturbed copy.
Run: .venv/bin/python bench/evaluate_speed.py
"""

import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import os
from scipy import ndimage

from wmhkit.evaluation import evaluate_files
from wmhkit.metrics import score

GEOMETRIES = {
    "512x512x16 (0.45x0.45x5 mm)": ((512, 512, 16), (0.45, 0.45, 5.0)),
    "256x256x48 (0.9x0.9x3 mm)": ((256, 256, 48), (0.9, 0.9, 3.0)),
}
LESION_ML = 20.0
REPEATS = 5


def lesion_pair(shape, spacing, seed=0):
    rng = np.random.default_rng(seed)
    voxel_ml = float(np.prod(spacing)) / 1000
    sigma = [4.0 / s for s in spacing]  # ~4 mm blobs whatever the grid
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    ref = field > np.quantile(field, 1 - LESION_ML / voxel_ml / field.size)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    pred = (field + 0.3 * noise * field.std() / noise.std()) > np.quantile(field, 1 - LESION_ML / voxel_ml / field.size)
    return ref.astype(np.uint8), pred.astype(np.uint8)


def best_of(fn, repeats=REPEATS):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def main():
    print(f"cpus: {os.cpu_count()}; repeats {REPEATS} (best / median seconds)")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (shape, spacing) in GEOMETRIES.items():
            ref, pred = lesion_pair(shape, spacing)
            affine = np.diag([*spacing, 1.0])
            r, p = Path(tmp) / "ref.nii.gz", Path(tmp) / "pred.nii.gz"
            nib.save(nib.Nifti1Image(ref, affine), r)
            nib.save(nib.Nifti1Image(pred, affine), p)
            s = score(ref, pred, affine)
            metrics_best, metrics_median = best_of(lambda: score(ref, pred, affine))
            files_best, files_median = best_of(lambda: evaluate_files(r, p))
            print(
                f"{name}: metrics {metrics_best:.3f} / {metrics_median:.3f} s, "
                f"with file reading {files_best:.3f} / {files_median:.3f} s  "
                f"[ref {s.ref_ml:.1f} ml, {s.ref_lesions} lesions, dsc {s.dsc:.3f}, h95 {s.h95:.2f} mm]"
            )


if __name__ == "__main__":
    main()
